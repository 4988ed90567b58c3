"""The engine interface: the queue verbs every storage engine implements atomically.

Engines trust their input: the service validates through the domain and hands engines
resolved values (NewTask, TakeRequest). Engines start no timers; the service runs `sweep`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import NamedTuple, Protocol

import msgspec

from conveyor.domain.events import NewEvent, TaskEvent
from conveyor.domain.queues import QueueConfig, QueueUpdate, Source
from conveyor.domain.states import TaskStatus
from conveyor.domain.strategies import Strategy
from conveyor.domain.tasks import NewTask, Task, TaskError, TaskResult
from conveyor.errors import ConveyorError, InvalidInput


class TakeRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A worker's take: up to `size` tasks from `sources` by `strategy`, leased for `lease_s`."""

    sources: tuple[Source, ...]
    strategy: Strategy = Strategy.FIFO
    size: int = 1
    lease_s: float = 60.0
    worker_id: str = ""


class Completion(NamedTuple):
    """One item of a batched complete."""

    task_id: str
    lease_id: str
    result: TaskResult


class Settled(NamedTuple):
    """A completion that took effect: the task's queue and the state it ended in."""

    queue: str
    status: TaskStatus


class DueCallback(NamedTuple):
    """An ended task whose callback is owed, and which delivery attempt this is (from 1)."""

    task: Task
    attempt: int


class Heartbeat(NamedTuple):
    """A heartbeat's answer: the new expiry, or `cancelled` when the task was cancelled."""

    lease_expires_at: float | None
    cancelled: bool


class LevelStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counts per state of one level, and the age of its oldest queued task."""

    level: int
    counts: dict[TaskStatus, int]
    oldest_queued_age_s: float | None


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    """A queue with its counts per level (levels with no tasks are left out)."""

    queue: QueueConfig
    levels: list[LevelStats]

    def total(self, status: TaskStatus) -> int:
        """The number of tasks in `status` across all levels."""
        return sum(level.counts.get(status, 0) for level in self.levels)


class BatchCounts(NamedTuple):
    """A batch's tasks by how they ended (domain/batch_lines.py `outcome` decides)."""

    total: int  # the batch's tasks stored so far
    completed: int  # succeeded with a 2xx result
    failed: int  # succeeded with another status code, or failed
    not_run: int  # cancelled or expired without a result

    @property
    def unfinished(self) -> int:
        """Tasks still queued, scheduled or running."""
        return self.total - self.completed - self.failed - self.not_run


class TaskPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a task listing; pass `next_cursor` as `after` for the next page."""

    tasks: list[Task]
    next_cursor: str | None


class SweepReport(msgspec.Struct, kw_only=True):
    """What one sweep did, and when the next thing falls due (None: nothing pending)."""

    promoted: int = 0
    requeued: int = 0
    dead_lettered: int = 0
    cancelled: int = 0
    expired: int = 0
    purged: int = 0
    next_due_at: float | None = None

    def lease_expired(self, status: TaskStatus) -> None:
        """Count a task whose lease expired by where it went."""
        if status is TaskStatus.QUEUED:
            self.requeued += 1
        elif status is TaskStatus.FAILED:
            self.dead_lettered += 1
        else:
            self.cancelled += 1


class Record(msgspec.Struct, frozen=True):
    """A small JSON object kept for the service (a file, a batch), not a task.

    `id` is time-ordered, so id order is creation order. `active` records are the ones
    maintenance works through (batches still running, files that expire); the engine sets
    `version` (1 when stored, +1 at every replace) so that writers can compare and set.
    """

    kind: str
    id: str
    project: str
    created_at: float
    body: bytes
    active: bool = False
    version: int = 0


class WorkWatch(Protocol):
    """Interest in new work in some queues, registered before the take it guards."""

    async def wait(self, timeout_s: float) -> bool:
        """Wait until work may have arrived since the last wait (True) or `timeout_s` (False)."""
        ...


class Engine(Protocol):
    """Storage for queues and tasks; each method is atomic."""

    # lifecycle
    async def open(self) -> None:
        """Connect and create or migrate the schema. Raises EngineUnavailable."""
        ...

    async def close(self) -> None:
        """Release every resource; pending writes finish first."""
        ...

    async def ready(self) -> bool:
        """True if the store answers now."""
        ...

    # queues
    async def register_queue(self, config: QueueConfig, *, replace: bool = True) -> QueueConfig:
        """Create the queue, or replace its defaults (keeping created_at) if `replace`."""
        ...

    async def get_queue(self, name: str) -> QueueConfig:
        """The queue's config. Raises NotFound."""
        ...

    async def list_queues(self) -> list[QueueConfig]:
        """Every queue, by name."""
        ...

    async def update_queue(self, name: str, update: QueueUpdate) -> QueueConfig:
        """Apply `update` (pause, resume, defaults). Raises NotFound, InvalidInput."""
        ...

    async def queue_stats(self, name: str) -> QueueStats:
        """Counts per level and state. Raises NotFound."""
        ...

    async def obliterate_queue(self, name: str, *, force: bool = False) -> int:
        """Delete the queue and its tasks; returns tasks deleted. Raises NotFound, Conflict."""
        ...

    # tasks
    async def put(self, tasks: Sequence[NewTask]) -> list[bool]:
        """Store all or none; per task True if created, False if an identical one existed.

        Raises IdempotencyConflict when an id exists with other content; nothing is stored.
        The tasks' queues must exist.
        """
        ...

    async def take(self, request: TakeRequest) -> list[Task]:
        """Lease up to `request.size` queued tasks by the request's strategy; paused give none."""
        ...

    async def complete(self, task_id: str, lease_id: str, result: TaskResult) -> Task:
        """Record the result once; a cancel-requested task ends cancelled.

        Raises NotFound, LeaseLost.
        """
        ...

    async def complete_many(self, items: Sequence[Completion]) -> list[Settled | ConveyorError]:
        """Complete each item on its own terms, in one round trip.

        Per item: where the task ended (queue and status), or the NotFound or LeaseLost that
        refused it (refusing one changes nothing for the others).
        """
        ...

    async def fail(
        self,
        task_id: str,
        lease_id: str,
        error: TaskError,
        *,
        retry: bool = True,
        retry_after_s: float | None = None,
    ) -> Task:
        """End the attempt: retry after backoff, or dead-letter. Raises NotFound, LeaseLost."""
        ...

    async def heartbeat(
        self, task_id: str, lease_id: str, extend_s: float | None = None
    ) -> Heartbeat:
        """Extend the lease by `extend_s` (default: its original length) from now.

        A cancel-requested task ends cancelled and answers `cancelled`. Raises NotFound,
        LeaseLost.
        """
        ...

    async def cancel(self, task_id: str) -> Task:
        """Cancel a queued or scheduled task; mark a running one. Raises NotFound,
        InvalidTransition for a task that already ended otherwise."""
        ...

    async def requeue(self, task_id: str) -> Task:
        """Put a failed task back with fresh attempts. Raises NotFound, InvalidTransition."""
        ...

    async def append_events(self, task_id: str, lease_id: str, events: Sequence[NewEvent]) -> int:
        """Add events to a running task under its lease; the id of the last one.

        Raises NotFound, LeaseLost. Wakes the task's watchers.
        """
        ...

    async def list_events(
        self, task_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[TaskEvent]:
        """The task's events with ids above `after`, oldest first. Raises NotFound."""
        ...

    async def get_task(self, task_id: str) -> Task:
        """The task. Raises NotFound."""
        ...

    async def list_tasks(
        self,
        queue: str,
        status: TaskStatus | None = None,
        *,
        after: str | None = None,
        limit: int = 100,
    ) -> TaskPage:
        """Tasks of `queue` (in `status`, if given) in the order they were put, from `after`."""
        ...

    # batches: the tasks that carry a batch_id
    async def batch_counts(self, batch_id: str) -> BatchCounts:
        """The batch's tasks counted by how they ended (all zero for an unknown batch)."""
        ...

    async def batch_tasks(
        self, batch_id: str, *, after: str | None = None, limit: int = 1000
    ) -> TaskPage:
        """The batch's tasks in the order they were put, from the cursor `after`."""
        ...

    async def cancel_batch(self, batch_id: str, limit: int = 500) -> int:
        """Cancel up to `limit` of the batch's queued and scheduled tasks and ask running
        ones to stop (each once); how many it acted on (0: nothing left to do)."""
        ...

    # callbacks (the outbox)
    async def claim_callbacks(self, limit: int, hold_s: float) -> list[DueCallback]:
        """Up to `limit` ended tasks whose callback is due, each held for `hold_s`.

        A held callback is not handed out again until `hold_s` passes, so one server
        delivers it; if that server dies, it falls due again.
        """
        ...

    async def settle_callback(self, task_id: str, *, retry_at: float | None) -> None:
        """Record a delivery: done or given up (`retry_at` None), or due again at `retry_at`."""
        ...

    async def wait_for_callbacks(self, timeout_s: float) -> None:
        """Return when a callback may have fallen due, or after `timeout_s`."""
        ...

    # records (files, batches)
    async def put_record(self, record: Record) -> Record:
        """Store a new record as version 1; the stored record. Raises Conflict if it exists."""
        ...

    async def get_record(self, kind: str, record_id: str) -> Record | None:
        """The record, or None."""
        ...

    async def list_records(
        self,
        kind: str,
        project: str,
        *,
        after: str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[Record]:
        """Up to `limit` of the project's records of `kind` in id order (descending when
        `newest_first`), starting after the id `after` in that order."""
        ...

    async def replace_record(self, record: Record, expected_version: int) -> Record:
        """Replace body and active if the stored version is `expected_version`; the stored
        record (version + 1). Raises NotFound, Conflict when the version moved."""
        ...

    async def delete_record(self, kind: str, record_id: str) -> bool:
        """Delete the record; True if it existed."""
        ...

    async def list_active(
        self, kind: str, limit: int = 1000, *, after: str | None = None
    ) -> list[Record]:
        """Up to `limit` records of `kind` flagged active, across projects, oldest first,
        from after the id `after`."""
        ...

    # maintenance and waiting
    async def sweep(self) -> SweepReport:
        """Promote due tasks, expire deadlines and leases, purge past retention."""
        ...

    def watch(self, queues: Sequence[str]) -> AbstractAsyncContextManager[WorkWatch]:
        """Register interest in work arriving in `queues` (names, all levels)."""
        ...

    def watch_task(self, task_id: str) -> AbstractAsyncContextManager[WorkWatch]:
        """Register interest in one task's events and end (register before the put)."""
        ...

    async def wait_for_due(self, timeout_s: float) -> None:
        """Return when something may fall due earlier than the last sweep said, or on timeout."""
        ...


def parse_cursor(after: str | None) -> int:
    """The position a listing cursor stands for (0: the start)."""
    if after is None:
        return 0
    # isdigit alone admits '²', which int() refuses; 18 digits keep within SQLite's INTEGER
    if not (after.isascii() and after.isdigit()) or len(after) > 18:
        raise InvalidInput(f"cursor {after!r:.80} is not one this server gave out", param="after")
    return int(after)
