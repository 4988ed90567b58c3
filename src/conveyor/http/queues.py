"""Routes for queues: register, list, get with stats, pause/resume and defaults, obliterate."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.http.responses import json, read, service
from conveyor.http.wire import QueueBody, QueuePatch, queue_object


async def register(request: Request) -> Response:
    body = await read(request, QueueBody)
    return json(queue_object(await service(request).register_queue(body.config())))


async def list_queues(request: Request) -> Response:
    queues = await service(request).list_queues()
    return json({"object": "list", "data": [queue_object(q) for q in queues]})


async def get_queue(request: Request) -> Response:
    stats = await service(request).queue_stats(request.path_params["name"])
    return json(queue_object(stats.queue, stats))


async def patch_queue(request: Request) -> Response:
    body = await read(request, QueuePatch)
    config = await service(request).update_queue(request.path_params["name"], body.update())
    return json(queue_object(config))


async def delete_queue(request: Request) -> Response:
    name = request.path_params["name"]
    force = request.query_params.get("force", "false").lower() in ("1", "true", "yes")
    deleted = await service(request).obliterate_queue(name, force=force)
    return json(
        {"object": "queue.deleted", "name": name, "deleted": True, "tasks_deleted": deleted}
    )


ROUTES = [
    Route("/v1/queues", register, methods=["POST"]),
    Route("/v1/queues", list_queues, methods=["GET"]),
    Route("/v1/queues/{name}", get_queue, methods=["GET"]),
    Route("/v1/queues/{name}", patch_queue, methods=["PATCH"]),
    Route("/v1/queues/{name}", delete_queue, methods=["DELETE"]),
]
