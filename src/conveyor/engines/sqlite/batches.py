"""A batch's tasks in SQLite: listed in input order, cancelled in bulk (counts: batch_counts.py)."""

from __future__ import annotations

import sqlite3

from conveyor.domain import lifecycle
from conveyor.domain.states import TaskStatus
from conveyor.engines.sqlite import queries as q
from conveyor.engines.sqlite.rows import Row, RowState
from conveyor.engines.sqlite.settle import settle
from conveyor.engines.sqlite.writer import Tx


def page(conn: sqlite3.Connection, batch_id: str, after: int, limit: int) -> list[Row]:
    """Up to `limit` + 1 of the batch's tasks after position `after`, in put order."""
    rows: list[Row] = conn.execute(q.BATCH_PAGE, (batch_id, after, limit + 1)).fetchall()
    return rows


def cancel(tx: Tx, batch_id: str, limit: int, now: float) -> int:
    """Cancel up to `limit` waiting tasks of the batch and mark running ones; how many."""
    states = [RowState(row) for row in tx.conn.execute(q.BATCH_TO_CANCEL, (batch_id, limit))]
    for state in states:  # settle() keeps the counts
        action = lifecycle.cancel_action(state)
        if action is lifecycle.CancelAction.MARK:
            tx.conn.execute(q.MARK_CANCEL, (state.seq,)).fetchall()
            tx.changed.append(state.task_id)  # its worker learns at the next heartbeat
        elif action is lifecycle.CancelAction.END:
            settle(tx, state, lifecycle.Outcome(TaskStatus.CANCELLED, completed_at=now))
    return len(states)
