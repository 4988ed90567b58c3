"""A batch's tasks in PostgreSQL: counted by outcome, listed in input order, cancelled in bulk.

Counts live in batch_counts, changed with the tasks they count (a put adds to `total`; a
task that ends moves into `completed`, `failed` or `not_run`: settle.py, tx.py), so a read
costs a few rows however large the batch. Two partial indexes hold only tasks that belong
to a batch, so other tasks pay nothing for them: ix_batch_order lists a batch's tasks in
put order (its input order), ix_batch_unfinished finds its unfinished ones.
"""

from __future__ import annotations

from typing import Any

from conveyor.domain import lifecycle
from conveyor.domain.states import TaskStatus
from conveyor.engines.engine import BatchCounts
from conveyor.engines.postgres import queries as q
from conveyor.engines.postgres.rows import Row, RowState
from conveyor.engines.postgres.settle import settle_many
from conveyor.engines.postgres.store import fetch_planned
from conveyor.engines.postgres.tx import Tx


async def count(conn: Any, batch_id: str) -> BatchCounts:
    """The batch's tasks by how they ended (all zero for an unknown batch)."""
    total, completed, failed, not_run = await conn.fetchrow(q.BATCH_COUNTS, batch_id)
    return BatchCounts(total=total, completed=completed, failed=failed, not_run=not_run)


async def page(conn: Any, batch_id: str, after: int, limit: int) -> list[Row]:
    """Up to `limit` + 1 of the batch's tasks after position `after`, in put order."""
    rows: list[Row] = await fetch_planned(conn, q.BATCH_PAGE, batch_id, after, limit + 1)
    return rows


async def cancel(tx: Tx, batch_id: str, limit: int, now: float) -> int:
    """Cancel up to `limit` waiting tasks of the batch and mark running ones; how many."""
    states = [RowState(row) for row in await tx.conn.fetch(q.BATCH_TO_CANCEL, batch_id, limit)]
    marked: list[int] = []
    ended: list[tuple[RowState, lifecycle.Outcome]] = []
    for state in states:
        action = lifecycle.cancel_action(state)
        if action is lifecycle.CancelAction.MARK:
            marked.append(state.seq)
            tx.changed.append(state.task_id)  # its worker learns at the next heartbeat
        elif action is lifecycle.CancelAction.END:
            ended.append((state, lifecycle.Outcome(TaskStatus.CANCELLED, completed_at=now)))
    if marked:
        await tx.conn.execute(q.MARK_CANCEL_MANY, marked)
    await settle_many(tx, ended)
    return len(states)
