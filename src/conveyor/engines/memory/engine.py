"""The memory engine: everything in one process's memory, for tests and throw-away runs.

Every verb runs without awaiting between reading and writing, so on one event loop each is
atomic without locks.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager

import msgspec

from conveyor.domain import lifecycle
from conveyor.domain.batch_lines import Outcome
from conveyor.domain.clock import Clock, system_clock
from conveyor.domain.events import NewEvent, TaskEvent
from conveyor.domain.ids import new_lease_id
from conveyor.domain.queues import QueueConfig, QueueUpdate
from conveyor.domain.states import TaskStatus
from conveyor.domain.strategies import Rotation, select
from conveyor.domain.tasks import NewTask, Task, TaskError, TaskResult
from conveyor.engines.engine import (
    BatchCounts,
    Completion,
    DueCallback,
    Heartbeat,
    LevelStats,
    QueueStats,
    Settled,
    SweepReport,
    TakeRequest,
    TaskPage,
    WorkWatch,
    parse_cursor,
)
from conveyor.engines.engine import Record as StoredRecord
from conveyor.engines.memory.records import Records
from conveyor.engines.memory.store import Record, Store
from conveyor.engines.notifier import LocalNotifier
from conveyor.errors import (
    Conflict,
    ConveyorError,
    EngineUnavailable,
    IdempotencyConflict,
    LeaseLost,
    NotFound,
)

PURGE_BATCH = 10_000


class MemoryEngine:
    """Queues and tasks in memory; lost when the process ends."""

    def __init__(self, clock: Clock = system_clock, rng: random.Random | None = None) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._queues: dict[str, QueueConfig] = {}
        self._store = Store()
        self._records = Records()
        self._rotation = Rotation()
        self._notifier = LocalNotifier()
        self._open = False

    # ---- lifecycle ----
    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    async def ready(self) -> bool:
        return self._open

    def _check_open(self) -> None:
        if not self._open:
            raise EngineUnavailable("the memory engine is closed")

    # ---- queues ----
    async def register_queue(self, config: QueueConfig, *, replace: bool = True) -> QueueConfig:
        self._check_open()
        existing = self._queues.get(config.name)
        if existing is not None:
            if not replace:
                return existing
            config = msgspec.structs.replace(config, created_at=existing.created_at)
        else:
            config = msgspec.structs.replace(config, created_at=self._clock())
        self._queues[config.name] = config
        if existing is not None and existing.paused and not config.paused:
            self._notifier.work_arrived([config.name])
        return config

    async def get_queue(self, name: str) -> QueueConfig:
        self._check_open()
        return self._queue(name)

    def _queue(self, name: str) -> QueueConfig:
        try:
            return self._queues[name]
        except KeyError:
            raise NotFound(f"queue {name!r} does not exist") from None

    async def list_queues(self) -> list[QueueConfig]:
        self._check_open()
        return [self._queues[name] for name in sorted(self._queues)]

    async def update_queue(self, name: str, update: QueueUpdate) -> QueueConfig:
        self._check_open()
        config = update.apply(self._queue(name))
        return await self.register_queue(config)

    async def queue_stats(self, name: str) -> QueueStats:
        self._check_open()
        config = self._queue(name)
        now = self._clock()
        levels: list[LevelStats] = []
        for level in range(config.max_level + 1):
            counts = {
                status: n
                for status in TaskStatus
                if (n := self._store.counts.get((name, level, status), 0))
            }
            if not counts:
                continue
            oldest = self._store.oldest((name, level), 1)  # type: ignore[arg-type]
            age = None if not oldest else now - self._store.by_seq[oldest[0].seq].run_at
            levels.append(LevelStats(level=level, counts=counts, oldest_queued_age_s=age))
        return QueueStats(queue=config, levels=levels)

    async def obliterate_queue(self, name: str, *, force: bool = False) -> int:
        self._check_open()
        self._queue(name)
        store = self._store
        if store.has_running(name) and not force:
            raise Conflict(f"queue {name!r} has running tasks; pass force to obliterate it anyway")
        doomed = [r for r in store.by_id.values() if r.queue == name]
        for record in doomed:
            store.delete(record)
        del self._queues[name]
        return len(doomed)

    # ---- tasks ----
    async def put(self, tasks: Sequence[NewTask]) -> list[bool]:
        self._check_open()
        store = self._store
        fresh: dict[str, NewTask] = {}
        created: list[bool] = []
        for new in tasks:
            self._queue(new.queue)
            known = store.by_id.get(new.task_id) or fresh.get(new.task_id)
            if known is not None and known.fingerprint != new.fingerprint:
                raise IdempotencyConflict(
                    f"task {new.task_id} exists with other content; use a new task_id"
                )
            created.append(known is None)
            if known is None:
                fresh[new.task_id] = new
        queues: set[str] = set()
        for new in fresh.values():
            store.insert(new)
            if new.status is TaskStatus.QUEUED:
                queues.add(new.queue)
            else:
                self._notifier.due(new.run_at)
            self._notifier.due(new.expires_at)
        self._notifier.work_arrived(queues)
        return created

    async def take(self, request: TakeRequest) -> list[Task]:
        self._check_open()
        sources = [s for s in request.sources if not self._is_paused(s.queue)]
        chosen = select(request.strategy, sources, request.size, self._store, self._rotation)
        now = self._clock()
        expires_at = now + request.lease_s
        taken: list[Task] = []
        for candidate in chosen:
            record = self._store.by_seq[candidate.seq]
            self._store.move(
                record,
                TaskStatus.RUNNING,
                attempts=record.attempts + 1,
                started_at=now,
                lease_id=new_lease_id(),
                worker_id=request.worker_id,
                lease_expires_at=expires_at,
                lease_s=request.lease_s,
            )
            taken.append(record.to_task())
        if taken:
            self._notifier.due(expires_at)
        return taken

    def _is_paused(self, name: str) -> bool:
        config = self._queues.get(name)
        return config is None or config.paused

    def _record(self, task_id: str) -> Record:
        try:
            return self._store.by_id[task_id]
        except KeyError:
            raise NotFound(f"task {task_id} does not exist") from None

    def _apply(self, record: Record, outcome: lifecycle.Outcome) -> None:
        """Write an outcome: the lease ends, the task moves, and waiters hear of it."""
        self._store.move(
            record,
            outcome.status,
            lease_id=None,
            lease_expires_at=None,
            lease_s=None,
            completed_at=outcome.completed_at,
            result=outcome.result or record.result,
            error=outcome.error or record.error,
            run_at=record.run_at if outcome.run_at is None else outcome.run_at,
        )
        if outcome.status is TaskStatus.QUEUED:
            self._notifier.work_arrived([record.queue])
        elif outcome.status is TaskStatus.SCHEDULED:
            self._notifier.due(record.run_at)
        elif outcome.status.finished:
            self._notifier.tasks_changed([record.task_id])
        # the outbox: a task with a callback URL owes one when it ends
        owed = outcome.completed_at if record.callback_url and outcome.status.finished else None
        record.callback_attempts = 0
        self._store.owe_callback(record, owed)

    async def complete(self, task_id: str, lease_id: str, result: TaskResult) -> Task:
        self._check_open()
        record = self._record(task_id)
        self._apply(record, lifecycle.completed(record, lease_id, result, self._clock()))
        return record.to_task()

    async def complete_many(self, items: Sequence[Completion]) -> list[Settled | ConveyorError]:
        self._check_open()
        now = self._clock()
        settled: list[Settled | ConveyorError] = []
        for item in items:
            try:
                record = self._record(item.task_id)
                self._apply(record, lifecycle.completed(record, item.lease_id, item.result, now))
            except (NotFound, LeaseLost) as exc:
                settled.append(exc)
            else:
                settled.append(Settled(record.queue, record.status))
        return settled

    async def fail(
        self,
        task_id: str,
        lease_id: str,
        error: TaskError,
        *,
        retry: bool = True,
        retry_after_s: float | None = None,
    ) -> Task:
        self._check_open()
        record = self._record(task_id)
        outcome = lifecycle.failed(
            record,
            lease_id,
            error,
            retry=retry,
            retry_after_s=retry_after_s,
            now=self._clock(),
            rng=self._rng,
        )
        self._apply(record, outcome)
        return record.to_task()

    async def heartbeat(
        self, task_id: str, lease_id: str, extend_s: float | None = None
    ) -> Heartbeat:
        self._check_open()
        record = self._record(task_id)
        now = self._clock()
        outcome = lifecycle.heartbeat_cancels(record, lease_id, now)
        if outcome is not None:
            self._apply(record, outcome)
            return Heartbeat(lease_expires_at=None, cancelled=True)
        expires_at = now + (extend_s if extend_s is not None else (record.lease_s or 0.0))
        self._store.extend_lease(record, expires_at)
        return Heartbeat(lease_expires_at=expires_at, cancelled=False)

    async def cancel(self, task_id: str) -> Task:
        self._check_open()
        record = self._record(task_id)
        action = lifecycle.cancel_action(record)
        if action is lifecycle.CancelAction.MARK:
            record.cancel_requested = True
        elif action is lifecycle.CancelAction.END:
            self._apply(record, lifecycle.Outcome(TaskStatus.CANCELLED, completed_at=self._clock()))
        return record.to_task()

    async def requeue(self, task_id: str) -> Task:
        self._check_open()
        record = self._record(task_id)
        outcome = lifecycle.requeued(record, self._clock())
        record.attempts = 0
        record.error = None
        self._apply(record, outcome)
        return record.to_task()

    async def append_events(self, task_id: str, lease_id: str, events: Sequence[NewEvent]) -> int:
        self._check_open()
        record = self._record(task_id)
        now = self._clock()
        lifecycle.check_lease(record, lease_id, now)
        start = len(record.events)
        record.events.extend(
            TaskEvent(start + offset + 1, e.event, msgspec.json.decode(e.data_json), now)
            for offset, e in enumerate(events)
        )
        self._notifier.tasks_changed([task_id])
        return len(record.events)

    async def list_events(
        self, task_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[TaskEvent]:
        self._check_open()
        return self._record(task_id).events[after : after + limit]

    async def get_task(self, task_id: str) -> Task:
        self._check_open()
        return self._record(task_id).to_task()

    async def list_tasks(
        self,
        queue: str,
        status: TaskStatus | None = None,
        *,
        after: str | None = None,
        limit: int = 100,
    ) -> TaskPage:
        self._check_open()
        self._queue(queue)
        start = parse_cursor(after)
        statuses = list(TaskStatus) if status is None else [status]
        # each status index is in seq order; merging them gives the queue's order
        runs = [
            self._store.by_status[(queue, s)].irange(minimum=start, inclusive=(False, True))
            for s in statuses
            if (queue, s) in self._store.by_status
        ]
        seqs = list(itertools.islice(heapq.merge(*runs), limit + 1))
        page = [self._store.by_seq[seq].to_task() for seq in seqs[:limit]]
        cursor = str(seqs[limit - 1]) if len(seqs) > limit else None
        return TaskPage(tasks=page, next_cursor=cursor)

    # ---- batches ----
    async def batch_counts(self, batch_id: str) -> BatchCounts:
        self._check_open()
        ended: Mapping[Outcome | None, int] = self._store.batch_outcomes.get(batch_id, {})
        return BatchCounts(
            sum(ended.values()),
            ended.get(Outcome.COMPLETED, 0),
            ended.get(Outcome.FAILED, 0),
            ended.get(Outcome.NOT_RUN, 0),
        )

    async def batch_tasks(
        self, batch_id: str, *, after: str | None = None, limit: int = 1000
    ) -> TaskPage:
        self._check_open()
        start = parse_cursor(after)
        seqs = self._store.batches.get(batch_id)
        found = (
            []
            if seqs is None
            else list(
                itertools.islice(seqs.irange(minimum=start, inclusive=(False, True)), limit + 1)
            )
        )
        page = [self._store.by_seq[seq].to_task() for seq in found[:limit]]
        cursor = str(found[limit - 1]) if len(found) > limit else None
        return TaskPage(tasks=page, next_cursor=cursor)

    async def cancel_batch(self, batch_id: str, limit: int = 500) -> int:
        self._check_open()
        now = self._clock()
        acted = 0
        for seq in list(self._store.batches.get(batch_id, ())):
            if acted == limit:
                break
            record = self._store.by_seq[seq]
            if record.status in (TaskStatus.QUEUED, TaskStatus.SCHEDULED):
                self._apply(record, lifecycle.Outcome(TaskStatus.CANCELLED, completed_at=now))
            elif record.status is TaskStatus.RUNNING and not record.cancel_requested:
                record.cancel_requested = True
                self._notifier.tasks_changed([record.task_id])
            else:
                continue
            acted += 1
        return acted

    # ---- callbacks ----
    async def claim_callbacks(self, limit: int, hold_s: float) -> list[DueCallback]:
        self._check_open()
        now = self._clock()
        store = self._store
        claimed: list[DueCallback] = []
        while store.callbacks and store.callbacks[0][0] <= now and len(claimed) < limit:
            record = store.by_seq[store.callbacks[0][1]]
            store.owe_callback(record, now + hold_s)
            record.callback_attempts += 1
            claimed.append(DueCallback(record.to_task(), record.callback_attempts))
        return claimed

    async def settle_callback(self, task_id: str, *, retry_at: float | None) -> None:
        self._check_open()
        record = self._store.by_id.get(task_id)
        if record is not None and record.callback_due_at is not None:
            self._store.owe_callback(record, retry_at)

    async def wait_for_callbacks(self, timeout_s: float) -> None:
        await self._notifier.wait_for_callbacks(timeout_s)

    # ---- records ----
    async def put_record(self, record: StoredRecord) -> StoredRecord:
        self._check_open()
        return self._records.put(record)

    async def get_record(self, kind: str, record_id: str) -> StoredRecord | None:
        self._check_open()
        return self._records.get(kind, record_id)

    async def list_records(
        self,
        kind: str,
        project: str,
        *,
        after: str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[StoredRecord]:
        self._check_open()
        return self._records.page(kind, project, after, limit, newest_first)

    async def replace_record(self, record: StoredRecord, expected_version: int) -> StoredRecord:
        self._check_open()
        return self._records.replace(record, expected_version)

    async def delete_record(self, kind: str, record_id: str) -> bool:
        self._check_open()
        return self._records.delete(kind, record_id)

    async def list_active(
        self, kind: str, limit: int = 1000, *, after: str | None = None
    ) -> list[StoredRecord]:
        self._check_open()
        return self._records.active(kind, limit, after)

    # ---- maintenance ----
    async def sweep(self) -> SweepReport:
        self._check_open()
        now = self._clock()
        store = self._store
        report = SweepReport()
        while store.scheduled and store.scheduled[0][0] <= now:
            record = store.by_seq[store.scheduled[0][1]]
            store.move(record, TaskStatus.QUEUED)
            self._notifier.work_arrived([record.queue])
            report.promoted += 1
        while store.deadlines and store.deadlines[0][0] <= now:
            record = store.by_seq[store.deadlines[0][1]]
            self._apply(record, lifecycle.deadline_passed(now))
            report.expired += 1
        while store.leases and store.leases[0][0] <= now:
            record = store.by_seq[store.leases[0][1]]
            outcome = lifecycle.lease_expired(record, now)
            self._apply(record, outcome)
            report.lease_expired(outcome.status)
        report.purged = self._purge(now)
        report.next_due_at = store.next_due_at()
        self._notifier.swept(report.next_due_at)
        return report

    def _purge(self, now: float) -> int:
        purged = 0
        for name, finished in list(self._store.finished.items()):
            config = self._queues.get(name)
            if config is None:
                continue
            cutoff = now - config.retention_s
            index = 0  # entries before it belong to batches still running: kept
            while index < len(finished) and finished[index][0] <= cutoff and purged < PURGE_BATCH:
                record = self._store.by_seq[finished[index][1]]
                if record.batch_id is not None and self._running_batch(record.batch_id):
                    index += 1
                    continue
                self._store.delete(record)
                purged += 1
        return purged

    def _running_batch(self, batch_id: str) -> bool:
        """True while the batch's files are not written yet: its results must stay."""
        batch = self._records.get("batch", batch_id)
        return batch is not None and batch.active

    def watch(self, queues: Sequence[str]) -> AbstractAsyncContextManager[WorkWatch]:
        return self._notifier.watch(queues)

    def watch_task(self, task_id: str) -> AbstractAsyncContextManager[WorkWatch]:
        return self._notifier.watch_task(task_id)

    async def wait_for_due(self, timeout_s: float) -> None:
        await self._notifier.wait_for_due(timeout_s)
