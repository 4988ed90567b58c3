"""The one request builder both clients share: each API call as a `Call`, no I/O.

A `Call` (`conveyor.sdk._request`) says what to send (method, path, query, JSON body) and
how to read the answer. `Client` (httpx) and `AsyncClient` (aiohttp) only move bytes;
every rule about the wire lives here and in `_request`, once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import msgspec

from conveyor.domain.ids import new_task_id
from conveyor.domain.retry import Backoff
from conveyor.domain.tasks import TaskError, TaskResult, TaskSpec
from conveyor.engines.engine import Completion
from conveyor.sdk._errors import SERVER_TYPES, error_from, error_info
from conveyor.sdk._models import (
    CompleteOutcome,
    HeartbeatInfo,
    LeasedTask,
    QueueInfo,
    TaskEvent,
    TaskInfo,
    TaskList,
)
from conveyor.sdk._request import DEFAULT_TIMEOUT_S as DEFAULT_TIMEOUT_S
from conveyor.sdk._request import DEFAULT_URL as DEFAULT_URL
from conveyor.sdk._request import Call as Call
from conveyor.sdk._request import ResultOrError as ResultOrError
from conveyor.sdk._request import answer as answer
from conveyor.sdk._request import expect as expect
from conveyor.sdk._request import headers as headers
from conveyor.sdk._request import server_url as server_url

T = TypeVar("T")

# a blocking put without a timeout waits the server's default (300 s); a take at most 60 s
DEFAULT_RUN_WAIT_S = 300.0
SLACK_S = 10.0  # beyond a long poll's own wait, for the answer to travel
MAX_FOLLOW_S = 600.0  # the server's cap on how long it follows a task

_encode = msgspec.json.Encoder().encode


class PutOptions(TypedDict, total=False):
    """A put's optional fields (see `POST /v1/tasks`); durations in seconds."""

    level: int
    endpoint: str
    callback_url: str | None
    timeout_s: float | None
    delay_s: float | None
    run_at: float | None
    max_attempts: int | None
    backoff: Backoff | None
    task_id: str | None
    custom_id: str | None
    batch_id: str | None
    group: str | None
    metadata: dict[str, Any] | None


class QueueOptions(TypedDict, total=False):
    """A queue's defaults (see `POST /v1/queues`); durations in seconds."""

    max_level: int | None
    lease_s: float | None
    max_attempts: int | None
    backoff: Backoff | None
    retention_s: float | None


def _id(value: str) -> str:
    return quote(value, safe="")


def _decoder(kind: type[T]) -> Callable[[bytes], T]:
    return msgspec.json.Decoder(kind).decode


class _Queues(msgspec.Struct):
    data: list[QueueInfo]


class _Taken(msgspec.Struct):
    tasks: list[LeasedTask]


class _Id(msgspec.Struct):
    task_id: str


class _Ids(msgspec.Struct):
    data: list[_Id]


class _Outcomes(msgspec.Struct):
    data: list[CompleteOutcome]


class _Deleted(msgspec.Struct):
    tasks_deleted: int = 0


class _Appended(msgspec.Struct):
    last_event_id: int = 0


_no_body = expect(lambda content: None)
_task = expect(_decoder(TaskInfo))
_queue = expect(_decoder(QueueInfo))
_queues_d = _decoder(_Queues)
_taken_d = _decoder(_Taken)
_ids_d = _decoder(_Ids)
_outcomes_d = _decoder(_Outcomes)
_deleted_d = _decoder(_Deleted)
_appended_d = _decoder(_Appended)


def _compact_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """`fields` without the unset (None) ones, so that the server's defaults apply."""
    return {key: value for key, value in fields.items() if value is not None}


def _compact(fields: Mapping[str, Any]) -> bytes:
    return _encode(_compact_fields(fields))


# ---- queues ----


def _queue_fields(options: QueueOptions) -> dict[str, Any]:
    return {
        "max_level": options.get("max_level"),
        "process_timeout": options.get("lease_s"),
        "max_attempts": options.get("max_attempts"),
        "backoff": options.get("backoff"),
        "retention": options.get("retention_s"),
    }


def register_queue(
    name: str, *, paused: bool | None = None, **options: Unpack[QueueOptions]
) -> Call[QueueInfo]:
    body = {"name": name, "paused": paused, **_queue_fields(options)}
    return Call("POST", "/v1/queues", _queue, _compact(body))


def list_queues() -> Call[list[QueueInfo]]:
    return Call("GET", "/v1/queues", expect(lambda content: _queues_d(content).data))


def get_queue(name: str) -> Call[QueueInfo]:
    return Call("GET", f"/v1/queues/{_id(name)}", _queue)


def update_queue(
    name: str, *, paused: bool | None = None, **options: Unpack[QueueOptions]
) -> Call[QueueInfo]:
    body = {"paused": paused, **_queue_fields(options)}
    return Call("PATCH", f"/v1/queues/{_id(name)}", _queue, _compact(body))


def obliterate_queue(name: str, *, force: bool = False) -> Call[int]:
    params = {"force": "true"} if force else None
    read = expect(lambda content: _deleted_d(content).tasks_deleted)
    return Call("DELETE", f"/v1/queues/{_id(name)}", read, params=params)


# ---- producing ----


def spec_fields(spec: TaskSpec) -> dict[str, Any]:
    """A TaskSpec as the wire's put body (durations named as the API names them)."""
    return {
        "queue": spec.queue,
        "level": spec.level or None,
        "endpoint": spec.endpoint or None,
        "data": spec.data,
        "response_mode": str(spec.response_mode),
        "callback_url": spec.callback_url,
        "timeout": spec.timeout_s,
        "delay": spec.delay_s,
        "run_at": spec.run_at,
        "max_attempts": spec.max_attempts,
        "backoff": spec.backoff,
        "task_id": spec.task_id,
        "custom_id": spec.custom_id,
        "batch_id": spec.batch_id,
        "group": spec.group,
        "metadata": spec.metadata,
    }


def put(queue: str, data: Any = None, **options: Unpack[PutOptions]) -> Call[TaskInfo]:
    spec = TaskSpec(queue=queue, data=data, **options)
    return Call("POST", "/v1/tasks", _task, _compact(spec_fields(spec)))


def run(queue: str, data: Any = None, **options: Unpack[PutOptions]) -> Call[TaskResult]:
    """A blocking put: the answer is the worker's result, its status the result's."""
    spec = TaskSpec(queue=queue, data=data, **options)
    task_id = spec.task_id or new_task_id()  # known, so an ambiguous answer can be checked
    fields = spec_fields(spec) | {"response_mode": "blocking", "task_id": task_id}

    def read(status: int, content: bytes) -> TaskResult:
        body = msgspec.json.decode(content) if content else None
        result = TaskResult(status_code=status, body=body)
        if 200 <= status < 300:
            return result
        info = error_info(content)
        if info is None or info.type not in SERVER_TYPES:
            return result
        raise ResultOrError(task_id, result, error_from(status, content, "POST /v1/tasks"))

    wait_s = DEFAULT_RUN_WAIT_S if spec.timeout_s is None else spec.timeout_s
    return Call("POST", "/v1/tasks", read, _compact(fields), timeout_s=wait_s + SLACK_S)


def stream(queue: str, data: Any = None, **options: Unpack[PutOptions]) -> Call[None]:
    """A streaming put: the answer is Server-Sent Events (see `conveyor.sdk._streams`)."""
    spec = TaskSpec(queue=queue, data=data, **options)
    fields = spec_fields(spec) | {"response_mode": "streaming"}
    wait_s = DEFAULT_RUN_WAIT_S if spec.timeout_s is None else spec.timeout_s
    return Call("POST", "/v1/tasks", _no_body, _compact(fields), timeout_s=wait_s + SLACK_S)


def follow(task_id: str, *, after: int = 0, wait_s: float = MAX_FOLLOW_S) -> Call[None]:
    """A task's events as Server-Sent Events: those above `after`, live, then its end."""
    params = {"after": str(after)} if after else None
    path = f"/v1/tasks/{_id(task_id)}/events"
    return Call("GET", path, _no_body, params=params, timeout_s=wait_s + SLACK_S)


def put_many(specs: Sequence[TaskSpec]) -> Call[list[str]]:
    body = _encode({"tasks": [_compact_fields(spec_fields(spec)) for spec in specs]})
    read = expect(lambda content: [item.task_id for item in _ids_d(content).data])
    return Call("POST", "/v1/tasks/bulk", read, body)


def get_task(task_id: str) -> Call[TaskInfo]:
    return Call("GET", f"/v1/tasks/{_id(task_id)}", _task)


def list_tasks(
    queue: str, status: str | None = None, *, after: str | None = None, limit: int = 100
) -> Call[TaskList]:
    params = {"queue": queue, "limit": str(limit)}
    if status is not None:
        params["status"] = str(status)
    if after is not None:
        params["after"] = after
    return Call("GET", "/v1/tasks", expect(_decoder(TaskList)), params=params)


def cancel(task_id: str) -> Call[TaskInfo]:
    return Call("POST", f"/v1/tasks/{_id(task_id)}/cancel", _task)


def requeue(task_id: str) -> Call[TaskInfo]:
    return Call("POST", f"/v1/tasks/{_id(task_id)}/requeue", _task)


# ---- working ----


def take(
    queues: Sequence[str],
    *,
    strategy: str = "fifo",
    size: int = 1,
    lease_s: float | None = None,
    wait_s: float = 0.0,
    worker_id: str = "",
) -> Call[list[LeasedTask]]:
    body = {
        "queues": list(queues),
        "strategy": str(strategy),
        "size": size,
        "process_timeout": lease_s,
        "wait": wait_s,
        "worker_id": worker_id or None,
    }
    read = expect(lambda content: _taken_d(content).tasks)
    return Call("POST", "/v1/tasks/take", read, _compact(body), timeout_s=wait_s + SLACK_S)


def complete(task_id: str, lease_id: str, result: TaskResult) -> Call[TaskInfo]:
    body = _encode({"lease_id": lease_id, "result": result})
    return Call("POST", f"/v1/tasks/{_id(task_id)}/complete", _task, body)


def complete_many(items: Sequence[Completion]) -> Call[list[CompleteOutcome]]:
    body = _encode(
        {
            "items": [
                {"task_id": item.task_id, "lease_id": item.lease_id, "result": item.result}
                for item in items
            ]
        }
    )
    read = expect(lambda content: _outcomes_d(content).data)
    return Call("POST", "/v1/tasks/complete", read, body)


def fail(
    task_id: str,
    lease_id: str,
    error: TaskError,
    *,
    retry: bool = True,
    retry_after_s: float | None = None,
) -> Call[TaskInfo]:
    body = {"lease_id": lease_id, "error": error, "retry": retry, "retry_after": retry_after_s}
    return Call("POST", f"/v1/tasks/{_id(task_id)}/fail", _task, _compact(body))


def heartbeat(task_id: str, lease_id: str, extend_s: float | None = None) -> Call[HeartbeatInfo]:
    body = _compact({"lease_id": lease_id, "extend": extend_s})
    read = expect(_decoder(HeartbeatInfo))
    return Call("POST", f"/v1/tasks/{_id(task_id)}/heartbeat", read, body)


def emit(task_id: str, lease_id: str, events: Sequence[TaskEvent]) -> Call[int]:
    """Append events to a running task; the answer is the id of the last one."""
    body = _encode({"lease_id": lease_id, "events": list(events)})
    read = expect(lambda content: _appended_d(content).last_event_id)
    return Call("POST", f"/v1/tasks/{_id(task_id)}/events", read, body)
