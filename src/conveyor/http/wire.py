"""The JSON the HTTP API reads and writes: request bodies and response objects.

Requests decode straight into these structs (msgspec checks the types); the service checks
the values. Task `data` stays raw JSON bytes from the request to the store.
"""

from __future__ import annotations

from typing import Any

import msgspec

from conveyor.domain.events import EventSpec
from conveyor.domain.queues import QueueConfig, QueueUpdate
from conveyor.domain.retry import Backoff
from conveyor.domain.tasks import ResponseMode, Task, TaskError, TaskResult, TaskSpec
from conveyor.engines.engine import QueueStats

# ---- requests ----


class QueueBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    max_level: int = 9
    process_timeout: float = 60.0
    max_attempts: int = 3
    backoff: Backoff = Backoff()
    retention: float = 7 * 86_400.0
    paused: bool = False

    def config(self) -> QueueConfig:
        return QueueConfig(
            name=self.name,
            max_level=self.max_level,
            lease_s=self.process_timeout,
            max_attempts=self.max_attempts,
            backoff=self.backoff,
            retention_s=self.retention,
            paused=self.paused,
        )


class QueuePatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    paused: bool | None = None
    max_level: int | None = None
    process_timeout: float | None = None
    max_attempts: int | None = None
    backoff: Backoff | None = None
    retention: float | None = None

    def update(self) -> QueueUpdate:
        return QueueUpdate(
            paused=self.paused,
            max_level=self.max_level,
            lease_s=self.process_timeout,
            max_attempts=self.max_attempts,
            backoff=self.backoff,
            retention_s=self.retention,
        )


class PutBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    queue: str
    level: int = 0
    endpoint: str = ""
    data: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))
    response_mode: ResponseMode = ResponseMode.CALLBACK
    callback_url: str | None = None
    timeout: float | None = None
    delay: float | None = None
    run_at: float | None = None
    max_attempts: int | None = None
    backoff: Backoff | None = None
    task_id: str | None = None
    custom_id: str | None = None
    batch_id: str | None = None
    group: str | None = None
    metadata: dict[str, Any] | None = None

    def spec(self) -> TaskSpec:
        return TaskSpec(
            queue=self.queue,
            level=self.level,
            endpoint=self.endpoint,
            data=self.data,
            response_mode=self.response_mode,
            callback_url=self.callback_url,
            # a blocking or streaming put's timeout is how long the caller waits, not a task
            # deadline: the wait running out cancels the task
            timeout_s=self.timeout if self.response_mode is ResponseMode.CALLBACK else None,
            delay_s=self.delay,
            run_at=self.run_at,
            max_attempts=self.max_attempts,
            backoff=self.backoff,
            task_id=self.task_id,
            custom_id=self.custom_id,
            batch_id=self.batch_id,
            group=self.group,
            metadata=self.metadata,
        )


class BulkPutBody(msgspec.Struct, forbid_unknown_fields=True):
    tasks: list[PutBody]


class TakeBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    queues: list[str]
    strategy: str = "fifo"
    size: int = 1
    process_timeout: float | None = None
    wait: float = 0.0
    worker_id: str = ""


class CompleteBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    lease_id: str
    result: TaskResult = TaskResult()


class CompleteItem(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    task_id: str
    lease_id: str
    result: TaskResult = TaskResult()


class CompleteManyBody(msgspec.Struct, forbid_unknown_fields=True):
    items: list[CompleteItem]


class FailBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    lease_id: str
    error: TaskError
    retry: bool = True
    retry_after: float | None = None


class HeartbeatBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    lease_id: str
    extend: float | None = None


class EventsBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    lease_id: str
    events: list[EventSpec]


# ---- responses ----


def task_object(task: Task, *, with_lease: bool = False) -> dict[str, Any]:
    """A task as the API shows it; the lease id only to the worker that took it."""
    body: dict[str, Any] = {
        "object": "task",
        "task_id": task.task_id,
        "queue": task.queue,
        "level": task.level,
        "endpoint": task.endpoint,
        "data": task.data,
        "status": task.status,
        "response_mode": task.response_mode,
        "callback_url": task.callback_url,
        "timeout": task.timeout_s,
        "custom_id": task.custom_id,
        "batch_id": task.batch_id,
        "group": task.group or None,
        "metadata": task.metadata,
        "attempts": task.attempts,
        "max_attempts": task.max_attempts,
        "run_at": task.run_at,
        "created_at": task.created_at,
        "started_at": task.started_at,
        "completed_at": task.completed_at,
        "expires_at": task.expires_at,
        "result": task.result,
        "error": task.error,
        "cancel_requested": task.cancel_requested,
        "worker_id": task.worker_id,
        "lease_expires_at": task.lease_expires_at,
    }
    if with_lease:
        body["lease_id"] = task.lease_id
    return body


def queue_object(config: QueueConfig, stats: QueueStats | None = None) -> dict[str, Any]:
    """A queue with its defaults, and its counts per level when `stats` is given."""
    body: dict[str, Any] = {
        "object": "queue",
        "name": config.name,
        "max_level": config.max_level,
        "process_timeout": config.lease_s,
        "max_attempts": config.max_attempts,
        "backoff": config.backoff,
        "retention": config.retention_s,
        "paused": config.paused,
        "created_at": config.created_at,
    }
    if stats is not None:
        body["levels"] = [
            {
                "level": level.level,
                "counts": level.counts,
                "oldest_queued_age": level.oldest_queued_age_s,
            }
            for level in stats.levels
        ]
    return body


encoder = msgspec.json.Encoder()


class CreateBatchBody(msgspec.Struct, kw_only=True):
    """`POST /v1/batches`; types are checked by the domain, with OpenAI's messages."""

    input_file_id: Any = None
    endpoint: Any = None
    completion_window: Any = None
    metadata: Any = None
    output_expires_after: Any = None
