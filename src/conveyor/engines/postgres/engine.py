"""The PostgreSQL engine: many server processes over one schema.

Every verb is atomic on a pooled connection (asyncpg, transactions.py). The hot ones (a
put of new tasks, a take whose strategy chooses in list order, complete, complete_many,
heartbeat) are one statement each, one round trip, their counts written in the statement
(fast.py); fail is two; concurrent puts and completes go out together (groups.py).
Whatever those leave to it, and every other verb, runs as one transaction: the state a
verb is decided on is read FOR UPDATE and handed to domain/lifecycle.py; takes lock their
candidates FOR UPDATE SKIP LOCKED (lanes.py), so concurrent takers, on any server, never
get the same task; counts go out with the COMMIT (tx.py). The news goes to this
process's waiters at once and to the other servers by NOTIFY (notices.py), and one
LISTEN connection wakes this process's waiters for what other servers did (listener.py).

Driver: asyncpg, measured against psycopg 3 (async) with `python -m
benchmarks.postgres_drivers` on this project's machine (2 cores, shared with other work):
the statements of one put, one SKIP LOCKED take and one complete per cycle, 4,000 cycles,
synchronous_commit off so that the drivers' own cost shows. From 8 connections asyncpg
ran 630-1,410 cycles/s and psycopg 190-680, and asyncpg spent 650-700 µs of client CPU
per cycle against psycopg's 1,600-1,800; from one connection asyncpg spent 1,000-1,400 µs
against 1,600-1,850. asyncpg speaks the binary protocol and prepares every statement,
which is what the hot verbs repeat.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import secrets
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import asyncpg

from conveyor.domain import lifecycle
from conveyor.domain.clock import Clock, system_clock
from conveyor.domain.events import NewEvent, TaskEvent
from conveyor.domain.queues import QueueConfig, QueueUpdate
from conveyor.domain.states import TaskStatus
from conveyor.domain.strategies import Rotation
from conveyor.domain.tasks import NewTask, Task, TaskError, TaskResult
from conveyor.engines.engine import (
    BatchCounts,
    Completion,
    DueCallback,
    Heartbeat,
    QueueStats,
    Record,
    Settled,
    SweepReport,
    TakeRequest,
    TaskPage,
    WorkWatch,
    parse_cursor,
)
from conveyor.engines.postgres import batches, fast, queues, records, store, transactions
from conveyor.engines.postgres import queries as q
from conveyor.engines.postgres.groups import Group
from conveyor.engines.postgres.lanes import choose
from conveyor.engines.postgres.listener import Listener
from conveyor.engines.postgres.notices import NoticeSender
from conveyor.engines.postgres.put import put
from conveyor.engines.postgres.queries import STATUS_CODES, STATUSES
from conveyor.engines.postgres.rows import Row, decode_any, to_task
from conveyor.engines.postgres.settle import settle, settle_many, state_of, states
from conveyor.engines.postgres.store import LOST, fetch_planned
from conveyor.engines.postgres.sweep import sweep
from conveyor.engines.postgres.tx import Tx
from conveyor.engines.postgres.vacuum import Vacuum
from conveyor.errors import (
    ConveyorError,
    EngineUnavailable,
    InvalidInput,
    NotFound,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

CLOSE_TIMEOUT_S = 10.0
# puts (and completes) sent at once; more wait and go out together (groups.py)
IN_FLIGHT = 4
# a grouped put carries at most this much (its tasks' data, metadata and a floor per task):
# far under PostgreSQL's 1 GB per bind message, and above one bulk put of ordinary tasks
MAX_GROUP_PUT_WEIGHT = 64 << 20
TASK_OVERHEAD_BYTES = 512
NOTIFY_TIMEOUT_S = 5.0  # a notice that cannot go out by then is dropped (waiters recheck)


class PostgresEngine:
    """Queues and tasks in one PostgreSQL schema, shared by any number of servers."""

    def __init__(
        self, url: str, *, clock: Clock = system_clock, rng: random.Random | None = None
    ) -> None:
        self._target = store.parse_url(url)
        self._clock = clock
        self._rng = rng or random.Random()
        self._rotation = Rotation()
        self._origin = secrets.token_hex(8)
        self._pool: Any = None
        self._listener = Listener(
            lambda: store.connect(self._target), self._target.channel, self._origin, clock
        )
        self._sender = NoticeSender(self._notify, self._target.channel, self._origin)
        self._vacuum = Vacuum(self._target.schema)
        self._puts: Group[Sequence[NewTask], list[bool]] = Group(
            self._put_together,
            self._put_alone,
            IN_FLIGHT,
            weigh=_put_weight,
            max_weight=MAX_GROUP_PUT_WEIGHT,
        )
        self._completes: Group[Completion, Row] = Group(
            self._complete_together, self._complete_alone, IN_FLIGHT
        )

    # ---- lifecycle ----
    async def open(self) -> None:
        target = self._target
        try:
            conn = await store.connect(target)
            try:
                await store.migrate(conn, target.schema)
            finally:
                await conn.close()
            self._pool = await store.create_pool(target)
            await self._listener.start()
            self._sender.start()
        except (*LOST, asyncpg.PostgresError) as exc:
            await self.close()
            raise EngineUnavailable(
                f"cannot open the PostgreSQL store {target.display} (schema {target.schema}): {exc}"
            ) from exc

    async def close(self) -> None:
        await self._puts.drain()
        await self._completes.drain()
        await self._sender.stop()  # what is pending goes out first
        await self._listener.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
            except TimeoutError:
                log.warning(
                    "PostgreSQL connections still busy after %ss; closing them", CLOSE_TIMEOUT_S
                )
                pool.terminate()

    async def ready(self) -> bool:
        try:
            return bool(await self._read(lambda conn: conn.fetchval("SELECT 1")))
        except Exception:
            return False

    def _opened(self) -> Any:
        if self._pool is None:
            raise EngineUnavailable("the PostgreSQL engine is not open")
        return self._pool

    async def _write(self, op: Callable[[Tx], Awaitable[T]]) -> T:
        """Run `op` in a transaction (transactions.write), then wake waiters."""
        result, tx = await transactions.write(self._opened(), op)
        self._deliver(tx)
        return result

    async def _once(self, op: Callable[[Tx], Awaitable[T]]) -> T:
        """Run `op`'s one-statement writes (transactions.once), then wake waiters."""
        result, tx = await transactions.once(self._opened(), op)
        self._deliver(tx)
        return result

    async def _read(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        return await transactions.read(self._opened(), fn)

    def _deliver(self, tx: Tx) -> None:
        """Hand a committed transaction's news to this process's waiters, and to the others."""
        due = tx.due + tx.local_due
        self._listener.deliver(tx.work, tx.changed, min(due) if due else None)
        if tx.work or tx.changed or tx.due:
            self._sender.add(tx.work, tx.changed, min(tx.due) if tx.due else None)

    async def _notify(self, sql: str) -> None:
        """Run the notices' transaction on a pooled connection (bounded: see notices.py)."""
        if self._pool is not None:
            async with self._pool.acquire(timeout=NOTIFY_TIMEOUT_S) as conn:
                await conn.execute(sql, timeout=NOTIFY_TIMEOUT_S)

    # ---- queues ----
    async def register_queue(self, config: QueueConfig, *, replace: bool = True) -> QueueConfig:
        return await self._write(
            lambda tx: queues.register(tx, config, replace=replace, now=self._clock())
        )

    async def get_queue(self, name: str) -> QueueConfig:
        raw = await self._read(lambda conn: conn.fetchval(q.SELECT_QUEUE, name))
        if raw is None:
            raise NotFound(f"queue {name!r} does not exist")
        return queues.decode_config(raw)

    async def list_queues(self) -> list[QueueConfig]:
        rows = await self._read(lambda conn: conn.fetch(q.SELECT_QUEUES))
        return [queues.decode_config(raw) for (raw,) in rows]

    async def update_queue(self, name: str, update: QueueUpdate) -> QueueConfig:
        return await self._write(lambda tx: queues.update(tx, name, update))

    async def queue_stats(self, name: str) -> QueueStats:
        config = await self.get_queue(name)
        now = self._clock()
        return QueueStats(
            queue=config, levels=await self._read(lambda conn: queues.levels(conn, name, now))
        )

    async def obliterate_queue(self, name: str, *, force: bool = False) -> int:
        return await self._write(lambda tx: queues.obliterate(tx, name, force=force))

    # ---- tasks ----
    async def put(self, tasks: Sequence[NewTask]) -> list[bool]:
        return await self._puts.call(tasks)

    async def _put_alone(self, tasks: Sequence[NewTask]) -> list[bool]:
        created = await self._once(lambda tx: fast.put(tx, tasks))
        if created is not None:
            return created
        return await self._write(lambda tx: put(tx, tasks))  # some ids exist already

    async def _put_together(
        self, calls: Sequence[Sequence[NewTask]]
    ) -> Sequence[list[bool] | None]:
        """Concurrent puts in one statement, or each alone if one of them cannot go so."""
        every = [task for tasks in calls for task in tasks]
        try:
            created = await self._once(lambda tx: fast.put(tx, every))
        except (NotFound, InvalidInput):
            created = None
        if created is None:
            return [None] * len(calls)
        return [[True] * len(tasks) for tasks in calls]

    async def take(self, request: TakeRequest) -> list[Task]:
        if fast.takes_in_list_order(request):
            rows = await self._once(lambda tx: fast.take(tx, request, self._clock()))
        else:
            rows = await self._write(lambda tx: self._take(tx, request))
        return [to_task(row) for row in rows]

    async def _take(self, tx: Tx, request: TakeRequest) -> list[Row]:
        chosen = await choose(
            tx.conn, request.strategy, request.sources, request.size, self._rotation
        )
        if not chosen:
            return []
        now = self._clock()
        expires_at = now + request.lease_s
        rows: list[Row] = await tx.conn.fetch(
            q.CLAIM, now, request.worker_id, expires_at, request.lease_s, [c.seq for c in chosen]
        )
        order = {c.seq: i for i, c in enumerate(chosen)}
        rows.sort(key=lambda row: order[row[0]])
        for row in rows:
            tx.moved(row[2], row[3], TaskStatus.QUEUED, TaskStatus.RUNNING)
        tx.local_due.append(expires_at)  # this server's sweeper watches the lease
        return rows

    async def complete(self, task_id: str, lease_id: str, result: TaskResult) -> Task:
        return to_task(await self._completes.call(Completion(task_id, lease_id, result)))

    async def _complete_alone(self, item: Completion) -> Row:
        task_id, lease_id, result = item
        row = await self._once(
            lambda tx: fast.complete(tx, task_id, lease_id, result, self._clock())
        )
        if row is not None:
            return row

        async def op(tx: Tx) -> Row:  # not held by this lease, or asked to cancel
            state = await state_of(tx, task_id)
            outcome = lifecycle.completed(state, lease_id, result, self._clock())
            return await settle(tx, state, outcome)

        return await self._write(op)

    async def _complete_together(self, items: Sequence[Completion]) -> Sequence[Row | None]:
        """Concurrent completes in one statement; a task named twice: the others alone."""
        firsts: dict[str, int] = {}
        for index, item in enumerate(items):
            firsts.setdefault(item.task_id, index)
        chosen = [items[index] for index in firsts.values()]
        rows = await self._once(lambda tx: fast.complete_rows(tx, chosen, self._clock()))
        answers: list[Row | None] = [None] * len(items)
        for index, row in zip(firsts.values(), rows, strict=True):
            answers[index] = row
        return answers

    async def complete_many(self, items: Sequence[Completion]) -> list[Settled | ConveyorError]:
        settled = await self._once(lambda tx: fast.complete_many(tx, items, self._clock()))
        answers: list[Settled | ConveyorError | None] = [
            None if (done := settled.get(i)) is None else Settled(*done) for i in range(len(items))
        ]
        rest = [i for i, answer in enumerate(answers) if answer is None]
        if rest:  # not held by their lease, asked to cancel, or named twice

            async def op(tx: Tx) -> list[Settled | ConveyorError]:
                now = self._clock()
                others = [items[i] for i in rest]
                decided = lifecycle.completions(
                    await states(tx, [item.task_id for item in others]), others, now
                )
                await settle_many(tx, [d for d in decided if isinstance(d, tuple)])
                return [
                    d if isinstance(d, ConveyorError) else Settled(d[0].queue, d[1].status)
                    for d in decided
                ]

            for i, answer in zip(rest, await self._write(op), strict=True):
                answers[i] = answer
        return [answer for answer in answers if answer is not None]

    async def fail(
        self,
        task_id: str,
        lease_id: str,
        error: TaskError,
        *,
        retry: bool = True,
        retry_after_s: float | None = None,
    ) -> Task:
        async def peeked(tx: Tx) -> Row | None:
            state = await fast.peek(tx, task_id)
            now = self._clock()
            outcome = lifecycle.failed(
                state,
                lease_id,
                error,
                retry=retry,
                retry_after_s=retry_after_s,
                now=now,
                rng=self._rng,
            )
            if state.cancel_requested:
                return None
            return await fast.settle_held(tx, task_id, lease_id, outcome, now, state.result_code)

        row = await self._once(peeked)
        if row is not None:
            return to_task(row)

        async def op(tx: Tx) -> Row:  # asked to cancel, or changed since it was read
            state = await state_of(tx, task_id)
            outcome = lifecycle.failed(
                state,
                lease_id,
                error,
                retry=retry,
                retry_after_s=retry_after_s,
                now=self._clock(),
                rng=self._rng,
            )
            return await settle(tx, state, outcome)

        return to_task(await self._write(op))

    async def heartbeat(
        self, task_id: str, lease_id: str, extend_s: float | None = None
    ) -> Heartbeat:
        expires_at = await self._once(
            lambda tx: fast.heartbeat(tx, task_id, lease_id, extend_s, self._clock())
        )
        if expires_at is not None:
            return Heartbeat(lease_expires_at=expires_at, cancelled=False)

        async def op(tx: Tx) -> Heartbeat:  # not held by this lease, or a cancel to deliver
            state = await state_of(tx, task_id)
            now = self._clock()
            outcome = lifecycle.heartbeat_cancels(state, lease_id, now)
            if outcome is not None:
                await settle(tx, state, outcome)
                return Heartbeat(lease_expires_at=None, cancelled=True)
            expires_at = now + (extend_s if extend_s is not None else (state.lease_s or 0.0))
            await tx.conn.execute(q.EXTEND_LEASE, state.seq, expires_at)
            tx.local_due.append(expires_at)
            return Heartbeat(lease_expires_at=expires_at, cancelled=False)

        return await self._write(op)

    async def cancel(self, task_id: str) -> Task:
        async def op(tx: Tx) -> Row:
            state = await state_of(tx, task_id)
            action = lifecycle.cancel_action(state)
            if action is lifecycle.CancelAction.MARK:
                row: Row = await tx.conn.fetchrow(q.MARK_CANCEL, state.seq)
                return row
            if action is lifecycle.CancelAction.END:
                outcome = lifecycle.Outcome(TaskStatus.CANCELLED, completed_at=self._clock())
                return await settle(tx, state, outcome)
            row = await tx.conn.fetchrow(q.SELECT_TASK, task_id)
            return row

        return to_task(await self._write(op))

    async def requeue(self, task_id: str) -> Task:
        async def op(tx: Tx) -> Row:
            state = await state_of(tx, task_id)
            outcome = lifecycle.requeued(state, self._clock())
            await tx.conn.execute(q.RESET_FOR_REQUEUE, state.seq)
            return await settle(tx, state, outcome)

        return to_task(await self._write(op))

    async def append_events(self, task_id: str, lease_id: str, events: Sequence[NewEvent]) -> int:
        async def op(tx: Tx) -> int:
            state = await state_of(tx, task_id)
            now = self._clock()
            lifecycle.check_lease(state, lease_id, now)
            last: int = await tx.conn.fetchval(q.LAST_EVENT_ID, state.seq)
            await tx.conn.execute(
                q.INSERT_EVENTS,
                state.seq,
                last,
                now,
                [e.event for e in events],
                [e.data_json for e in events],
            )
            tx.changed.append(task_id)
            return last + len(events)

        return await self._write(op)

    async def list_events(
        self, task_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[TaskEvent]:
        rows = await self._read(lambda conn: conn.fetch(q.LIST_EVENTS, task_id, after, limit))
        if not rows:
            raise NotFound(f"task {task_id} does not exist")
        return [
            TaskEvent(event_id, event, decode_any(data), created_at)
            for _, event_id, event, data, created_at in rows
            if event_id is not None
        ]

    async def get_task(self, task_id: str) -> Task:
        row = await self._read(lambda conn: conn.fetchrow(q.SELECT_TASK, task_id))
        if row is None:
            raise NotFound(f"task {task_id} does not exist")
        return to_task(row)

    async def list_tasks(
        self,
        queue: str,
        status: TaskStatus | None = None,
        *,
        after: str | None = None,
        limit: int = 100,
    ) -> TaskPage:
        config = await self.get_queue(queue)
        start = parse_cursor(after)
        statuses = list(STATUSES) if status is None else [status]
        others = [STATUS_CODES[s] for s in statuses if s is not TaskStatus.QUEUED]

        async def read(conn: Any) -> list[Row]:
            # each run comes in seq order; merged, the queue's order
            runs = []
            if others:
                runs.append(
                    await fetch_planned(conn, q.LIST_BY_STATUS, queue, start, limit + 1, others)
                )
            if TaskStatus.QUEUED in statuses:
                runs.append(
                    await fetch_planned(
                        conn, q.LIST_QUEUED, queue, start, limit + 1, config.max_level
                    )
                )
            return list(itertools.islice(heapq.merge(*runs, key=lambda row: row[0]), limit + 1))

        rows = await self._read(read)
        cursor = str(rows[limit - 1][0]) if len(rows) > limit else None
        return TaskPage(tasks=[to_task(row) for row in rows[:limit]], next_cursor=cursor)

    # ---- batches ----
    async def batch_counts(self, batch_id: str) -> BatchCounts:
        return await self._read(lambda conn: batches.count(conn, batch_id))

    async def batch_tasks(
        self, batch_id: str, *, after: str | None = None, limit: int = 1000
    ) -> TaskPage:
        start = parse_cursor(after)
        rows = await self._read(lambda conn: batches.page(conn, batch_id, start, limit))
        cursor = str(rows[limit - 1][0]) if len(rows) > limit else None
        return TaskPage(tasks=[to_task(row) for row in rows[:limit]], next_cursor=cursor)

    async def cancel_batch(self, batch_id: str, limit: int = 500) -> int:
        return await self._write(lambda tx: batches.cancel(tx, batch_id, limit, self._clock()))

    # ---- callbacks ----
    async def claim_callbacks(self, limit: int, hold_s: float) -> list[DueCallback]:
        async def op(tx: Tx) -> list[Row]:
            now = self._clock()
            claimed: list[Row] = await tx.conn.fetch(q.CLAIM_CALLBACKS, now + hold_s, now, limit)
            return claimed

        rows = await self._once(op)  # one statement
        return [DueCallback(to_task(row[1:]), row[0]) for row in rows]

    async def settle_callback(self, task_id: str, *, retry_at: float | None) -> None:
        async def op(tx: Tx) -> None:
            await tx.conn.execute(q.SETTLE_CALLBACK, retry_at, task_id)

        await self._once(op)  # one statement

    async def wait_for_callbacks(self, timeout_s: float) -> None:
        await self._listener.local.wait_for_callbacks(timeout_s)

    # ---- records ----
    async def put_record(self, record: Record) -> Record:
        return await self._write(lambda tx: records.put(tx.conn, record))

    async def get_record(self, kind: str, record_id: str) -> Record | None:
        return await self._read(lambda conn: records.get(conn, kind, record_id))

    async def list_records(
        self,
        kind: str,
        project: str,
        *,
        after: str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[Record]:
        return await self._read(
            lambda conn: records.list_page(conn, kind, project, after, limit, newest_first)
        )

    async def replace_record(self, record: Record, expected_version: int) -> Record:
        return await self._write(lambda tx: records.replace(tx.conn, record, expected_version))

    async def delete_record(self, kind: str, record_id: str) -> bool:
        async def op(tx: Tx) -> bool:
            return await tx.conn.fetchval(q.DELETE_RECORD, kind, record_id) is not None

        return await self._write(op)

    async def list_active(
        self, kind: str, limit: int = 1000, *, after: str | None = None
    ) -> list[Record]:
        return await self._read(lambda conn: records.active(conn, kind, limit, after))

    # ---- maintenance and waiting ----
    async def sweep(self) -> SweepReport:
        report = await self._write(lambda tx: sweep(tx, self._clock()))
        self._listener.local.swept(report.next_due_at)
        if self._vacuum.due():
            try:
                await self._read(self._vacuum.run)
            except (ConveyorError, asyncpg.PostgresError) as exc:
                log.warning("could not vacuum schema %s: %s", self._target.schema, exc)
        return report

    def watch(self, queues: Sequence[str]) -> AbstractAsyncContextManager[WorkWatch]:
        return self._listener.watch(queues)

    def watch_task(self, task_id: str) -> AbstractAsyncContextManager[WorkWatch]:
        return self._listener.watch_task(task_id)

    async def wait_for_due(self, timeout_s: float) -> None:
        await self._listener.local.wait_for_due(timeout_s)


def _put_weight(tasks: Sequence[NewTask]) -> int:
    """What a put call adds to a grouped statement: its bytes, and a floor per task."""
    return sum(len(t.data_json) + len(t.metadata_json or b"") + TASK_OVERHEAD_BYTES for t in tasks)
