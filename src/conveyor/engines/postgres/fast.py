"""The hot verbs in one statement each: one round trip, no BEGIN or COMMIT of their own.

A statement sent alone runs in an implicit transaction, so a verb that is one statement
(its counts upserted in a data-modifying CTE, queries.py) is atomic and costs one round
trip. The domain still decides: a complete or a heartbeat is asked of `lifecycle` for a
task held by the caller's lease and not asked to cancel (`Held`), and the statement
writes that outcome only where the row is so held at the moment it is written; a row
that is not (a stale lease, a cancel, no such task) is left as it is, and the engine runs
the verb again on its general path (read FOR UPDATE, ask the domain, write), which
answers those cases. A take goes this way when its strategy chooses in list order
(`strategies.in_list_order`); a put when every id is new.

Each function returns None when the verb must take the general path.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, NoReturn

import asyncpg

from conveyor.domain import lifecycle
from conveyor.domain.queues import Lane
from conveyor.domain.retry import Backoff
from conveyor.domain.states import TaskStatus
from conveyor.domain.strategies import in_list_order
from conveyor.domain.tasks import NewTask, TaskResult
from conveyor.engines.engine import Completion, TakeRequest
from conveyor.engines.postgres import queries as q
from conveyor.engines.postgres.put import columns_of
from conveyor.engines.postgres.queries import SLOTS, STATUS_CODES, STATUSES
from conveyor.engines.postgres.rows import Row, RowState, encode
from conveyor.engines.postgres.settle import ended_as
from conveyor.engines.postgres.tx import Tx
from conveyor.errors import NotFound


class Held:
    """A running task held by `lease_id`, its lease unexpired, no cancel asked: the state
    the guarded statements write in, so the outcome `lifecycle` gives for it is theirs."""

    __slots__ = ("lease_id", "task_id")

    status = TaskStatus.RUNNING
    lease_expires_at: float | None = None
    cancel_requested = False

    def __init__(self, task_id: str, lease_id: str) -> None:
        self.task_id = task_id
        self.lease_id: str | None = lease_id

    def _unknown(self) -> NoReturn:
        raise AssertionError("a held task's attempts are not read before the write")

    @property
    def attempts(self) -> int:
        self._unknown()

    @property
    def max_attempts(self) -> int:
        self._unknown()

    @property
    def backoff(self) -> Backoff:
        self._unknown()


def _slot() -> int:
    return random.randrange(SLOTS)


async def put(tx: Tx, tasks: Sequence[NewTask]) -> list[bool] | None:
    """Insert `tasks`, all new, in one statement; None if an id exists (nothing stored).
    Raises NotFound for a missing queue (nothing stored)."""
    columns = columns_of(tasks)
    names = sorted({task.queue for task in tasks})
    try:
        found = await tx.conn.fetchval(q.PUT_NEW, *columns, names, _slot())
    except asyncpg.UniqueViolationError:
        return None
    for name in set(names).difference(found):
        raise NotFound(f"queue {name!r} does not exist")
    for task in tasks:
        if task.status is TaskStatus.QUEUED:
            tx.work.add(task.queue)
    due = [t.run_at for t in tasks if t.status is TaskStatus.SCHEDULED]
    due.extend(t.expires_at for t in tasks if t.expires_at is not None)
    if due:
        tx.due.append(min(due))
    return [True] * len(tasks)


def takes_in_list_order(request: TakeRequest) -> bool:
    """Whether `take` can serve `request`: its strategy chooses in list order, and no lane
    is listed twice (one statement reads each listed lane once)."""
    lanes = [lane for source in request.sources for lane in source.lanes()]
    return in_list_order(request.strategy, request.sources) and len(set(lanes)) == len(lanes)


async def take(tx: Tx, request: TakeRequest, now: float) -> list[Row]:
    """Claim up to the request's size of queued tasks, in list order (see
    `takes_in_list_order`), in one statement; the rows in that order."""
    queues: list[str] = []
    los: list[int] = []
    his: list[int] = []
    levels: list[int] = []
    order: dict[Lane, int] = {}
    for source in request.sources:
        queues.append(source.queue)
        los.append(len(levels) + 1)
        levels.extend(source.levels)
        his.append(len(levels))
        for lane in source.lanes():
            order.setdefault(lane, len(order))
    expires_at = now + request.lease_s
    rows: list[Row] = await tx.conn.fetch(
        q.TAKE_IN_LIST_ORDER,
        queues,
        los,
        his,
        levels,
        request.size,
        now,
        request.worker_id,
        expires_at,
        request.lease_s,
        _slot(),
    )
    if rows:
        rows.sort(key=lambda row: (order[Lane(row[2], row[3])], row[0]))
        tx.local_due.append(expires_at)  # this server's sweeper watches the lease
    return rows


def _news(tx: Tx, task_id: str, queue: str, change: lifecycle.Outcome) -> None:
    """What waiters hear of a task that left its lease as `change` says."""
    if change.status is TaskStatus.QUEUED:
        tx.work.add(queue)
    elif change.status is TaskStatus.SCHEDULED and change.run_at is not None:
        tx.due.append(change.run_at)
    elif change.status.finished:
        tx.changed.append(task_id)


async def settle_held(
    tx: Tx,
    task_id: str,
    lease_id: str,
    change: lifecycle.Outcome,
    now: float,
    result_code: int | None = None,
) -> Row | None:
    """Write `change`, decided for the task held by `lease_id`, if the row is so held at
    `now`; the row as it is now, or None (nothing written). `result_code`: the stored one,
    when `change` carries no result."""
    result, error = change.result, change.error
    code = result_code if result is None else result.status_code
    row: Row | None = await tx.conn.fetchrow(
        q.SETTLE_HELD,
        task_id,
        lease_id,
        now,
        STATUS_CODES[change.status],
        change.run_at,
        change.completed_at,
        None if result is None else encode(result),
        None if error is None else encode(error),
        None if result is None else result.status_code,
        change.completed_at if change.status.finished else None,  # callback due
        _slot(),
        ended_as(change.status, code),
    )
    if row is not None:
        _news(tx, task_id, row[2], change)
    return row


async def complete(
    tx: Tx, task_id: str, lease_id: str, result: TaskResult, now: float
) -> Row | None:
    """A completion in one statement: the row, or None (the general path decides)."""
    change = lifecycle.completed(Held(task_id, lease_id), lease_id, result, now)
    return await settle_held(tx, task_id, lease_id, change, now)


async def complete_many(
    tx: Tx, items: Sequence[Completion], now: float
) -> dict[int, tuple[str, TaskStatus]]:
    """Complete, in one statement, the items whose task is held by their lease (the first
    item naming each task): item index -> (queue, status). The others are not written."""
    firsts: dict[str, int] = {}
    for index, item in enumerate(items):
        firsts.setdefault(item.task_id, index)
    chosen = [items[index] for index in firsts.values()]
    settled: dict[int, tuple[str, TaskStatus]] = {}
    for row in await _complete_held(tx, q.COMPLETE_HELD_MANY, chosen, now):
        settled[firsts[row[1]]] = (row[2], STATUSES[row[4]])
    return settled


async def complete_rows(tx: Tx, items: Sequence[Completion], now: float) -> list[Row | None]:
    """Complete, in one statement, the items (distinct tasks) whose task is held by their
    lease: per item its row as it is now, or None (not written)."""
    rows = {row[1]: row for row in await _complete_held(tx, q.COMPLETE_HELD_ROWS, items, now)}
    return [rows.get(item.task_id) for item in items]


async def _complete_held(tx: Tx, sql: str, items: Sequence[Completion], now: float) -> list[Row]:
    """Run a COMPLETE_HELD_* statement for `items` (distinct tasks): the rows it returns,
    each led by TASK_COLUMNS' seq, task_id, queue, level, status (the news is in `tx`)."""
    columns: list[list[Any]] = [[] for _ in range(6)]
    changes: dict[str, lifecycle.Outcome] = {}
    for item in items:
        held = Held(item.task_id, item.lease_id)
        change = changes[item.task_id] = lifecycle.completed(held, item.lease_id, item.result, now)
        code = item.result.status_code
        for column, value in zip(
            columns,
            (
                item.task_id,
                item.lease_id,
                STATUS_CODES[change.status],
                encode(item.result),
                code,
                ended_as(change.status, code),
            ),
            strict=True,
        ):
            column.append(value)
    ids, leases, statuses, results, codes, ended = columns
    rows: list[Row] = await tx.conn.fetch(
        sql, ids, leases, statuses, results, codes, now, ended, _slot()
    )
    for row in rows:
        _news(tx, row[1], row[2], changes[row[1]])
    return rows


async def heartbeat(
    tx: Tx, task_id: str, lease_id: str, extend_s: float | None, now: float
) -> float | None:
    """Extend the lease held by `lease_id` in one statement: the new expiry, or None (the
    general path decides: a stale lease, or a cancel to deliver)."""
    if lifecycle.heartbeat_cancels(Held(task_id, lease_id), lease_id, now) is not None:
        return None
    expires_at: float | None = await tx.conn.fetchval(
        q.EXTEND_HELD, task_id, lease_id, now, extend_s
    )
    if expires_at is not None:
        tx.local_due.append(expires_at)
    return expires_at


async def peek(tx: Tx, task_id: str) -> RowState:
    """The task's state, unlocked (what a fail decides on). Raises NotFound."""
    row = await tx.conn.fetchrow(q.PEEK_STATE, task_id)
    if row is None:
        raise NotFound(f"task {task_id} does not exist")
    return RowState(row)
