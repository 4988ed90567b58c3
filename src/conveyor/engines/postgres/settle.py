"""Writing a verb's outcome to a task row, and reading (and locking) the state it is decided on."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.domain import lifecycle
from conveyor.domain.batch_lines import Outcome, outcome
from conveyor.domain.states import TaskStatus
from conveyor.engines.postgres import queries as q
from conveyor.engines.postgres.queries import STATUS_CODES
from conveyor.engines.postgres.rows import Row, RowState, encode
from conveyor.engines.postgres.tx import Tx
from conveyor.errors import NotFound


async def state_of(tx: Tx, task_id: str) -> RowState:
    """The task's current state, its row locked until the transaction ends. Raises NotFound."""
    row = await tx.conn.fetchrow(q.SELECT_STATE, task_id)
    if row is None:
        raise NotFound(f"task {task_id} does not exist")
    return RowState(row)


async def states(tx: Tx, task_ids: Sequence[str]) -> dict[str, RowState]:
    """The current state of each of `task_ids` that exists, their rows locked (in seq order)."""
    rows = await tx.conn.fetch(q.SELECT_STATES, list(set(task_ids)))
    return {row[1]: RowState(row) for row in rows}


COLUMNS = {Outcome.COMPLETED: 1, Outcome.FAILED: 2, Outcome.NOT_RUN: 3}  # see Tx.batch_moved


def ended_as(status: TaskStatus, result_code: int | None) -> int | None:
    """The batch counts column a task in `status` counts in; None while it is unfinished."""
    if not status.finished:
        return None
    return COLUMNS[outcome(status, result_code)]


def _bookkeep(tx: Tx, state: RowState, change: lifecycle.Outcome) -> None:
    tx.moved(state.queue, state.level, state.status, change.status)
    if change.status is TaskStatus.SCHEDULED and change.run_at is not None:
        tx.due.append(change.run_at)
    elif change.status.finished:
        tx.changed.append(state.task_id)
    if state.batch_id is not None:
        code = state.result_code if change.result is None else change.result.status_code
        before = ended_as(state.status, state.result_code)
        tx.batch_moved(state.batch_id, before, ended_as(change.status, code))


async def settle(tx: Tx, state: RowState, change: lifecycle.Outcome) -> Row:
    """Write an outcome: the lease ends and the task moves; the row as it is now."""
    result, error = change.result, change.error
    row: Row = await tx.conn.fetchrow(
        q.SETTLE,
        state.seq,
        STATUS_CODES[change.status],
        change.run_at,
        change.completed_at,
        None if result is None else encode(result),
        None if error is None else encode(error),
        None if result is None else result.status_code,
        change.completed_at if change.status.finished else None,  # callback due
    )
    _bookkeep(tx, state, change)
    return row


async def settle_many(tx: Tx, writes: Sequence[tuple[RowState, lifecycle.Outcome]]) -> None:
    """Write many outcomes in one statement."""
    if not writes:
        return
    columns: list[list[object]] = [[] for _ in range(8)]
    for state, change in writes:
        result, error = change.result, change.error
        for column, value in zip(
            columns,
            (
                state.seq,
                STATUS_CODES[change.status],
                change.run_at,
                change.completed_at,
                None if result is None else encode(result),
                None if error is None else encode(error),
                None if result is None else result.status_code,
                change.completed_at if change.status.finished else None,
            ),
            strict=True,
        ):
            column.append(value)
        _bookkeep(tx, state, change)
    await tx.conn.execute(q.SETTLE_MANY, *columns)
