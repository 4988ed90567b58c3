"""A batch's tasks in SQLite: counted by outcome, listed in input order, cancelled in bulk.

Counts live in the batch_counts table, changed in the same transaction as the tasks they
count (a put adds to `total`; a task that ends, or ends otherwise, moves between
`completed`, `failed` and `not_run`), so reading a batch's counts costs one row however
large the batch; counting its tasks took half a second at 1,000,000. Two partial indexes
hold only tasks that belong to a batch, so other tasks pay nothing for them:
ix_batch_order lists a batch's tasks in put order (its input order), ix_batch_counts finds
its unfinished ones.
"""

from __future__ import annotations

import sqlite3

from conveyor.domain import lifecycle
from conveyor.domain.batch_lines import Outcome, outcome
from conveyor.domain.states import TaskStatus
from conveyor.engines.engine import BatchCounts
from conveyor.engines.sqlite import queries as q
from conveyor.engines.sqlite.queries import STATUSES
from conveyor.engines.sqlite.rows import RowState

COLUMNS = {Outcome.COMPLETED: 1, Outcome.FAILED: 2, Outcome.NOT_RUN: 3}  # in a counts row
Delta = dict[str, list[int]]  # batch id -> [total, completed, failed, not_run]


def ended_as(status: TaskStatus, result_code: int | None) -> int | None:
    """The counts column a batch task in `status` counts in; None while it is unfinished."""
    if not status.finished:
        return None
    return COLUMNS[outcome(status, result_code)]


def count(conn: sqlite3.Connection, batch_id: str) -> BatchCounts:
    """The batch's tasks by how they ended (see domain/batch_lines.py `outcome`)."""
    row = conn.execute(q.SELECT_BATCH_COUNTS, (batch_id,)).fetchone()
    return BatchCounts(0, 0, 0, 0) if row is None else BatchCounts(*row)


def note_change(
    delta: Delta, batch_id: str | None, before: int | None, after: int | None, total: int = 0
) -> None:
    """Add one task's move from column `before` to `after` (None: unfinished) to `delta`."""
    if batch_id is None or (before == after and not total):
        return
    change = delta.setdefault(batch_id, [0, 0, 0, 0])
    change[0] += total
    if before is not None:
        change[before] -= 1
    if after is not None:
        change[after] += 1


def note_settle(delta: Delta, state: RowState, outcome_: lifecycle.Outcome) -> None:
    """Add what settling `state` to `outcome_` does to its batch's counts."""
    if state.batch_id is None:
        return
    code = state.result_code if outcome_.result is None else outcome_.result.status_code
    before = ended_as(state.status, state.result_code)
    note_change(delta, state.batch_id, before, ended_as(outcome_.status, code))


def apply(conn: sqlite3.Connection, delta: Delta) -> None:
    """Write `delta` to batch_counts (in the caller's transaction)."""
    if delta:
        conn.executemany(q.ADD_BATCH_COUNTS, [(b, *change) for b, change in delta.items()])


def fill(conn: sqlite3.Connection) -> None:
    """Count every batch's tasks into batch_counts (a file from before the table existed)."""
    delta: Delta = {}
    for batch_id, status, result_code, n in conn.execute(q.COUNT_BATCH_TASKS).fetchall():
        change = delta.setdefault(batch_id, [0, 0, 0, 0])
        change[0] += n
        column = ended_as(STATUSES[status], result_code)
        if column is not None:
            change[column] += n
    apply(conn, delta)
