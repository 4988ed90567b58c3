"""Writing a verb's outcome to a task row, and reading the state it is decided on."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.domain import lifecycle
from conveyor.domain.states import TaskStatus
from conveyor.engines.sqlite import batch_counts as batches
from conveyor.engines.sqlite import queries as q
from conveyor.engines.sqlite.queries import STATUS_CODES
from conveyor.engines.sqlite.rows import Row, RowState, encode
from conveyor.engines.sqlite.writer import Tx
from conveyor.errors import NotFound


def settle_args(state: RowState, outcome: lifecycle.Outcome) -> tuple[object, ...]:
    """The parameters of SETTLE / SETTLE_QUIET for one outcome."""
    return (
        STATUS_CODES[outcome.status],
        outcome.run_at,
        outcome.completed_at,
        None if outcome.result is None else encode(outcome.result),
        None if outcome.error is None else encode(outcome.error),
        None if outcome.result is None else outcome.result.status_code,
        outcome.completed_at if outcome.status.finished else None,  # callback due
        state.seq,
    )


def state_of(tx: Tx, task_id: str) -> RowState:
    """The task's current state. Raises NotFound."""
    row = tx.conn.execute(q.SELECT_STATE, (task_id,)).fetchone()
    if row is None:
        raise NotFound(f"task {task_id} does not exist")
    return RowState(row)


def states(tx: Tx, task_ids: Sequence[str]) -> dict[str, RowState]:
    """The current state of each of `task_ids` that exists."""
    found: dict[str, RowState] = {}
    for start in range(0, len(task_ids), 500):
        chunk = task_ids[start : start + 500]
        sql = q.SELECT_STATES.format(marks=",".join("?" * len(chunk)))
        found.update((row[1], RowState(row)) for row in tx.conn.execute(sql, chunk))
    return found


def _bookkeep(tx: Tx, state: RowState, outcome: lifecycle.Outcome) -> None:
    tx.moved(state.queue, state.level, state.status, outcome.status)
    if outcome.status is TaskStatus.SCHEDULED and outcome.run_at is not None:
        tx.due.append(outcome.run_at)
    elif outcome.status.finished:
        tx.changed.append(state.task_id)


def settle(tx: Tx, state: RowState, outcome: lifecycle.Outcome, *, returning: bool = True) -> Row:
    """Write an outcome: the lease ends and the task moves; the row if `returning`."""
    sql = q.SETTLE if returning else q.SETTLE_QUIET
    row: Row = tx.conn.execute(sql, settle_args(state, outcome)).fetchone() or ()
    _bookkeep(tx, state, outcome)
    if state.batch_id is not None:
        delta: batches.Delta = {}
        batches.note_settle(delta, state, outcome)
        batches.apply(tx.conn, delta)
    return row


def settle_many(tx: Tx, writes: Sequence[tuple[RowState, lifecycle.Outcome]]) -> None:
    """Write many outcomes in one statement run."""
    tx.conn.executemany(q.SETTLE_QUIET, [settle_args(s, o) for s, o in writes])
    delta: batches.Delta = {}
    for state, outcome in writes:
        _bookkeep(tx, state, outcome)
        batches.note_settle(delta, state, outcome)
    batches.apply(tx.conn, delta)
