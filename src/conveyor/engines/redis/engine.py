"""The Redis engine: many server processes over one Redis or one Redis Cluster.

How the rules stay in one place. Every atomic operation is one Lua script (scripts.py) run
by EVALSHA, but no script decides what a verb does to a task: that is
`conveyor.domain.lifecycle` (and the strategies, and `batch_lines.outcome`), in Python.
- Take: where a strategy's choice is plain (one queue, the oldest tasks of its lanes in a
  fixed order: fifo, active_passive, sequential, round_robin over one source), TAKE leases
  them in one script; otherwise the strategies run in Python over a snapshot of the lanes
  and CLAIM only leases the chosen tasks that are still queued (take.py).
- Complete, fail, heartbeat, cancel, requeue, cancel_batch and the lease-expiry sweep: the
  state is read (or presumed from the request, e.g. "my lease is current"), the lifecycle
  decides, and SETTLE writes the outcome only if the task still stands exactly where it was
  decided; otherwise it answers the state now and the verb decides again (settle.py).
- Backoff, run_at and lease expiries are computed in Python from the engine's clock.
- Batch counts are kept per (status, result code) by the scripts; `batch_lines.outcome`
  turns them into completed / failed / not run.
What scripts do on their own is bookkeeping: indexes and counts that follow from a status,
the order `seq`, promoting due tasks, and expiring deadlines with the outcome they are given.

The key layout is in keys.py: every key of a queue shares the hash tag `{q:NAME}`, and no
script touches two tags, so on Redis Cluster (cluster.py) each script runs on one node. A
batch's tasks all live in the batch's queue (the service puts every task of a batch in the
batch's queue), which batch verbs rely on.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from conveyor.domain import lifecycle
from conveyor.domain.batch_lines import Outcome, outcome
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
from conveyor.engines.notifier import LocalNotifier
from conveyor.engines.redis import maintenance, take
from conveyor.engines.redis.client import DEFAULT_MAX_CONNECTIONS, Link, NodeLink
from conveyor.engines.redis.cluster import ClusterLink, is_cluster_url, parse_url
from conveyor.engines.redis.codec import ROW, STATUSES, State, fields, put_args, row_task, to_task
from conveyor.engines.redis.directory import Directory
from conveyor.engines.redis.keys import DEFAULT_PREFIX, Keys
from conveyor.engines.redis.queues import Queues
from conveyor.engines.redis.records import Records
from conveyor.engines.redis.settle import Settler, Step
from conveyor.engines.redis.subscriber import Subscriber
from conveyor.errors import (
    Conflict,
    ConveyorError,
    EngineUnavailable,
    IdempotencyConflict,
    NotFound,
)

TRIES = 10
_event = msgspec.json.Decoder(tuple[str, float, Any])
_encode = msgspec.json.Encoder().encode


class RedisEngine:
    """Queues and tasks in Redis, shared by every server process that opens the same URL."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock = system_clock,
        rng: random.Random | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self._url = url
        if is_cluster_url(url):
            parse_url(url)  # a bad cluster URL fails here, not at open
        self._keys = Keys(prefix)
        self._clock = clock
        self._rng = rng or random.Random()
        self._max_connections = max_connections
        self._rotation = Rotation()
        self._spares = take.Spare()
        self._local = LocalNotifier()  # due times and callbacks, within this process
        self._parts: _Parts | None = None

    # ---- lifecycle ----
    async def open(self) -> None:
        link: Link = (
            ClusterLink(self._url)
            if is_cluster_url(self._url)
            else NodeLink(self._url, self._max_connections)
        )
        try:
            await link.open()
            subscriber = Subscriber(
                link.nodes,
                [self._keys.callbacks_channel],
                lambda _: self._local.tasks_changed(()),
            )
            await subscriber.start()
        except BaseException:
            await link.close()
            raise
        self._parts = _Parts(self, link, subscriber)

    async def close(self) -> None:
        parts, self._parts = self._parts, None
        if parts is not None:
            await parts.subscriber.close()  # the listener stops before the pool goes
            await parts.link.close()

    async def ready(self) -> bool:
        parts = self._parts
        if parts is None:
            return False
        try:
            return await asyncio.wait_for(parts.link.ready(), 2.0)
        except Exception:
            return False

    @property
    def _p(self) -> _Parts:
        if self._parts is None:
            raise EngineUnavailable("the Redis engine is not open")
        return self._parts

    # ---- queues ----
    async def register_queue(self, config: QueueConfig, *, replace: bool = True) -> QueueConfig:
        return await self._p.queues.register(config, replace=replace)

    async def get_queue(self, name: str) -> QueueConfig:
        return await self._p.queues.get(name)

    async def list_queues(self) -> list[QueueConfig]:
        return await self._p.queues.list()

    async def update_queue(self, name: str, update: QueueUpdate) -> QueueConfig:
        return await self._p.queues.update(name, update)

    async def queue_stats(self, name: str) -> QueueStats:
        return await self._p.queues.stats(name)

    async def obliterate_queue(self, name: str, *, force: bool = False) -> int:
        return await self._p.queues.obliterate(name, force=force)

    # ---- tasks ----
    async def put(self, tasks: Sequence[NewTask]) -> list[bool]:
        if not tasks:
            return []
        p = self._p
        keys = self._keys
        by_queue: dict[str, list[int]] = {}
        seen: dict[str, str] = {}
        for index, task in enumerate(tasks):
            by_queue.setdefault(task.queue, []).append(index)
            if seen.setdefault(task.task_id, task.fingerprint) != task.fingerprint:
                raise _conflict(task.task_id)
        claimed = [(t.task_id, t.queue) for t in tasks if t.fingerprint]
        if claimed:
            await self._reserve(claimed)
        if len(by_queue) > 1:
            await self._check_put(tasks, by_queue)
        batch = p.link.batch()
        minted = [x for t in tasks if not t.fingerprint for x in (t.task_id, t.queue)]
        if minted:
            batch.call("HSET", keys.index, *minted)
        batches = {t.batch_id: t.queue for t in tasks if t.batch_id is not None}
        if batches:
            batch.call("HSET", keys.batches, *(x for pair in batches.items() for x in pair))
        if not p.link.ordered and len(batch):
            # on a cluster the index lives on another node: it is written first, so that
            # no put task (already takeable) lacks the entry its id is found by
            await batch.run()
            batch = p.link.batch()
        first = len(batch)
        for queue, indexes in by_queue.items():
            group = [tasks[i] for i in indexes]
            batch.script("put", keys.queue(queue), keys.prefix, *put_args(group))
        replies = (await batch.run())[first:]
        created = [False] * len(tasks)
        for (queue, indexes), reply in zip(by_queue.items(), replies, strict=True):
            if isinstance(reply, ResponseError):
                await self._undo_index(tasks, indexes)
                raise _put_error(queue, reply)
            for index, flag in zip(indexes, reply, strict=True):
                created[index] = bool(flag)
        p.directory.remember((t.task_id, t.queue) for t in tasks)
        for task, fresh in zip(tasks, created, strict=True):
            if fresh:
                if task.status is TaskStatus.SCHEDULED:
                    self._local.due(task.run_at)
                self._local.due(task.expires_at)
        return created

    async def _reserve(self, pairs: list[tuple[str, str]]) -> None:
        """Claim client-supplied ids for their queues in the index, all or none."""
        p = self._p
        flat = [x for pair in pairs for x in pair]
        queues = dict(pairs)
        for _ in range(TRIES):
            reply = await p.link.run("reserve", self._keys.index, *flat)
            if not reply:
                return
            task_id, other = reply[0].decode(), reply[1].decode()
            if await p.link.call("EXISTS", f"{self._keys.queue(other)}t:{task_id}"):
                raise _conflict(task_id)
            # the id's task was deleted but its index entry stayed: repoint it
            await p.link.run("repoint", self._keys.index, task_id, other, queues[task_id])
        raise Conflict("the task index kept changing; try the put again")

    async def _check_put(self, tasks: Sequence[NewTask], by_queue: dict[str, list[int]]) -> None:
        """Before a put across queues: every queue exists, no id conflicts (so all or none)."""
        batch = self._p.link.batch()
        for queue in by_queue:
            batch.call("HGET", f"{self._keys.queue(queue)}meta", "paused")
        asked = [t for t in tasks if t.fingerprint]
        for task in asked:
            # fp is not stored when '': the status tells whether the task exists
            batch.call("HMGET", f"{self._keys.queue(task.queue)}t:{task.task_id}", "s", "fp")
        replies = await batch.run()
        for queue, paused in zip(by_queue, replies, strict=False):
            if paused is None:
                raise NotFound(f"queue {queue!r} does not exist")
        for task, (status, stored) in zip(asked, replies[len(by_queue) :], strict=True):
            if status is not None and (stored or b"").decode() != task.fingerprint:
                raise _conflict(task.task_id)

    async def _undo_index(self, tasks: Sequence[NewTask], indexes: list[int]) -> None:
        minted = [tasks[i].task_id for i in indexes if not tasks[i].fingerprint]
        if minted:
            await self._p.link.call("HDEL", self._keys.index, *minted)

    async def take(self, request: TakeRequest) -> list[Task]:
        p = self._p
        now = self._clock()
        tasks = await take.take(p.link, self._keys, request, self._rotation, now, self._spares)
        if tasks:
            p.directory.remember((t.task_id, t.queue) for t in tasks)
            p.settler.attempts.remember(tasks)
            self._local.due(now + request.lease_s)
        return tasks

    async def complete(self, task_id: str, lease_id: str, result: TaskResult) -> Task:
        return await self._p.settler.complete(task_id, lease_id, result)

    async def complete_many(self, items: Sequence[Completion]) -> list[Settled | ConveyorError]:
        return await self._p.settler.complete_many(items)

    async def fail(
        self,
        task_id: str,
        lease_id: str,
        error: TaskError,
        *,
        retry: bool = True,
        retry_after_s: float | None = None,
    ) -> Task:
        return await self._p.settler.fail(
            task_id, lease_id, error, retry=retry, retry_after_s=retry_after_s
        )

    async def heartbeat(
        self, task_id: str, lease_id: str, extend_s: float | None = None
    ) -> Heartbeat:
        return await self._p.settler.heartbeat(task_id, lease_id, extend_s)

    async def cancel(self, task_id: str) -> Task:
        return await self._p.settler.cancel(task_id)

    async def requeue(self, task_id: str) -> Task:
        return await self._p.settler.requeue(task_id)

    async def append_events(self, task_id: str, lease_id: str, events: Sequence[NewEvent]) -> int:
        p = self._p
        now = self._clock()
        encoded = [_encode((e.event, now, msgspec.Raw(e.data_json))) for e in events]
        queue = await p.directory.queue_of(task_id)
        for _ in range(TRIES):
            reply = await p.link.run(
                "append_events",
                self._keys.queue(queue),
                self._keys.prefix,
                task_id,
                lease_id,
                now,
                *encoded,
            )
            if reply[0] == b"ok":
                return int(reply[1])
            if reply[0] == b"moved":  # the domain says which LeaseLost
                lifecycle.check_lease(State(task_id, reply[1]), lease_id, now)
            else:
                queue = await p.settler.relocate(task_id, queue)
        raise Conflict(f"task {task_id} kept changing; try again")

    async def list_events(
        self, task_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[TaskEvent]:
        p = self._p
        queue = await p.directory.queue_of(task_id)
        for _ in range(TRIES):
            base = self._keys.queue(queue)
            batch = p.link.batch()
            batch.call("EXISTS", f"{base}t:{task_id}")
            batch.call("LRANGE", f"{base}e:{task_id}", after, after + max(limit, 0) - 1)
            exists, raws = await batch.run()
            if exists:
                if limit <= 0:
                    return []
                return [
                    TaskEvent(after + offset + 1, name, data, created_at)
                    for offset, (name, created_at, data) in enumerate(map(_event.decode, raws))
                ]
            queue = await p.settler.relocate(task_id, queue)
        raise NotFound(f"task {task_id} does not exist")

    async def get_task(self, task_id: str) -> Task:
        p = self._p
        queue = await p.directory.queue_of(task_id)
        for _ in range(TRIES):
            row = await p.link.call("HMGET", f"{self._keys.queue(queue)}t:{task_id}", *ROW)
            if row[0] is not None:
                return row_task(queue, row)
            queue = await p.settler.relocate(task_id, queue)
        raise NotFound(f"task {task_id} does not exist")

    async def list_tasks(
        self,
        queue: str,
        status: TaskStatus | None = None,
        *,
        after: str | None = None,
        limit: int = 100,
    ) -> TaskPage:
        start = parse_cursor(after)
        statuses = list(TaskStatus) if status is None else [status]
        indexes = ["queued" if s is TaskStatus.QUEUED else f"s:{s.value}" for s in statuses]
        return await self._page(queue, start, limit, indexes, True)

    async def _page(
        self, queue: str, start: int, limit: int, indexes: list[str], check: bool
    ) -> TaskPage:
        limit = max(limit, 0)
        try:
            reply = await self._p.link.run(
                "list",
                self._keys.queue(queue),
                self._keys.prefix,
                start,
                limit + 1,
                "1" if check else "0",
                *indexes,
            )
        except ResponseError as exc:
            if str(exc).startswith("NOQUEUE"):
                raise NotFound(f"queue {queue!r} does not exist") from None
            raise
        tasks = [to_task(queue, flat) for _, flat in reply[:limit]]
        cursor = str(int(float(reply[limit - 1][0]))) if len(reply) > limit > 0 else None
        return TaskPage(tasks=tasks, next_cursor=cursor)

    # ---- batches ----
    async def batch_counts(self, batch_id: str) -> BatchCounts:
        p = self._p
        queue = await p.directory.batch_queue(batch_id)
        if queue is None:
            return BatchCounts(0, 0, 0, 0)
        counts = await p.link.call("HGETALL", f"{self._keys.queue(queue)}bn:{batch_id}")
        total = completed = failed = not_run = 0
        for field, value in fields(counts).items():
            status_text, _, code_text = field.decode().partition(":")
            n = int(value)
            total += n
            status = STATUSES[status_text.encode()]
            if not status.finished:
                continue
            ended = outcome(status, int(code_text) if code_text else None)
            if ended is Outcome.COMPLETED:
                completed += n
            elif ended is Outcome.FAILED:
                failed += n
            else:
                not_run += n
        return BatchCounts(total, completed, failed, not_run)

    async def batch_tasks(
        self, batch_id: str, *, after: str | None = None, limit: int = 1000
    ) -> TaskPage:
        start = parse_cursor(after)
        queue = await self._p.directory.batch_queue(batch_id)
        if queue is None:
            return TaskPage(tasks=[], next_cursor=None)
        return await self._page(queue, start, limit, [f"b:{batch_id}"], False)

    async def cancel_batch(self, batch_id: str, limit: int = 500) -> int:
        p = self._p
        queue = await p.directory.batch_queue(batch_id)
        if queue is None or limit <= 0:
            return 0
        now = self._clock()
        reply = await p.link.run(
            "batch_to_cancel", self._keys.queue(queue), self._keys.prefix, batch_id, limit
        )
        entries: list[tuple[str, str, State, Step]] = []
        for raw_id, values in reply:
            state = State(raw_id.decode(), values)
            action = lifecycle.cancel_action(state)
            if action is lifecycle.CancelAction.MARK:
                step = Step("mark")
            elif action is lifecycle.CancelAction.END:
                step = Step("settle", lifecycle.Outcome(TaskStatus.CANCELLED, completed_at=now))
            else:
                continue
            entries.append((queue, state.task_id, state, step))
        if not entries:
            return 0
        answers = await p.settler.apply_many(entries)
        return sum(kind == b"ok" for kind, _ in answers)

    # ---- callbacks ----
    async def claim_callbacks(self, limit: int, hold_s: float) -> list[DueCallback]:
        return await maintenance.claim_callbacks(
            self._p.link, self._keys, self._clock, limit, hold_s
        )

    async def settle_callback(self, task_id: str, *, retry_at: float | None) -> None:
        p = self._p
        try:
            queue = await p.directory.queue_of(task_id)
        except NotFound:
            return
        await p.link.run(
            "settle_callback",
            self._keys.queue(queue),
            self._keys.prefix,
            task_id,
            "" if retry_at is None else retry_at,
        )
        if retry_at is not None:
            self._local.tasks_changed(())

    async def wait_for_callbacks(self, timeout_s: float) -> None:
        await self._local.wait_for_callbacks(timeout_s)

    # ---- records ----
    async def put_record(self, record: Record) -> Record:
        return await self._p.records.put(record)

    async def get_record(self, kind: str, record_id: str) -> Record | None:
        return await self._p.records.get(kind, record_id)

    async def list_records(
        self,
        kind: str,
        project: str,
        *,
        after: str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[Record]:
        return await self._p.records.page(
            kind, f"p:{project}", after=after, limit=limit, newest_first=newest_first
        )

    async def replace_record(self, record: Record, expected_version: int) -> Record:
        return await self._p.records.replace(record, expected_version)

    async def delete_record(self, kind: str, record_id: str) -> bool:
        return await self._p.records.delete(kind, record_id)

    async def list_active(
        self, kind: str, limit: int = 1000, *, after: str | None = None
    ) -> list[Record]:
        return await self._p.records.page(
            kind, "active", after=after, limit=limit, newest_first=False
        )

    # ---- maintenance and waiting ----
    async def sweep(self) -> SweepReport:
        p = self._p
        report = await maintenance.sweep(p.link, self._keys, p.settler, self._clock)
        self._local.swept(report.next_due_at)
        return report

    def watch(self, queues: Sequence[str]) -> AbstractAsyncContextManager[WorkWatch]:
        return self._p.subscriber.watch([self._keys.work_channel(q) for q in queues])

    def watch_task(self, task_id: str) -> AbstractAsyncContextManager[WorkWatch]:
        return self._p.subscriber.watch([self._keys.task_channel(task_id)])

    async def wait_for_due(self, timeout_s: float) -> None:
        await self._local.wait_for_due(timeout_s)


class _Parts:
    """What an open engine holds."""

    def __init__(self, engine: RedisEngine, link: Link, subscriber: Subscriber) -> None:
        keys = engine._keys
        self.link = link
        self.subscriber = subscriber
        self.directory = Directory(link, keys)
        self.queues = Queues(link, keys, engine._clock)
        self.records = Records(link, keys)
        self.settler = Settler(
            link, keys, self.directory, engine._clock, engine._rng, engine._local
        )


def _conflict(task_id: str) -> IdempotencyConflict:
    return IdempotencyConflict(f"task {task_id} exists with other content; use a new task_id")


def _put_error(queue: str, error: ResponseError) -> ConveyorError | ResponseError:
    text = str(error)
    if text.startswith("NOQUEUE"):
        return NotFound(f"queue {queue!r} does not exist")
    if text.startswith("CONFLICT"):
        return _conflict(text.partition(" ")[2])
    return error
