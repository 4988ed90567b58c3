"""Bella-Queue compatible routes: the same handlers in Bella-Queue's wire shapes.

Clients and workers written for Bella-Queue move over unchanged. Errors keep Conveyor's
OpenAI shape; the status codes, which is what Bella clients check, are the same.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.domain.queues import QueueConfig
from conveyor.domain.tasks import ResponseMode, Task, TaskResult
from conveyor.errors import NotFound
from conveyor.http import tasks as task_routes
from conveyor.http.responses import json, read, service
from conveyor.http.wire import PutBody


class RegisterBody(msgspec.Struct, kw_only=True):
    queue: str
    endpoint: str = ""


class PutBellaBody(msgspec.Struct, kw_only=True):
    queue: str
    level: int = 0
    endpoint: str = ""
    data: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))
    response_mode: ResponseMode = ResponseMode.CALLBACK
    callback_url: str | None = None
    timeout: float | None = None
    trace_id: str | None = None

    def put_body(self) -> PutBody:
        return PutBody(
            queue=self.queue,
            level=self.level,
            endpoint=self.endpoint,
            data=self.data,
            response_mode=self.response_mode,
            callback_url=self.callback_url,
            timeout=self.timeout,
            metadata=None if self.trace_id is None else {"trace_id": self.trace_id},
        )


class TakeBellaBody(msgspec.Struct, kw_only=True):
    queues: list[str]
    size: int = 1
    strategy: str = "fifo"
    process_timeout: float | None = None
    process_max_retries: int | None = None  # Bella's own retry count; queues carry ours


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def bella_task(task: Task) -> dict[str, Any]:
    """A task in Bella-Queue's shape (times in milliseconds, as Bella sends them)."""
    metadata = task.metadata or {}
    running_ms = None
    if task.started_at is not None:
        running_ms = _ms((task.completed_at or time.time()) - task.started_at)
    return {
        "task_id": task.task_id,
        "custom_id": task.custom_id,
        "batch_id": task.batch_id,
        "trace_id": metadata.get("trace_id"),
        "endpoint": task.endpoint,
        "queue": task.queue,
        "level": task.level,
        "data": task.data,
        "status": task.status,
        "start_time": _ms(task.started_at),
        "expire_time": _ms(task.lease_expires_at or task.expires_at),
        "callback_url": task.callback_url,
        "response_mode": task.response_mode,
        "result": task.result,
        "completed_time": _ms(task.completed_at),
        "running_time": running_ms,
    }


async def register(request: Request) -> Response:
    body = await read(request, RegisterBody)
    tasks = service(request)
    try:
        await tasks.queue_stats(body.queue)
    except NotFound:  # a queue registered before keeps its settings
        await tasks.register_queue(QueueConfig(name=body.queue))
    return json(body.queue)


async def put(request: Request) -> Response:
    body = (await read(request, PutBellaBody)).put_body()
    if body.response_mode is ResponseMode.BLOCKING:
        return await task_routes.blocking(request, body)
    if body.response_mode is ResponseMode.STREAMING:
        return await task_routes.streaming(request, body)
    task = await service(request).put(body.spec())
    return json({"code": 200, "data": task.task_id, "timestamp": int(time.time() * 1000)})


async def take(request: Request) -> Response:
    body = await read(request, TakeBellaBody)
    tasks = await service(request).take(
        body.queues, strategy=body.strategy, size=body.size, lease_s=body.process_timeout
    )
    answer: dict[str, list[dict[str, Any]]] = {address: [] for address in body.queues}
    for task in tasks:
        key = f"{task.queue}:{task.level}"
        answer.setdefault(key if key in answer else task.queue, []).append(bella_task(task))
    return json(answer)


async def complete(request: Request) -> Response:
    # the body is the result map itself: {status_code, request_id, body, ...}
    result = await read(request, TaskResult)
    task = await service(request).complete_running(request.path_params["task_id"], result)
    return json(task.task_id)


async def cancel(request: Request) -> Response:
    task = await service(request).cancel(request.path_params["task_id"])
    return json(task.task_id, status=202)


async def get(request: Request) -> Response:
    return json(bella_task(await service(request).get_task(request.path_params["task_id"])))


ROUTES = [
    Route("/v1/queue/register", register, methods=["POST"]),
    Route("/v1/queue/put", put, methods=["POST"]),
    Route("/v1/queue/take", take, methods=["POST"]),
    Route("/v1/queue/{task_id}/complete", complete, methods=["POST"]),
    Route("/v1/queue/{task_id}/cancel", cancel, methods=["POST"]),
    Route("/v1/queue/{task_id}", get, methods=["GET"]),
]
