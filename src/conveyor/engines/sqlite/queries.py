"""The SQLite engine's schema and statements, by name.

Statuses are stored as small integers (see STATUS_CODES) so that the partial indexes that
every hot query uses stay small. Each index serves one question:
  ix_ready          the oldest queued tasks of a lane (take)
  ix_ready_group    the same per fairness group, and the groups of a lane (fair take)
  ix_scheduled      delayed and backing-off tasks by due time (sweep)
  ix_leases         running tasks by lease expiry (sweep)
  ix_deadlines      unfinished tasks with a deadline (sweep)
  ix_listing        a queue's tasks by state in put order (list_tasks); queued tasks are
                    listed through ix_ready instead, so that a put maintains one index fewer
  ix_finished       a queue's finished tasks by end time (retention)
  ix_callbacks      ended tasks whose callback is owed, by due time (the outbox)
  ix_records        a project's records of one kind in id order (list_records)
  ix_records_active the active records of one kind in id order (list_active)
  ix_batch_order    a batch's tasks in put order, its input order (finalization)
  ix_batch_counts   a batch's unfinished tasks (cancel), and filling batch_counts
  batch_counts      each batch's tasks by how they ended, kept with every change

Schema versions: 1 tasks, queues, events; 2 adds records (files, batches); 3 adds
tasks.result_code and the batch indexes. The schema is all CREATE IF NOT EXISTS, and
columns added later are in ADDED_COLUMNS, so opening an older file adds what it lacks.
"""

from __future__ import annotations

from conveyor.engines._rows import STATUS_CODES as STATUS_CODES
from conveyor.engines._rows import STATUSES as STATUSES

SCHEMA_VERSION = 3

# columns added to tables after schema 1: (table, column) -> declaration
ADDED_COLUMNS: dict[tuple[str, str], str] = {("tasks", "result_code"): "INTEGER"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    config BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS counts (
    queue TEXT NOT NULL,
    level INTEGER NOT NULL,
    status INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (queue, level, status)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    level INTEGER NOT NULL,
    status INTEGER NOT NULL,
    grp TEXT NOT NULL,
    run_at REAL NOT NULL,
    expires_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    backoff BLOB NOT NULL,
    lease_id TEXT,
    lease_expires_at REAL,
    lease_s REAL,
    worker_id TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    fingerprint TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    data BLOB NOT NULL,
    response_mode TEXT NOT NULL,
    callback_url TEXT,
    timeout_s REAL,
    custom_id TEXT,
    batch_id TEXT,
    metadata BLOB,
    result BLOB,
    error BLOB,
    callback_due_at REAL,
    callback_attempts INTEGER NOT NULL DEFAULT 0,
    result_code INTEGER
);

CREATE TABLE IF NOT EXISTS events (
    task_seq INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    event TEXT NOT NULL,
    data BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (task_seq, event_id)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS ix_ready ON tasks (queue, level, seq) WHERE status = 0;
CREATE INDEX IF NOT EXISTS ix_ready_group ON tasks (queue, level, grp, seq) WHERE status = 0;
CREATE INDEX IF NOT EXISTS ix_scheduled ON tasks (run_at) WHERE status = 1;
CREATE INDEX IF NOT EXISTS ix_leases ON tasks (lease_expires_at) WHERE status = 2;
CREATE INDEX IF NOT EXISTS ix_deadlines ON tasks (expires_at)
    WHERE expires_at IS NOT NULL AND status IN (0, 1, 2);
CREATE INDEX IF NOT EXISTS ix_listing ON tasks (queue, status, seq) WHERE status >= 1;
CREATE INDEX IF NOT EXISTS ix_callbacks ON tasks (callback_due_at)
    WHERE callback_due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_finished ON tasks (queue, completed_at) WHERE status >= 3;
CREATE TABLE IF NOT EXISTS batch_counts (
    batch_id TEXT PRIMARY KEY,
    total INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    not_run INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS ix_batch_order ON tasks (batch_id, seq) WHERE batch_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_batch_counts ON tasks (batch_id, status, result_code)
    WHERE batch_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    project TEXT NOT NULL,
    created_at REAL NOT NULL,
    body BLOB NOT NULL,
    active INTEGER NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS ix_records ON records (kind, project, id);
CREATE INDEX IF NOT EXISTS ix_records_active ON records (kind, id) WHERE active = 1;
"""

# What deciding a verb needs (see rows.RowState), and what a batch's counts need.
STATE_COLUMNS = (
    "seq, task_id, queue, level, status, grp, run_at, expires_at, attempts, max_attempts,"
    " backoff, lease_id, lease_expires_at, lease_s, worker_id, cancel_requested, batch_id,"
    " result_code"
)
# Columns read back into a Task, in this order (see rows.py): STATE_COLUMNS lead.
TASK_COLUMNS = (
    f"{STATE_COLUMNS}, created_at, started_at, completed_at, endpoint, data, response_mode,"
    " callback_url, timeout_s, custom_id, metadata, result, error"
)

# ---- queues ----
SELECT_QUEUE = "SELECT config FROM queues WHERE name = ?"
SELECT_QUEUES = "SELECT config FROM queues ORDER BY name"
UPSERT_QUEUE = "INSERT INTO queues (name, config) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET config = excluded.config"
DELETE_QUEUE = "DELETE FROM queues WHERE name = ?"
SELECT_COUNTS = "SELECT queue, level, status, n FROM counts"
SELECT_QUEUE_COUNTS = "SELECT level, status, n FROM counts WHERE queue = ? AND n != 0"
UPSERT_COUNT = """
INSERT INTO counts (queue, level, status, n) VALUES (?, ?, ?, ?)
ON CONFLICT (queue, level, status) DO UPDATE SET n = n + excluded.n
"""
DELETE_ZERO_COUNTS = "DELETE FROM counts WHERE n = 0"
DELETE_QUEUE_COUNTS = "DELETE FROM counts WHERE queue = ?"
DELETE_QUEUE_TASKS = "DELETE FROM tasks WHERE queue = ?"
DELETE_QUEUE_EVENTS = "DELETE FROM events WHERE task_seq IN (SELECT seq FROM tasks WHERE queue = ?)"

# ---- events ----
LAST_EVENT_ID = "SELECT coalesce(max(event_id), 0) FROM events WHERE task_seq = ?"
INSERT_EVENT = (
    "INSERT INTO events (task_seq, event_id, event, data, created_at) VALUES (?, ?, ?, ?, ?)"
)
SELECT_SEQ = "SELECT seq FROM tasks WHERE task_id = ?"
LIST_EVENTS = (
    "SELECT event_id, event, data, created_at FROM events"
    " WHERE task_seq = ? AND event_id > ? ORDER BY event_id LIMIT ?"
)
DELETE_EVENTS = "DELETE FROM events WHERE task_seq = ?"

# ---- put ----
INSERT_TASK = """
INSERT INTO tasks (
    task_id, queue, level, status, grp, run_at, expires_at, max_attempts, backoff,
    created_at, fingerprint, endpoint, data, response_mode, callback_url, timeout_s,
    custom_id, batch_id, metadata
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (task_id) DO NOTHING
"""
MAX_SEQ = "SELECT coalesce(max(seq), 0) FROM tasks"

# ---- take (LaneSource) ----
OLDEST = "SELECT seq, task_id, grp FROM tasks WHERE status = 0 AND queue = ? AND level = ? ORDER BY seq LIMIT ?"
OLDEST_IN_GROUP = (
    "SELECT seq, task_id, grp FROM tasks"
    " WHERE status = 0 AND queue = ? AND level = ? AND grp = ? ORDER BY seq LIMIT ?"
)
# INDEXED BY where the planner, without statistics, would pick a scan (tests pin the plans)
ANY_RUNNING = "SELECT 1 FROM tasks INDEXED BY ix_listing WHERE queue = ? AND status = 2 AND status >= 1 LIMIT 1"
FIRST_GROUP = "SELECT min(grp) FROM tasks WHERE status = 0 AND queue = ? AND level = ?"
NEXT_GROUP = "SELECT min(grp) FROM tasks WHERE status = 0 AND queue = ? AND level = ? AND grp > ?"

# The lease id is minted by SQLite per row: 128 random bits, a fencing token.
CLAIM = f"""
UPDATE tasks SET status = 2, attempts = attempts + 1, started_at = ?,
    lease_id = lower(hex(randomblob(16))), worker_id = ?, lease_expires_at = ?, lease_s = ?
WHERE status = 0 AND seq IN ({{marks}})
RETURNING {TASK_COLUMNS}
"""

# ---- settle ----
SELECT_TASK = f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = ?"
SELECT_STATE = f"SELECT {STATE_COLUMNS} FROM tasks WHERE task_id = ?"
SELECT_STATES = f"SELECT {STATE_COLUMNS} FROM tasks WHERE task_id IN ({{marks}})"
# the callback falls due when a task with a callback URL ends (the outbox)
_SETTLE = """
UPDATE tasks SET status = ?, run_at = coalesce(?, run_at), completed_at = ?,
    result = coalesce(?, result), error = coalesce(?, error),
    result_code = coalesce(?, result_code),
    lease_id = NULL, lease_expires_at = NULL, lease_s = NULL,
    callback_due_at = CASE WHEN callback_url IS NULL THEN NULL ELSE ? END,
    callback_attempts = 0
WHERE seq = ?
"""
SETTLE_QUIET = _SETTLE
SETTLE = f"{_SETTLE}RETURNING {TASK_COLUMNS}"
EXTEND_LEASE = "UPDATE tasks SET lease_expires_at = ? WHERE seq = ?"
MARK_CANCEL = f"UPDATE tasks SET cancel_requested = 1 WHERE seq = ? RETURNING {TASK_COLUMNS}"
RESET_FOR_REQUEUE = "UPDATE tasks SET attempts = 0, error = NULL WHERE seq = ?"

# ---- batches ----
# counted from the tasks: only to fill batch_counts for a file written before it existed
COUNT_BATCH_TASKS = """
SELECT batch_id, status, result_code, count(*) FROM tasks INDEXED BY ix_batch_counts
WHERE batch_id IS NOT NULL GROUP BY batch_id, status, result_code
"""
SELECT_BATCH_COUNTS = (
    "SELECT total, completed, failed, not_run FROM batch_counts WHERE batch_id = ?"
)
ADD_BATCH_COUNTS = """
INSERT INTO batch_counts (batch_id, total, completed, failed, not_run) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (batch_id) DO UPDATE SET total = total + excluded.total,
    completed = completed + excluded.completed, failed = failed + excluded.failed,
    not_run = not_run + excluded.not_run
"""
DELETE_QUEUE_BATCH_COUNTS = """
DELETE FROM batch_counts WHERE batch_id IN (
    SELECT DISTINCT batch_id FROM tasks WHERE queue = ? AND batch_id IS NOT NULL
)
"""
BATCH_PAGE = f"""
SELECT {TASK_COLUMNS} FROM tasks INDEXED BY ix_batch_order
WHERE batch_id = ? AND seq > ? ORDER BY seq LIMIT ?
"""
# what a batch cancel acts on: tasks waiting to run, and running ones not yet asked to stop
BATCH_TO_CANCEL = f"""
SELECT {STATE_COLUMNS} FROM tasks INDEXED BY ix_batch_counts
WHERE batch_id = ? AND (status IN (0, 1) OR (status = 2 AND cancel_requested = 0)) LIMIT ?
"""

# ---- callbacks ----
CLAIM_CALLBACKS = f"""
UPDATE tasks SET callback_due_at = ?, callback_attempts = callback_attempts + 1
WHERE seq IN (
    SELECT seq FROM tasks WHERE callback_due_at IS NOT NULL AND callback_due_at <= ?
    ORDER BY callback_due_at LIMIT ?
)
RETURNING callback_attempts, {TASK_COLUMNS}
"""
SETTLE_CALLBACK = (
    "UPDATE tasks SET callback_due_at = ? WHERE task_id = ? AND callback_due_at IS NOT NULL"
)
NEXT_CALLBACK = "SELECT min(callback_due_at) FROM tasks WHERE callback_due_at IS NOT NULL"

# ---- sweep ----
PROMOTE = """
UPDATE tasks SET status = 0 WHERE seq IN (
    SELECT seq FROM tasks WHERE status = 1 AND run_at <= ? ORDER BY run_at LIMIT ?
)
RETURNING queue, level
"""
PAST_DEADLINE = (
    f"SELECT {TASK_COLUMNS} FROM tasks"
    " WHERE expires_at IS NOT NULL AND status IN (0, 1, 2) AND expires_at <= ?"
    " ORDER BY expires_at LIMIT ?"
)
EXPIRED_LEASES = (
    f"SELECT {TASK_COLUMNS} FROM tasks"
    " WHERE status = 2 AND lease_expires_at <= ? ORDER BY lease_expires_at LIMIT ?"
)
PURGE = """
DELETE FROM tasks WHERE seq IN (
    SELECT seq FROM tasks WHERE queue = ? AND status >= 3 AND completed_at <= ?
        AND (batch_id IS NULL OR batch_id NOT IN (
            SELECT id FROM records WHERE kind = 'batch' AND active = 1))
    ORDER BY completed_at LIMIT ?
)
RETURNING seq, level, status, batch_id, result_code
"""
NEXT_RUN_AT = "SELECT min(run_at) FROM tasks WHERE status = 1"
NEXT_LEASE_EXPIRY = "SELECT min(lease_expires_at) FROM tasks WHERE status = 2"
NEXT_DEADLINE = (
    "SELECT min(expires_at) FROM tasks WHERE expires_at IS NOT NULL AND status IN (0, 1, 2)"
)

# ---- reads ----
OLDEST_RUN_AT = (
    "SELECT run_at FROM tasks WHERE status = 0 AND queue = ? AND level = ? ORDER BY seq LIMIT 1"
)
LIST_QUEUED = (
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE status = 0 AND queue = ? AND level = ? AND seq > ?"
    " ORDER BY seq LIMIT ?"
)
LIST_BY_STATUS = (  # not for queued: see LIST_QUEUED
    f"SELECT {TASK_COLUMNS} FROM tasks INDEXED BY ix_listing"
    " WHERE queue = ? AND status = ? AND status >= 1 AND seq > ?"
    " ORDER BY seq LIMIT ?"
)

# ---- records (files, batches) ----
RECORD_COLUMNS = "kind, id, project, created_at, body, active, version"
INSERT_RECORD = (
    "INSERT INTO records (kind, id, project, created_at, body, active, version)"
    " VALUES (?, ?, ?, ?, ?, ?, 1) ON CONFLICT (kind, id) DO NOTHING"
)
SELECT_RECORD = f"SELECT {RECORD_COLUMNS} FROM records WHERE kind = ? AND id = ?"
SELECT_RECORD_VERSION = "SELECT version FROM records WHERE kind = ? AND id = ?"
LIST_RECORDS_ASC = (
    f"SELECT {RECORD_COLUMNS} FROM records INDEXED BY ix_records"
    " WHERE kind = ? AND project = ? AND id > ? ORDER BY id LIMIT ?"
)
LIST_RECORDS_DESC = (
    f"SELECT {RECORD_COLUMNS} FROM records INDEXED BY ix_records"
    " WHERE kind = ? AND project = ? AND id < ? ORDER BY id DESC LIMIT ?"
)
LIST_RECORDS_NEWEST = (  # the first page of a newest-first listing: no upper bound
    f"SELECT {RECORD_COLUMNS} FROM records INDEXED BY ix_records"
    " WHERE kind = ? AND project = ? ORDER BY id DESC LIMIT ?"
)
REPLACE_RECORD = (
    "UPDATE records SET body = ?, active = ?, version = version + 1"
    f" WHERE kind = ? AND id = ? AND version = ? RETURNING {RECORD_COLUMNS}"
)
DELETE_RECORD = "DELETE FROM records WHERE kind = ? AND id = ?"
LIST_ACTIVE = (
    f"SELECT {RECORD_COLUMNS} FROM records INDEXED BY ix_records_active"
    " WHERE kind = ? AND active = 1 AND id > ? ORDER BY id LIMIT ?"
)
