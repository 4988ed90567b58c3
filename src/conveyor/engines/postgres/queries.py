"""The PostgreSQL engine's statements, by name (the tables they read: schema.py).

asyncpg prepares every statement, and PostgreSQL may keep a plan made without the
parameters' values: tests/engines/test_postgres_plans.py checks both kinds of plan. The
listings (LIST_*, BATCH_PAGE), whose best plan depends on the queue or batch named, are
prepared afresh at each call instead (store.fetch_planned).
"""

from __future__ import annotations

from conveyor.engines._rows import STATUS_CODES as STATUS_CODES
from conveyor.engines._rows import STATUSES as STATUSES
from conveyor.engines.postgres.schema import SLOTS as SLOTS

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
SELECT_QUEUE = "SELECT config FROM queues WHERE name = $1"
SELECT_QUEUE_FOR_UPDATE = "SELECT config FROM queues WHERE name = $1 FOR UPDATE"
SELECT_QUEUES = "SELECT config FROM queues ORDER BY name"
INSERT_QUEUE = """
INSERT INTO queues (name, config, paused, retention_s) VALUES ($1, $2, $3, $4)
ON CONFLICT (name) DO NOTHING RETURNING name
"""
UPDATE_QUEUE = "UPDATE queues SET config = $2, paused = $3, retention_s = $4 WHERE name = $1"
DELETE_QUEUE = "DELETE FROM queues WHERE name = $1"
SELECT_QUEUE_COUNTS = """
SELECT level, status, sum(n)::bigint FROM counts WHERE queue = $1
GROUP BY level, status HAVING sum(n) <> 0
"""
# the age of each listed level's oldest queued task
OLDEST_RUN_AT = """
SELECT l.level, t.run_at FROM unnest($2::integer[]) AS l(level)
CROSS JOIN LATERAL (
    SELECT run_at FROM tasks WHERE status = 0 AND queue = $1 AND level = l.level
    ORDER BY seq LIMIT 1
) t
"""
DELETE_QUEUE_COUNTS = "DELETE FROM counts WHERE queue = $1"
DELETE_QUEUE_EVENTS = (
    "DELETE FROM events WHERE task_seq IN (SELECT seq FROM tasks WHERE queue = $1)"
)
DELETE_QUEUE_TASKS = "DELETE FROM tasks WHERE queue = $1"
ANY_RUNNING = "SELECT EXISTS (SELECT 1 FROM tasks WHERE queue = $1 AND status = 2)"
# The counts of one transaction, as one statement in key order (so two transactions that
# touch the same rows lock them in the same order), run with the COMMIT (see tx.py).
UPSERT_COUNTS = """
INSERT INTO counts (queue, level, status, slot, n) VALUES {values}
ON CONFLICT (queue, level, status, slot) DO UPDATE SET n = counts.n + excluded.n
"""
UPSERT_BATCH_COUNTS = """
INSERT INTO batch_counts (batch_id, slot, total, completed, failed, not_run) VALUES {values}
ON CONFLICT (batch_id, slot) DO UPDATE SET total = batch_counts.total + excluded.total,
    completed = batch_counts.completed + excluded.completed,
    failed = batch_counts.failed + excluded.failed,
    not_run = batch_counts.not_run + excluded.not_run
"""
DELETE_QUEUE_BATCH_COUNTS = """
DELETE FROM batch_counts WHERE batch_id IN (
    SELECT DISTINCT batch_id FROM tasks WHERE queue = $1 AND batch_id IS NOT NULL
)
"""

# ---- events ----
LAST_EVENT_ID = "SELECT coalesce(max(event_id), 0) FROM events WHERE task_seq = $1"
INSERT_EVENTS = """
INSERT INTO events (task_seq, event_id, event, data, created_at)
SELECT $1, $2 + n, e.event, e.data, $3
FROM unnest($4::text[], $5::bytea[]) WITH ORDINALITY AS e(event, data, n)
"""
# the task's seq (none: no such task) with its events above $2, if any
LIST_EVENTS = """
SELECT t.seq, e.event_id, e.event, e.data, e.created_at FROM tasks t
LEFT JOIN LATERAL (
    SELECT event_id, event, data, created_at FROM events
    WHERE task_seq = t.seq AND event_id > $2 ORDER BY event_id LIMIT $3
) e ON true
WHERE t.task_id = $1
ORDER BY e.event_id
"""
DELETE_EVENTS = "DELETE FROM events WHERE task_seq = ANY($1::bigint[])"

# ---- put ----
# One statement: lock the tasks' queues (an obliterate, which locks a queue FOR UPDATE,
# waits for the put or the put finds the queue gone) and insert; the queues found and the
# ids inserted come back as two arrays.
INSERT_TASKS = """
WITH locked AS (
    SELECT name FROM queues WHERE name = ANY($20::text[]) ORDER BY name FOR KEY SHARE
), inserted AS (
    INSERT INTO tasks (
        task_id, queue, level, status, grp, run_at, expires_at, max_attempts, backoff,
        created_at, fingerprint, endpoint, data, response_mode, callback_url, timeout_s,
        custom_id, batch_id, metadata
    )
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::integer[], $4::integer[], $5::text[], $6::float8[],
        $7::float8[], $8::integer[], $9::bytea[], $10::float8[], $11::text[], $12::text[],
        $13::bytea[], $14::text[], $15::text[], $16::float8[], $17::text[], $18::text[],
        $19::bytea[]
    )
    ON CONFLICT (task_id) DO NOTHING
    RETURNING task_id
)
SELECT ARRAY(SELECT name FROM locked), ARRAY(SELECT task_id FROM inserted)
"""
SELECT_FINGERPRINTS = "SELECT task_id, fingerprint FROM tasks WHERE task_id = ANY($1::text[])"

# ---- take (LaneSource) ----
# Up to $5 queued tasks of each source (a queue's lanes $4[lo:hi], most urgent first),
# oldest first within a lane, locked; tasks another taker holds are skipped. A paused or
# unknown queue gives nothing. The LIMIT stops at $5 per source, so a source whose first
# lane has enough locks no more.
OLDEST_BY_SOURCE = """
SELECT s.i, c.level, c.seq, c.task_id, c.grp
FROM unnest($1::text[], $2::integer[], $3::integer[]) WITH ORDINALITY AS s(queue, lo, hi, i)
CROSS JOIN LATERAL (
    SELECT l.level, t.seq, t.task_id, t.grp
    FROM unnest(($4::integer[])[s.lo:s.hi]) AS l(level)
    CROSS JOIN LATERAL (
        SELECT seq, task_id, grp FROM tasks
        WHERE status = 0 AND queue = s.queue AND level = l.level
        ORDER BY seq LIMIT $5
        FOR UPDATE SKIP LOCKED
    ) t
    LIMIT $5
) c
WHERE EXISTS (SELECT 1 FROM queues WHERE name = s.queue AND NOT paused)
"""
# Up to $4 queued tasks of each (lane, group), oldest first, locked; skips held ones.
OLDEST_BY_GROUP = """
SELECT g.i, t.seq, t.task_id
FROM unnest($1::text[], $2::integer[], $3::text[]) WITH ORDINALITY AS g(queue, level, grp, i)
CROSS JOIN LATERAL (
    SELECT seq, task_id FROM tasks
    WHERE status = 0 AND queue = g.queue AND level = g.level AND grp = g.grp
    ORDER BY seq LIMIT $4
    FOR UPDATE SKIP LOCKED
) t
"""
# The lanes with queued tasks among those given, of queues that are not paused.
LANES_WITH_WORK = """
SELECT l.i FROM unnest($1::text[], $2::integer[]) WITH ORDINALITY AS l(queue, level, i)
WHERE EXISTS (SELECT 1 FROM queues WHERE name = l.queue AND NOT paused)
  AND EXISTS (SELECT 1 FROM tasks WHERE status = 0 AND queue = l.queue AND level = l.level)
"""
# For each (lane, lower bound): up to $4 groups with queued tasks from the bound up, in
# order, walking the index one group at a time (a group's tasks are never scanned).
# "grp > x" is written as "grp >= x || chr(1)" by the caller, as no text holds chr(0).
GROUPS_FROM = """
SELECT l.i, w.grp
FROM unnest($1::text[], $2::integer[], $3::text[]) WITH ORDINALITY AS l(queue, level, lower, i)
CROSS JOIN LATERAL (
    WITH RECURSIVE walk(grp, n) AS (
        (SELECT grp, 1 FROM tasks
         WHERE status = 0 AND queue = l.queue AND level = l.level AND grp >= l.lower
         ORDER BY grp LIMIT 1)
        UNION ALL
        SELECT nxt.grp, walk.n + 1 FROM walk
        CROSS JOIN LATERAL (
            SELECT grp FROM tasks
            WHERE status = 0 AND queue = l.queue AND level = l.level AND grp > walk.grp
            ORDER BY grp LIMIT 1
        ) nxt
        WHERE walk.n < $4
    )
    SELECT grp, n FROM walk
) w
ORDER BY l.i, w.n
"""
# sequential takes: one taker at a time per queue, across every server
LOCK_QUEUES_FOR_SEQUENTIAL = (
    "SELECT name FROM queues WHERE name = ANY($1::text[]) ORDER BY name FOR NO KEY UPDATE"
)
QUEUES_RUNNING = """
SELECT q.name FROM unnest($1::text[]) AS q(name)
WHERE EXISTS (SELECT 1 FROM tasks WHERE queue = q.name AND status = 2)
"""
# The lease id is minted by PostgreSQL per row: 122 random bits, a fencing token. The rows
# are queued and locked by this transaction (OLDEST_*), so no status test: with one, a
# generic plan would read a ready index from end to end looking for the seqs.
CLAIM = f"""
UPDATE tasks SET status = 2, attempts = attempts + 1, started_at = $1,
    lease_id = replace(gen_random_uuid()::text, '-', ''), worker_id = $2,
    lease_expires_at = $3, lease_s = $4
WHERE seq = ANY($5::bigint[])
RETURNING {TASK_COLUMNS}
"""

# ---- settle ----
SELECT_TASK = f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = $1"
SELECT_STATE = f"SELECT {STATE_COLUMNS} FROM tasks WHERE task_id = $1 FOR UPDATE"
# rows locked in seq order, the order every multi-row writer that waits uses
SELECT_STATES = (
    f"SELECT {STATE_COLUMNS} FROM tasks WHERE task_id = ANY($1::text[]) ORDER BY seq FOR UPDATE"
)
# the callback falls due when a task with a callback URL ends (the outbox)
SETTLE = f"""
UPDATE tasks SET status = $2, run_at = coalesce($3, run_at), completed_at = $4,
    result = coalesce($5, result), error = coalesce($6, error),
    result_code = coalesce($7, result_code),
    lease_id = NULL, lease_expires_at = NULL, lease_s = NULL,
    callback_due_at = CASE WHEN callback_url IS NULL THEN NULL ELSE $8::float8 END,
    callback_attempts = 0
WHERE seq = $1
RETURNING {TASK_COLUMNS}
"""
SETTLE_MANY = """
UPDATE tasks t SET status = u.status, run_at = coalesce(u.run_at, t.run_at),
    completed_at = u.completed_at,
    result = coalesce(u.result, t.result), error = coalesce(u.error, t.error),
    result_code = coalesce(u.result_code, t.result_code),
    lease_id = NULL, lease_expires_at = NULL, lease_s = NULL,
    callback_due_at = CASE WHEN t.callback_url IS NULL THEN NULL ELSE u.callback_due END,
    callback_attempts = 0
FROM unnest(
    $1::bigint[], $2::integer[], $3::float8[], $4::float8[], $5::bytea[], $6::bytea[],
    $7::integer[], $8::float8[]
) AS u(seq, status, run_at, completed_at, result, error, result_code, callback_due)
WHERE t.seq = u.seq
"""
EXTEND_LEASE = "UPDATE tasks SET lease_expires_at = $2 WHERE seq = $1"
MARK_CANCEL = f"UPDATE tasks SET cancel_requested = true WHERE seq = $1 RETURNING {TASK_COLUMNS}"
MARK_CANCEL_MANY = "UPDATE tasks SET cancel_requested = true WHERE seq = ANY($1::bigint[])"
RESET_FOR_REQUEUE = "UPDATE tasks SET attempts = 0, error = NULL WHERE seq = $1"

# ---- batches ----
BATCH_COUNTS = """
SELECT coalesce(sum(total), 0)::bigint, coalesce(sum(completed), 0)::bigint,
    coalesce(sum(failed), 0)::bigint, coalesce(sum(not_run), 0)::bigint
FROM batch_counts WHERE batch_id = $1
"""
BATCH_PAGE = f"""
SELECT {TASK_COLUMNS} FROM tasks
WHERE batch_id = $1 AND batch_id IS NOT NULL AND seq > $2 ORDER BY seq LIMIT $3
"""
# what a batch cancel acts on: tasks waiting to run, and running ones not yet asked to
# stop; one held by another writer is left for the next call (cancels are repeated)
BATCH_TO_CANCEL = f"""
SELECT {STATE_COLUMNS} FROM tasks
WHERE batch_id = $1 AND batch_id IS NOT NULL AND status IN (0, 1, 2)
  AND (status <> 2 OR NOT cancel_requested)
LIMIT $2
FOR UPDATE SKIP LOCKED
"""

# ---- callbacks ----
CLAIM_CALLBACKS = f"""
UPDATE tasks SET callback_due_at = $1, callback_attempts = callback_attempts + 1
WHERE seq = ANY(ARRAY(
    SELECT seq FROM tasks WHERE callback_due_at IS NOT NULL AND callback_due_at <= $2
    ORDER BY callback_due_at LIMIT $3
    FOR UPDATE SKIP LOCKED
))
RETURNING callback_attempts, {TASK_COLUMNS}
"""
SETTLE_CALLBACK = (
    "UPDATE tasks SET callback_due_at = $1 WHERE task_id = $2 AND callback_due_at IS NOT NULL"
)

# ---- sweep: each step skips rows another writer holds (another server's sweep too) ----
# (rows chosen by a sub-select are addressed as seq = ANY(ARRAY(...)): with IN, the planner
# expecting up to $2 of them would rather hash them and read the whole table)
PROMOTE = """
UPDATE tasks SET status = 0 WHERE seq = ANY(ARRAY(
    SELECT seq FROM tasks WHERE status = 1 AND run_at <= $1 ORDER BY run_at LIMIT $2
    FOR UPDATE SKIP LOCKED
))
RETURNING queue, level
"""
PAST_DEADLINE = f"""
SELECT {STATE_COLUMNS} FROM tasks
WHERE expires_at IS NOT NULL AND status IN (0, 1, 2) AND expires_at <= $1
ORDER BY expires_at LIMIT $2
FOR UPDATE SKIP LOCKED
"""
EXPIRED_LEASES = f"""
SELECT {STATE_COLUMNS} FROM tasks
WHERE status = 2 AND lease_expires_at <= $1 ORDER BY lease_expires_at LIMIT $2
FOR UPDATE SKIP LOCKED
"""
# finished tasks past their queue's retention, oldest first, up to $2 per queue; a batch
# still running keeps its tasks (its output file is written from them)
PURGE = """
DELETE FROM tasks WHERE seq = ANY(ARRAY(
    SELECT p.seq FROM queues q
    CROSS JOIN LATERAL (
        SELECT seq FROM tasks
        WHERE queue = q.name AND status >= 3 AND completed_at <= $1 - q.retention_s
          AND (batch_id IS NULL OR NOT EXISTS (
              SELECT 1 FROM records r WHERE r.kind = 'batch' AND r.active AND r.id = batch_id))
        ORDER BY completed_at LIMIT $2
        FOR UPDATE SKIP LOCKED
    ) p
))
RETURNING seq, queue, level, status, batch_id, result_code
"""
NEXT_DUE = """
SELECT
    (SELECT min(run_at) FROM tasks WHERE status = 1),
    (SELECT min(lease_expires_at) FROM tasks WHERE status = 2),
    (SELECT min(expires_at) FROM tasks WHERE expires_at IS NOT NULL AND status IN (0, 1, 2))
"""

# ---- vacuum (vacuum.py) ----
DEAD_ROWS = """
SELECT relname, n_live_tup, n_dead_tup FROM pg_stat_user_tables
WHERE schemaname = $1 AND relname = ANY($2::text[])
"""
TRY_VACUUM_LOCK = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))"
VACUUM_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended($1, 0))"

# ---- listing ----
# a queue's queued tasks after $2 in put order, each level from its own index range
LIST_QUEUED = f"""
SELECT t.* FROM generate_series(0, $4) AS l(level)
CROSS JOIN LATERAL (
    SELECT {TASK_COLUMNS} FROM tasks
    WHERE status = 0 AND queue = $1 AND level = l.level AND seq > $2
    ORDER BY seq LIMIT $3
) t
ORDER BY t.seq LIMIT $3
"""
LIST_BY_STATUS = f"""
SELECT t.* FROM unnest($4::integer[]) AS s(status)
CROSS JOIN LATERAL (
    SELECT {TASK_COLUMNS} FROM tasks
    WHERE queue = $1 AND status = s.status AND status >= 1 AND seq > $2
    ORDER BY seq LIMIT $3
) t
ORDER BY t.seq LIMIT $3
"""

# ---- records (files, batches) ----
RECORD_COLUMNS = "kind, id, project, created_at, body, active, version"
INSERT_RECORD = f"""
INSERT INTO records (kind, id, project, created_at, body, active, version)
VALUES ($1, $2, $3, $4, $5, $6, 1) ON CONFLICT (kind, id) DO NOTHING
RETURNING {RECORD_COLUMNS}
"""
SELECT_RECORD = f"SELECT {RECORD_COLUMNS} FROM records WHERE kind = $1 AND id = $2"
SELECT_RECORD_VERSION = "SELECT version FROM records WHERE kind = $1 AND id = $2"
LIST_RECORDS_ASC = f"""
SELECT {RECORD_COLUMNS} FROM records
WHERE kind = $1 AND project = $2 AND id > $3 ORDER BY id LIMIT $4
"""
LIST_RECORDS_DESC = f"""
SELECT {RECORD_COLUMNS} FROM records
WHERE kind = $1 AND project = $2 AND id < $3 ORDER BY id DESC LIMIT $4
"""
LIST_RECORDS_NEWEST = f"""
SELECT {RECORD_COLUMNS} FROM records
WHERE kind = $1 AND project = $2 ORDER BY id DESC LIMIT $3
"""
REPLACE_RECORD = f"""
UPDATE records SET body = $1, active = $2, version = version + 1
WHERE kind = $3 AND id = $4 AND version = $5 RETURNING {RECORD_COLUMNS}
"""
DELETE_RECORD = "DELETE FROM records WHERE kind = $1 AND id = $2 RETURNING id"
LIST_ACTIVE = f"""
SELECT {RECORD_COLUMNS} FROM records
WHERE kind = $1 AND active AND id > $2 ORDER BY id LIMIT $3
"""

# ---- verbs in one statement (fast.py) ----
# Each runs alone in an implicit transaction: one round trip, its counts included. The
# counts of the rows a statement moved are upserted in key order after the tasks (as
# Tx.commit_sql does), and batch counts after those (the statement reads `counted` first).


def _counted(rows: str, old: str | None, slot: str) -> str:
    """A CTE body: the rows of `rows` (with queue, level, status) counted in their status
    and, unless `old` is None, no longer in status `old`, in counter slot `slot`."""
    moved = f"SELECT queue, level, status, 1 AS n FROM {rows}"
    if old is not None:
        moved += f" UNION ALL SELECT queue, level, {old}, -1 FROM {rows}"
    return f"""
    INSERT INTO counts (queue, level, status, slot, n)
    SELECT queue, level, status, {slot}, sum(n) FROM ({moved}) m
    GROUP BY queue, level, status HAVING sum(n) <> 0 ORDER BY queue, level, status
    ON CONFLICT (queue, level, status, slot) DO UPDATE SET n = counts.n + excluded.n
    RETURNING 1"""


_BATCH_COUNTED = """
    INSERT INTO batch_counts (batch_id, slot, total, completed, failed, not_run)
    SELECT batch_id, {slot}, {total}, count(*) FILTER (WHERE ended = 1),
        count(*) FILTER (WHERE ended = 2), count(*) FILTER (WHERE ended = 3)
    FROM {rows} CROSS JOIN (SELECT count(*) FROM counted) AS after_counts
    WHERE batch_id IS NOT NULL
    GROUP BY batch_id ORDER BY batch_id
    ON CONFLICT (batch_id, slot) DO UPDATE SET total = batch_counts.total + excluded.total,
        completed = batch_counts.completed + excluded.completed,
        failed = batch_counts.failed + excluded.failed,
        not_run = batch_counts.not_run + excluded.not_run"""

# A put of tasks whose ids are new: all inserted, or none when a queue is missing (the
# caller raises NotFound) or an id exists (a unique violation: the caller takes the
# general path, which sorts out repeats). $21: the counter slot.
PUT_NEW = f"""
WITH locked AS (
    SELECT name FROM queues WHERE name = ANY($20::text[]) ORDER BY name FOR KEY SHARE
), inserted AS (
    INSERT INTO tasks (
        task_id, queue, level, status, grp, run_at, expires_at, max_attempts, backoff,
        created_at, fingerprint, endpoint, data, response_mode, callback_url, timeout_s,
        custom_id, batch_id, metadata
    )
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::integer[], $4::integer[], $5::text[], $6::float8[],
        $7::float8[], $8::integer[], $9::bytea[], $10::float8[], $11::text[], $12::text[],
        $13::bytea[], $14::text[], $15::text[], $16::float8[], $17::text[], $18::text[],
        $19::bytea[]
    )
    WHERE (SELECT count(*) FROM locked) = cardinality($20::text[])
    RETURNING queue, level, status, batch_id, NULL::integer AS ended
), counted AS ({_counted("inserted", None, "$21")}
), batched AS ({_BATCH_COUNTED.format(slot="$21", total="count(*)", rows="inserted")})
SELECT ARRAY(SELECT name FROM locked)
"""

# A take whose strategy chooses in list order (strategies.in_list_order): up to $5 queued
# tasks of each source (its lanes $4[lo:hi], most urgent first), locked, skipping those
# other takers hold; of those the first $5 in list order are claimed. A paused or unknown
# queue gives nothing. $6-$9 as CLAIM's $1-$4; $10: the counter slot.
TAKE_IN_LIST_ORDER = f"""
WITH candidates AS (
    SELECT s.i, c.p, c.seq
    FROM unnest($1::text[], $2::integer[], $3::integer[]) WITH ORDINALITY AS s(queue, lo, hi, i)
    CROSS JOIN LATERAL (
        SELECT l.p, t.seq
        FROM unnest(($4::integer[])[s.lo:s.hi]) WITH ORDINALITY AS l(level, p)
        CROSS JOIN LATERAL (
            SELECT seq FROM tasks
            WHERE status = 0 AND queue = s.queue AND level = l.level
            ORDER BY seq LIMIT $5
            FOR UPDATE SKIP LOCKED
        ) t
        LIMIT $5
    ) c
    WHERE EXISTS (SELECT 1 FROM queues WHERE name = s.queue AND NOT paused)
), claimed AS (
    UPDATE tasks SET status = 2, attempts = attempts + 1, started_at = $6,
        lease_id = replace(gen_random_uuid()::text, '-', ''), worker_id = $7,
        lease_expires_at = $8, lease_s = $9
    WHERE seq = ANY(ARRAY(SELECT seq FROM candidates ORDER BY i, p, seq LIMIT $5))
    RETURNING {TASK_COLUMNS}
), counted AS ({_counted("claimed", "0", "$10")}
)
SELECT * FROM claimed
"""

# The task held by lease $2 and not asked to cancel, its lease unexpired at $3, moves as
# the domain decided for such a task ($4-$10 as SETTLE's $2-$8); no row: it is not so
# held, and the caller takes the general path. $11: the counter slot; $12: the batch
# counts column it ends in (see Tx.batch_moved), if it ends.
SETTLE_HELD = f"""
WITH settled AS (
    UPDATE tasks SET status = $4, run_at = coalesce($5, run_at), completed_at = $6,
        result = coalesce($7, result), error = coalesce($8, error),
        result_code = coalesce($9, result_code),
        lease_id = NULL, lease_expires_at = NULL, lease_s = NULL,
        callback_due_at = CASE WHEN callback_url IS NULL THEN NULL ELSE $10::float8 END,
        callback_attempts = 0
    WHERE task_id = $1 AND status = 2 AND lease_id = $2 AND NOT cancel_requested
      AND (lease_expires_at IS NULL OR lease_expires_at > $3)
    RETURNING {TASK_COLUMNS}, $12::integer AS ended
), counted AS ({_counted("settled", "2", "$11")}
), batched AS ({_BATCH_COUNTED.format(slot="$11", total="0", rows="settled")})
SELECT {TASK_COLUMNS} FROM settled
"""

# SETTLE_HELD's completion for many tasks (distinct ids), each held by its lease: the
# rows of those that were so held. The rows are found by id, then by seq
# (with a join on the ids, the planner would rather read every running task and hash them).
_COMPLETE_HELD = """
WITH settled AS (
    UPDATE tasks t SET status = u.status, completed_at = $6, result = u.result,
        result_code = u.result_code,
        lease_id = NULL, lease_expires_at = NULL, lease_s = NULL,
        callback_due_at = CASE WHEN t.callback_url IS NULL THEN NULL ELSE $6::float8 END,
        callback_attempts = 0
    FROM unnest($1::text[], $2::text[], $3::integer[], $4::bytea[], $5::integer[], $7::integer[])
        AS u(task_id, lease_id, status, result, result_code, ended)
    WHERE t.seq = ANY(ARRAY(SELECT seq FROM tasks WHERE task_id = ANY($1::text[])))
      AND t.task_id = u.task_id AND t.status = 2 AND t.lease_id = u.lease_id
      AND NOT t.cancel_requested AND (t.lease_expires_at IS NULL OR t.lease_expires_at > $6)
    RETURNING {returning}, u.ended
), counted AS ({counted}
), batched AS ({batched})
SELECT {returning_names} FROM settled
"""


def _complete_held(columns: str) -> str:
    names = [column.strip() for column in columns.split(",")]
    return _COMPLETE_HELD.format(
        returning=", ".join(f"t.{name}" for name in names),
        returning_names=", ".join(names),
        counted=_counted("settled", "2", "$8"),
        batched=_BATCH_COUNTED.format(slot="$8", total="0", rows="settled"),
    )


# for complete_many: the leading TASK_COLUMNS of each task completed (and its batch)
COMPLETE_HELD_MANY = _complete_held("seq, task_id, queue, level, status, batch_id")
# for concurrent completes sent together (groups.py): the rows, as SETTLE_HELD's
COMPLETE_HELD_ROWS = _complete_held(TASK_COLUMNS)

# A heartbeat of the task held by lease $2, not asked to cancel, its lease unexpired at
# $3: the lease runs to $3 plus $4 (or the take's lease length). No row: the general path.
EXTEND_HELD = """
UPDATE tasks SET lease_expires_at = $3 + coalesce($4, lease_s, 0)
WHERE task_id = $1 AND status = 2 AND lease_id = $2 AND NOT cancel_requested
  AND (lease_expires_at IS NULL OR lease_expires_at > $3)
RETURNING lease_expires_at
"""

# A task's state read without a lock (a fail decides on it; its write re-checks the lease)
PEEK_STATE = f"SELECT {STATE_COLUMNS} FROM tasks WHERE task_id = $1"
