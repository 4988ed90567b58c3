"""Routes for producers: put (callback or blocking), bulk put, get, list, cancel, requeue."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import Gauge
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.domain.events import TaskEvent
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import ResponseMode, Task
from conveyor.errors import InvalidInput
from conveyor.http import sse
from conveyor.http.errors import error_response
from conveyor.http.metrics import metrics_of
from conveyor.http.responses import json, read, service, settings, unless_hung_up
from conveyor.http.wire import BulkPutBody, PutBody, task_object
from conveyor.http.wire import encoder as _encoder


async def put(request: Request) -> Response:
    body = await read(request, PutBody)
    if body.response_mode is ResponseMode.BLOCKING:
        return await blocking(request, body)
    if body.response_mode is ResponseMode.STREAMING:
        return await streaming(request, body)
    task = await service(request).put(body.spec())
    metrics = metrics_of(request)
    metrics.add(metrics.put, task.queue)
    return json(task_object(task), status=202)


def _wait_s(request: Request, body: PutBody) -> float:
    """How long a blocking or streaming put waits: its timeout, within the server's cap."""
    config = settings(request)
    wait_s = config.default_blocking_wait_s if body.timeout is None else body.timeout
    if not 0 < wait_s <= config.max_blocking_wait_s:
        raise InvalidInput(
            f"timeout must be more than 0 and at most {config.max_blocking_wait_s:g} seconds"
            f" for a {body.response_mode} put, got {wait_s:g}",
            param="timeout",
        )
    return wait_s


async def streaming(request: Request, body: PutBody) -> Response:
    """Answer with the task's events as SSE, then its result."""
    # bad input raises before the stream starts, as a 400
    items = await service(request).stream(body.spec(), _wait_s(request, body))
    metrics = metrics_of(request)
    metrics.add(metrics.put, body.queue)
    return sse.response(_counted(items, metrics.streaming_waiters))


async def _counted(
    items: AsyncIterator[TaskEvent | Task], waiters: Gauge
) -> AsyncIterator[TaskEvent | Task]:
    waiters.inc()
    try:
        async for item in items:
            yield item
    finally:
        waiters.dec()


async def blocking(request: Request, body: PutBody) -> Response:
    """Answer with the worker's result once the task ends (408 and cancelled on timeout)."""
    wait_s = _wait_s(request, body)
    metrics = metrics_of(request)
    metrics.add(metrics.put, body.queue)
    waiters = metrics.blocking_waiters
    waiters.inc()
    try:
        return await _wait_for_result(request, body, wait_s)
    finally:
        waiters.dec()


async def _wait_for_result(request: Request, body: PutBody, wait_s: float) -> Response:
    # a client that goes away cancels the wait, and with it the task
    task = await unless_hung_up(request, service(request).run(body.spec(), wait_s))
    if task is None:
        return Response(status_code=499)
    return _result_response(task)


def _result_response(task: Task) -> Response:
    """The worker's result as the HTTP answer, or why there is none."""
    if task.status is TaskStatus.SUCCEEDED and task.result is not None:
        return Response(
            _encoder.encode(task.result.body),
            status_code=task.result.status_code,
            media_type="application/json",
        )
    error = task.error
    message = error.message if error is not None else f"the task ended {task.status}"
    if task.status is TaskStatus.CANCELLED:
        return error_response(
            409, message or "the task was cancelled", "conflict_error", code="task_cancelled"
        )
    if task.status is TaskStatus.EXPIRED:
        return error_response(408, message, "timeout_error", code="task_expired")
    return error_response(502, message, "task_failed", code=error.code if error else None)


async def bulk_put(request: Request) -> Response:
    body = await read(request, BulkPutBody)
    if any(item.response_mode is not ResponseMode.CALLBACK for item in body.tasks):
        raise InvalidInput("a bulk put takes callback-mode tasks only", param="tasks")
    ids = await service(request).put_many([item.spec() for item in body.tasks])
    metrics = metrics_of(request)
    for name, n in Counter(item.queue for item in body.tasks).items():
        metrics.add(metrics.put, name, n)
    return json({"object": "list", "data": [{"task_id": task_id} for task_id in ids]}, status=202)


async def get_task(request: Request) -> Response:
    return json(task_object(await service(request).get_task(request.path_params["task_id"])))


async def list_tasks(request: Request) -> Response:
    params = request.query_params
    queue = params.get("queue")
    if queue is None:
        raise InvalidInput("give the queue to list, as ?queue=name", param="queue")
    limit_text = params.get("limit", "100")
    if not limit_text.isdigit():
        raise InvalidInput(f"limit must be a whole number, got {limit_text!r}", param="limit")
    page = await service(request).list_tasks(
        queue, params.get("status"), after=params.get("after"), limit=int(limit_text)
    )
    listing: dict[str, Any] = {
        "object": "list",
        "data": [task_object(task) for task in page.tasks],
        "has_more": page.next_cursor is not None,
        "next_cursor": page.next_cursor,
    }
    return json(listing)


async def cancel(request: Request) -> Response:
    return json(task_object(await service(request).cancel(request.path_params["task_id"])))


async def requeue(request: Request) -> Response:
    return json(task_object(await service(request).requeue(request.path_params["task_id"])))


PUT = Route("/v1/tasks", put, methods=["POST"])
ROUTES = [
    PUT,
    Route("/v1/tasks", list_tasks, methods=["GET"]),
    Route("/v1/tasks/bulk", bulk_put, methods=["POST"]),
    Route("/v1/tasks/{task_id}", get_task, methods=["GET"]),
    Route("/v1/tasks/{task_id}/cancel", cancel, methods=["POST"]),
    Route("/v1/tasks/{task_id}/requeue", requeue, methods=["POST"]),
]
