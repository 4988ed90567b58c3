"""Routes for workers: take (long-poll), complete (one or many), fail, heartbeat."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.engines.engine import Completion
from conveyor.errors import ConveyorError
from conveyor.http.errors import status_of
from conveyor.http.metrics import metrics_of
from conveyor.http.responses import json, read, service, unless_hung_up
from conveyor.http.wire import (
    CompleteBody,
    CompleteManyBody,
    FailBody,
    HeartbeatBody,
    TakeBody,
    task_object,
)


async def take(request: Request) -> Response:
    body = await read(request, TakeBody)
    work = service(request).take(
        body.queues,
        strategy=body.strategy,
        size=body.size,
        lease_s=body.process_timeout,
        worker_id=body.worker_id,
        wait_s=body.wait,
    )
    tasks = await (unless_hung_up(request, work) if body.wait > 0 else work)
    if tasks is None:
        return Response(status_code=499)
    metrics = metrics_of(request)
    metrics.count_tasks(metrics.taken, tasks)
    return json({"tasks": [task_object(task, with_lease=True) for task in tasks]})


async def complete(request: Request) -> Response:
    body = await read(request, CompleteBody)
    task = await service(request).complete(
        request.path_params["task_id"], body.lease_id, body.result
    )
    metrics = metrics_of(request)
    metrics.add(metrics.completed, task.queue)
    return json(task_object(task))


async def complete_many(request: Request) -> Response:
    body = await read(request, CompleteManyBody)
    items = [Completion(item.task_id, item.lease_id, item.result) for item in body.items]
    outcomes = await service(request).complete_many(items)
    results = []
    metrics = metrics_of(request)
    for item, outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, ConveyorError):
            status, kind = status_of(outcome)
            error = {"message": outcome.message, "type": kind, "code": outcome.code}
            results.append({"task_id": item.task_id, "status_code": status, "error": error})
        else:
            metrics.add(metrics.completed, outcome.queue)
            results.append({"task_id": item.task_id, "status_code": 200, "status": outcome.status})
    return json({"object": "list", "data": results})


async def fail(request: Request) -> Response:
    body = await read(request, FailBody)
    task = await service(request).fail(
        request.path_params["task_id"],
        body.lease_id,
        body.error,
        retry=body.retry,
        retry_after_s=body.retry_after,
    )
    metrics = metrics_of(request)
    metrics.add(metrics.failed, task.queue)
    return json(task_object(task))


async def heartbeat(request: Request) -> Response:
    body = await read(request, HeartbeatBody)
    beat = await service(request).heartbeat(
        request.path_params["task_id"], body.lease_id, body.extend
    )
    return json({"lease_expires_at": beat.lease_expires_at, "cancelled": beat.cancelled})


ROUTES = [
    Route("/v1/tasks/take", take, methods=["POST"]),
    Route("/v1/tasks/complete", complete_many, methods=["POST"]),
    Route("/v1/tasks/{task_id}/complete", complete, methods=["POST"]),
    Route("/v1/tasks/{task_id}/fail", fail, methods=["POST"]),
    Route("/v1/tasks/{task_id}/heartbeat", heartbeat, methods=["POST"]),
]
