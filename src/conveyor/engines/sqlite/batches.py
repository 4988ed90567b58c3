"""A batch's tasks in SQLite: counted by outcome, listed in input order, cancelled in bulk.

Two partial indexes hold only tasks that belong to a batch, so tasks put one by one pay
nothing for them: ix_batch_order lists a batch's tasks in put order (its input order),
ix_batch_counts counts them by status and result code without reading a row.
"""

from __future__ import annotations

import sqlite3

from conveyor.domain import lifecycle
from conveyor.domain.batch_lines import Outcome, outcome
from conveyor.domain.states import TaskStatus
from conveyor.engines.engine import BatchCounts
from conveyor.engines.sqlite import queries as q
from conveyor.engines.sqlite.queries import STATUSES
from conveyor.engines.sqlite.rows import Row, RowState
from conveyor.engines.sqlite.settle import settle
from conveyor.engines.sqlite.writer import Tx


def count(conn: sqlite3.Connection, batch_id: str) -> BatchCounts:
    """The batch's tasks by how they ended (see domain/batch_lines.py `outcome`)."""
    total = completed = failed = not_run = 0
    for status_code, result_code, n in conn.execute(q.BATCH_COUNTS, (batch_id,)):
        total += n
        status = STATUSES[status_code]
        if not status.finished:
            continue
        ended = outcome(status, result_code)
        if ended is Outcome.COMPLETED:
            completed += n
        elif ended is Outcome.FAILED:
            failed += n
        else:
            not_run += n
    return BatchCounts(total=total, completed=completed, failed=failed, not_run=not_run)


def page(conn: sqlite3.Connection, batch_id: str, after: int, limit: int) -> list[Row]:
    """Up to `limit` + 1 of the batch's tasks after position `after`, in put order."""
    rows: list[Row] = conn.execute(q.BATCH_PAGE, (batch_id, after, limit + 1)).fetchall()
    return rows


def cancel(tx: Tx, batch_id: str, limit: int, now: float) -> int:
    """Cancel up to `limit` waiting tasks of the batch and mark running ones; how many."""
    states = [RowState(row) for row in tx.conn.execute(q.BATCH_TO_CANCEL, (batch_id, limit))]
    for state in states:
        action = lifecycle.cancel_action(state)
        if action is lifecycle.CancelAction.MARK:
            tx.conn.execute(q.MARK_CANCEL, (state.seq,)).fetchall()
            tx.changed.append(state.task_id)  # its worker learns at the next heartbeat
        elif action is lifecycle.CancelAction.END:
            settle(tx, state, lifecycle.Outcome(TaskStatus.CANCELLED, completed_at=now))
    return len(states)
