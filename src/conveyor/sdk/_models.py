"""What the server answers, as typed objects: tasks, queues, files, batches, listings, outcomes.

These mirror the JSON of `conveyor.http.wire` field for field (the wire names, such as
`timeout` and `process_timeout`, are kept so that a printed object matches the API docs).
Unknown fields are ignored, so a newer server does not break an older client.
"""

from __future__ import annotations

from typing import Any

import msgspec

from conveyor.domain.batches import BatchErrors, BatchStatus, RequestCounts, Usage
from conveyor.domain.retry import Backoff
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import ResponseMode, TaskError, TaskResult


class TaskInfo(msgspec.Struct, kw_only=True):
    """A task as the API shows it."""

    task_id: str
    queue: str
    level: int = 0
    endpoint: str = ""
    data: Any = None
    status: TaskStatus
    response_mode: ResponseMode = ResponseMode.CALLBACK
    callback_url: str | None = None
    timeout: float | None = None
    custom_id: str | None = None
    batch_id: str | None = None
    group: str | None = None
    metadata: dict[str, Any] | None = None
    attempts: int = 0
    max_attempts: int = 0
    run_at: float | None = None
    created_at: float = 0.0
    started_at: float | None = None
    completed_at: float | None = None
    expires_at: float | None = None
    result: TaskResult | None = None
    error: TaskError | None = None
    cancel_requested: bool = False
    worker_id: str | None = None
    lease_expires_at: float | None = None


class LeasedTask(TaskInfo, kw_only=True):
    """A task handed to a worker by a take, with the lease id that settles it."""

    lease_id: str


class TaskList(msgspec.Struct, kw_only=True):
    """One page of a task listing; pass `next_cursor` as `after` for the next page."""

    data: list[TaskInfo]
    has_more: bool = False
    next_cursor: str | None = None


class LevelInfo(msgspec.Struct, kw_only=True):
    """Counts per state of one level of a queue, and the age of its oldest queued task."""

    level: int
    counts: dict[str, int]
    oldest_queued_age: float | None = None


class QueueInfo(msgspec.Struct, kw_only=True):
    """A queue with its defaults; `levels` (counts per level) only from `get_queue`."""

    name: str
    max_level: int = 9
    process_timeout: float = 60.0
    max_attempts: int = 3
    backoff: Backoff = msgspec.field(default_factory=Backoff)
    retention: float = 0.0
    paused: bool = False
    created_at: float = 0.0
    levels: list[LevelInfo] | None = None

    def total(self, status: str) -> int:
        """The number of tasks in `status` across all levels (0 without stats)."""
        return sum(level.counts.get(status, 0) for level in self.levels or ())


class ErrorInfo(msgspec.Struct, kw_only=True):
    """An error as the API reports it, in OpenAI's shape."""

    message: str = ""
    type: str = ""
    param: str | None = None
    code: str | None = None


class CompleteOutcome(msgspec.Struct, kw_only=True):
    """One item of a bulk complete: the task's new status, or why it was refused."""

    task_id: str
    status_code: int
    status: TaskStatus | None = None
    error: ErrorInfo | None = None

    @property
    def ok(self) -> bool:
        """True if the result was recorded."""
        return self.status_code == 200


class HeartbeatInfo(msgspec.Struct, kw_only=True):
    """A heartbeat's answer: the new lease expiry, or `cancelled` if the task was cancelled."""

    lease_expires_at: float | None = None
    cancelled: bool = False


class TaskEvent(msgspec.Struct, kw_only=True):
    """One event a worker appends to a running task (progress, a stream chunk)."""

    event: str = "message"
    data: Any = None


class StreamEvent(msgspec.Struct, kw_only=True):
    """One message of a streamed task: an event its worker emitted, or the end.

    The last message is `event == "result"`, whose `data` is `{task_id, status, result,
    error}`; `end` reads it as a TaskInfo-like `StreamEnd`.
    """

    event: str
    data: Any = None
    id: int | None = None


class StreamEnd(msgspec.Struct, kw_only=True):
    """How a streamed task ended: its status, and its result or error."""

    task_id: str
    status: TaskStatus
    result: TaskResult | None = None
    error: TaskError | None = None


class FileInfo(msgspec.Struct, kw_only=True):
    """A file as the API shows it: OpenAI's file object."""

    id: str
    object: str = "file"
    bytes: int = 0
    created_at: int = 0
    filename: str = ""
    purpose: str = ""
    status: str = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class BatchInfo(msgspec.Struct, kw_only=True):
    """A batch as the API shows it: OpenAI's batch object (Unix-second timestamps)."""

    id: str
    object: str = "batch"
    endpoint: str
    model: str | None = None
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int = 0
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = msgspec.field(default_factory=RequestCounts)
    metadata: dict[str, str] | None = None
    usage: Usage | None = None

    @property
    def finished(self) -> bool:
        """True once the batch has ended (completed, failed, expired or cancelled)."""
        return self.status.finished
