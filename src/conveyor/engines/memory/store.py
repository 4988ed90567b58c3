"""The memory engine's records and the indexes that keep every verb cheap."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgspec
from sortedcontainers import SortedDict, SortedList

from conveyor.domain.batch_lines import Outcome, outcome
from conveyor.domain.events import TaskEvent
from conveyor.domain.queues import Lane
from conveyor.domain.retry import Backoff
from conveyor.domain.states import FINISHED, TaskStatus
from conveyor.domain.strategies import Candidate
from conveyor.domain.tasks import NewTask, ResponseMode, Task, TaskError, TaskResult


class Record:
    """A stored task; only `Store` changes the fields its indexes depend on."""

    __slots__ = (
        "attempts",
        "backoff",
        "batch_id",
        "callback_attempts",
        "callback_due_at",
        "callback_url",
        "cancel_requested",
        "completed_at",
        "created_at",
        "custom_id",
        "data_json",
        "endpoint",
        "error",
        "events",
        "expires_at",
        "fingerprint",
        "group",
        "lease_expires_at",
        "lease_id",
        "lease_s",
        "level",
        "max_attempts",
        "metadata_json",
        "queue",
        "response_mode",
        "result",
        "run_at",
        "seq",
        "started_at",
        "status",
        "task_id",
        "timeout_s",
        "worker_id",
    )

    def __init__(self, new: NewTask, seq: int) -> None:
        self.seq = seq
        self.task_id = new.task_id
        self.queue = new.queue
        self.level = new.level
        self.endpoint = new.endpoint
        self.data_json = new.data_json
        self.status = new.status
        self.response_mode: ResponseMode = new.response_mode
        self.callback_url = new.callback_url
        self.timeout_s = new.timeout_s
        self.custom_id = new.custom_id
        self.batch_id = new.batch_id
        self.group = new.group
        self.metadata_json = new.metadata_json
        self.attempts = 0
        self.max_attempts = new.max_attempts
        self.backoff: Backoff = new.backoff
        self.run_at = new.run_at
        self.created_at = new.created_at
        self.started_at: float | None = None
        self.completed_at: float | None = None
        self.expires_at = new.expires_at
        self.fingerprint = new.fingerprint
        self.result: TaskResult | None = None
        self.error: TaskError | None = None
        self.lease_id: str | None = None
        self.worker_id: str | None = None
        self.lease_expires_at: float | None = None
        self.lease_s: float | None = None
        self.cancel_requested = False
        self.events: list[TaskEvent] = []
        self.callback_due_at: float | None = None
        self.callback_attempts = 0

    @property
    def lane(self) -> Lane:
        return Lane(self.queue, self.level)

    def to_task(self) -> Task:
        metadata: dict[str, Any] | None = (
            None if self.metadata_json is None else msgspec.json.decode(self.metadata_json)
        )
        return Task(
            task_id=self.task_id,
            queue=self.queue,
            level=self.level,
            endpoint=self.endpoint,
            data=msgspec.json.decode(self.data_json),
            status=self.status,
            response_mode=self.response_mode,
            callback_url=self.callback_url,
            timeout_s=self.timeout_s,
            custom_id=self.custom_id,
            batch_id=self.batch_id,
            group=self.group,
            metadata=metadata,
            attempts=self.attempts,
            max_attempts=self.max_attempts,
            backoff=self.backoff,
            run_at=self.run_at,
            created_at=self.created_at,
            started_at=self.started_at,
            completed_at=self.completed_at,
            expires_at=self.expires_at,
            result=self.result,
            error=self.error,
            lease_id=self.lease_id,
            worker_id=self.worker_id,
            lease_expires_at=self.lease_expires_at,
            cancel_requested=self.cancel_requested,
        )


class Store:
    """Tasks by id and by seq, with one index per question the engine asks."""

    def __init__(self) -> None:
        self.by_id: dict[str, Record] = {}
        self.by_seq: dict[int, Record] = {}
        self.next_seq = 1
        self.queued: defaultdict[Lane, SortedList] = defaultdict(SortedList)
        self.queued_by_group: defaultdict[tuple[Lane, str], SortedList] = defaultdict(SortedList)
        self.groups: defaultdict[Lane, SortedDict] = defaultdict(SortedDict)
        self.running: defaultdict[str, int] = defaultdict(int)
        self.scheduled = SortedList()  # (run_at, seq)
        self.leases = SortedList()  # (lease_expires_at, seq)
        self.deadlines = SortedList()  # (expires_at, seq) of unfinished tasks
        self.finished: defaultdict[str, SortedList] = defaultdict(SortedList)  # (completed_at, seq)
        self.callbacks = SortedList()  # (callback_due_at, seq) of callbacks owed
        self.by_status: defaultdict[tuple[str, TaskStatus], SortedList] = defaultdict(SortedList)
        self.counts: defaultdict[tuple[str, int, TaskStatus], int] = defaultdict(int)
        self.batches: defaultdict[str, SortedList] = defaultdict(SortedList)  # seqs per batch
        # per batch: tasks by how they ended (None: unfinished), kept by _enter and _leave
        self.batch_outcomes: defaultdict[str, defaultdict[Outcome | None, int]] = defaultdict(
            lambda: defaultdict(int)
        )

    # ---- LaneSource ----
    def has_queued(self, lane: Lane) -> bool:
        return bool(self.queued.get(lane))

    def oldest(self, lane: Lane, limit: int, group: str | None = None) -> list[Candidate]:
        seqs = self.queued.get(lane) if group is None else self.queued_by_group.get((lane, group))
        if not seqs:
            return []
        records = (self.by_seq[seq] for seq in seqs.islice(0, limit))
        return [Candidate(r.seq, r.task_id, lane, r.group) for r in records]

    def next_group(self, lane: Lane, after: str | None) -> str | None:
        groups = self.groups.get(lane)
        if not groups:
            return None
        index = 0 if after is None else groups.bisect_right(after)
        return groups.keys()[index] if index < len(groups) else None

    def has_running(self, queue: str) -> bool:
        return self.running.get(queue, 0) > 0

    # ---- changes ----
    def insert(self, new: NewTask) -> Record:
        record = Record(new, self.next_seq)
        self.next_seq += 1
        self.by_id[record.task_id] = record
        self.by_seq[record.seq] = record
        if record.batch_id is not None:
            self.batches[record.batch_id].add(record.seq)
        self._enter(record)
        return record

    def delete(self, record: Record) -> None:
        self.owe_callback(record, None)
        self._leave(record)
        del self.by_id[record.task_id]
        del self.by_seq[record.seq]
        if record.batch_id is not None:
            seqs = self.batches[record.batch_id]
            seqs.remove(record.seq)
            if not seqs:
                del self.batches[record.batch_id]

    def move(self, record: Record, status: TaskStatus, **fields: Any) -> None:
        """Change `record`'s status and `fields` together, keeping every index true."""
        self._leave(record)
        record.status = status
        for name, value in fields.items():
            setattr(record, name, value)
        self._enter(record)

    def _enter(self, r: Record) -> None:
        status = r.status
        self.counts[(r.queue, r.level, status)] += 1
        if r.batch_id is not None:
            self.batch_outcomes[r.batch_id][_ended_as(r)] += 1
        self.by_status[(r.queue, status)].add(r.seq)
        if status is TaskStatus.QUEUED:
            lane = r.lane
            self.queued[lane].add(r.seq)
            self.queued_by_group[(lane, r.group)].add(r.seq)
            groups = self.groups[lane]
            groups[r.group] = groups.get(r.group, 0) + 1
        elif status is TaskStatus.SCHEDULED:
            self.scheduled.add((r.run_at, r.seq))
        elif status is TaskStatus.RUNNING:
            self.running[r.queue] += 1
            self.leases.add((r.lease_expires_at, r.seq))
        if status in FINISHED:
            self.finished[r.queue].add((r.completed_at, r.seq))
        elif r.expires_at is not None:
            self.deadlines.add((r.expires_at, r.seq))

    def _leave(self, r: Record) -> None:
        status = r.status
        self.counts[(r.queue, r.level, status)] -= 1
        if r.batch_id is not None:
            outcomes = self.batch_outcomes[r.batch_id]
            outcomes[_ended_as(r)] -= 1
            if not any(outcomes.values()):
                del self.batch_outcomes[r.batch_id]
        self.by_status[(r.queue, status)].remove(r.seq)
        if status is TaskStatus.QUEUED:
            lane = r.lane
            self.queued[lane].remove(r.seq)
            self.queued_by_group[(lane, r.group)].remove(r.seq)
            groups = self.groups[lane]
            groups[r.group] -= 1
            if not groups[r.group]:
                del groups[r.group]
        elif status is TaskStatus.SCHEDULED:
            self.scheduled.remove((r.run_at, r.seq))
        elif status is TaskStatus.RUNNING:
            self.running[r.queue] -= 1
            self.leases.remove((r.lease_expires_at, r.seq))
        if status in FINISHED:
            self.finished[r.queue].remove((r.completed_at, r.seq))
        elif r.expires_at is not None:
            self.deadlines.remove((r.expires_at, r.seq))

    def owe_callback(self, record: Record, due_at: float | None) -> None:
        """Set when the record's callback is due (None: none owed)."""
        if record.callback_due_at is not None:
            self.callbacks.remove((record.callback_due_at, record.seq))
        record.callback_due_at = due_at
        if due_at is not None:
            self.callbacks.add((due_at, record.seq))

    def extend_lease(self, record: Record, expires_at: float) -> None:
        self.leases.remove((record.lease_expires_at, record.seq))
        record.lease_expires_at = expires_at
        self.leases.add((expires_at, record.seq))

    def next_due_at(self) -> float | None:
        """The earliest run_at, lease expiry or deadline still pending."""
        times = [index[0][0] for index in (self.scheduled, self.leases, self.deadlines) if index]
        return min(times) if times else None


def _ended_as(record: Record) -> Outcome | None:
    """How a batch task ended, for its batch's counts; None while it is unfinished."""
    if record.status not in FINISHED:
        return None
    code = None if record.result is None else record.result.status_code
    return outcome(record.status, code)
