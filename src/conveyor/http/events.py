"""Routes for task events: a worker appends them; anyone who may read the task follows."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.errors import InvalidInput
from conveyor.http import sse
from conveyor.http.responses import json, read, service, settings
from conveyor.http.wire import EventsBody


async def append(request: Request) -> Response:
    body = await read(request, EventsBody)
    last = await service(request).append_events(
        request.path_params["task_id"], body.lease_id, body.events
    )
    return json({"last_event_id": last})


async def follow(request: Request) -> Response:
    task_id = request.path_params["task_id"]
    # a reconnecting EventSource sends the last id it saw
    after_text = request.query_params.get("after") or request.headers.get("last-event-id") or "0"
    if not after_text.isdigit():
        raise InvalidInput(f"after must be an event id, got {after_text!r}", param="after")
    wait_s = settings(request).max_blocking_wait_s
    # an unknown task raises here, as a 404, before the stream starts
    return sse.response(
        await service(request).follow(task_id, after=int(after_text), wait_s=wait_s)
    )


ROUTES = [
    Route("/v1/tasks/{task_id}/events", append, methods=["POST"]),
    Route("/v1/tasks/{task_id}/events", follow, methods=["GET"]),
]
