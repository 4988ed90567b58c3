"""The PostgreSQL engine's schema: its tables, indexes and migrations.

The tables follow the SQLite engine's (statuses as small integers, the same task columns),
with text compared byte-wise (COLLATE "C", as Python compares strings) and JSON kept as
bytea, as written. Each index serves one question:
  ix_ready          the oldest queued tasks of a lane (take)
  ix_ready_group    the same per fairness group, and the groups of a lane (fair take)
  ix_scheduled      delayed and backing-off tasks by due time (sweep)
  ix_leases         running tasks by lease expiry (sweep)
  ix_deadlines      unfinished tasks with a deadline (sweep)
  ix_listing        a queue's tasks by state in put order (list_tasks, a queue's running
                    tasks); queued tasks are listed through ix_ready instead
  ix_finished       a queue's finished tasks by end time (retention)
  ix_callbacks      ended tasks whose callback is owed, by due time (the outbox)
  ix_batch_order    a batch's tasks in put order, its input order (finalization)
  ix_batch_unfinished a batch's unfinished tasks (cancel)
  ix_records        a project's records of one kind in id order (list_records)
  ix_records_active the active records of one kind in id order (list_active)

Counts per (queue, level, status) live in `counts`, changed in the transaction that moves
the tasks, spread over SLOTS rows per key so that concurrent transactions seldom wait on
one another's counter row; `queue_stats` adds the slots up. `batch_counts` does the same
for each batch's tasks by how they ended (total, completed, failed, not run), so reading a
batch's counts costs a few rows however large the batch.

Schema versions are MIGRATIONS[version - 1], applied in order at start-up under an
advisory lock; version 1 is the whole schema.
"""

from __future__ import annotations

SLOTS = 16

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS queues (
    name text COLLATE "C" PRIMARY KEY,
    config bytea NOT NULL,
    paused boolean NOT NULL,
    retention_s double precision NOT NULL
);

CREATE TABLE IF NOT EXISTS counts (
    queue text COLLATE "C" NOT NULL,
    level integer NOT NULL,
    status integer NOT NULL,
    slot integer NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (queue, level, status, slot)
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

CREATE TABLE IF NOT EXISTS tasks (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id text COLLATE "C" NOT NULL UNIQUE,
    queue text COLLATE "C" NOT NULL,
    level integer NOT NULL,
    status integer NOT NULL,
    grp text COLLATE "C" NOT NULL,
    run_at double precision NOT NULL,
    expires_at double precision,
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    backoff bytea NOT NULL,
    lease_id text,
    lease_expires_at double precision,
    lease_s double precision,
    worker_id text,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at double precision NOT NULL,
    started_at double precision,
    completed_at double precision,
    fingerprint text NOT NULL,
    endpoint text NOT NULL,
    data bytea NOT NULL,
    response_mode text NOT NULL,
    callback_url text,
    timeout_s double precision,
    custom_id text,
    batch_id text COLLATE "C",
    metadata bytea,
    result bytea,
    error bytea,
    callback_due_at double precision,
    callback_attempts integer NOT NULL DEFAULT 0,
    result_code integer
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.05);

CREATE TABLE IF NOT EXISTS events (
    task_seq bigint NOT NULL,
    event_id integer NOT NULL,
    event text NOT NULL,
    data bytea NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (task_seq, event_id)
);

CREATE INDEX IF NOT EXISTS ix_ready ON tasks (queue, level, seq) WHERE status = 0;
CREATE INDEX IF NOT EXISTS ix_ready_group ON tasks (queue, level, grp, seq) WHERE status = 0;
CREATE INDEX IF NOT EXISTS ix_scheduled ON tasks (run_at) WHERE status = 1;
CREATE INDEX IF NOT EXISTS ix_leases ON tasks (lease_expires_at) WHERE status = 2;
CREATE INDEX IF NOT EXISTS ix_deadlines ON tasks (expires_at)
    WHERE expires_at IS NOT NULL AND status IN (0, 1, 2);
CREATE INDEX IF NOT EXISTS ix_listing ON tasks (queue, status, seq) WHERE status >= 1;
CREATE INDEX IF NOT EXISTS ix_finished ON tasks (queue, completed_at) WHERE status >= 3;
CREATE INDEX IF NOT EXISTS ix_callbacks ON tasks (callback_due_at)
    WHERE callback_due_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS batch_counts (
    batch_id text COLLATE "C" NOT NULL,
    slot integer NOT NULL,
    total bigint NOT NULL,
    completed bigint NOT NULL,
    failed bigint NOT NULL,
    not_run bigint NOT NULL,
    PRIMARY KEY (batch_id, slot)
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

CREATE INDEX IF NOT EXISTS ix_batch_order ON tasks (batch_id, seq) WHERE batch_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_batch_unfinished ON tasks (batch_id, seq)
    WHERE batch_id IS NOT NULL AND status IN (0, 1, 2);

CREATE TABLE IF NOT EXISTS records (
    kind text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    project text COLLATE "C" NOT NULL,
    created_at double precision NOT NULL,
    body bytea NOT NULL,
    active boolean NOT NULL,
    version integer NOT NULL,
    PRIMARY KEY (kind, id)
);

CREATE INDEX IF NOT EXISTS ix_records ON records (kind, project, id);
CREATE INDEX IF NOT EXISTS ix_records_active ON records (kind, id) WHERE active;
"""

MIGRATIONS: list[str] = [SCHEMA_V1]
SCHEMA_VERSION = len(MIGRATIONS)

# ---- start-up ----
# one lock per schema, held for the migrating transaction, so servers starting together
# take turns (the first creates, the others find it done)
MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
SCHEMA_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"
SELECT_SCHEMA_VERSION = "SELECT max(version) FROM schema_version"
SET_SCHEMA_VERSION = "DELETE FROM schema_version; INSERT INTO schema_version VALUES ({version})"
