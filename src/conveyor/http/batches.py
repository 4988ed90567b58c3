"""Routes of OpenAI's Batch API: create, retrieve, list, cancel."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.domain.batch_specs import validate_create
from conveyor.domain.batches import to_wire
from conveyor.errors import InvalidTransition
from conveyor.http.errors import error_response
from conveyor.http.responses import json, read, settings
from conveyor.http.wire import CreateBatchBody
from conveyor.service.batches import BatchService


def batches(request: Request) -> BatchService:
    """The batch service of the caller's project."""
    principal = request.scope.get("state", {}).get("principal")
    project = "" if principal is None else principal.project
    service: BatchService = request.app.state.batches(project)
    return service


async def create_batch(request: Request) -> Response:
    body = await read(request, CreateBatchBody)
    spec = validate_create(
        input_file_id=body.input_file_id,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        metadata=body.metadata,
        output_expires_after=body.output_expires_after,
        queue=request.headers.get("x-conveyor-queue"),
        default_queue=settings(request).batch_queue,
    )
    batch = await batches(request).create(spec)
    return json(to_wire(batch))


async def get_batch(request: Request) -> Response:
    batch = await batches(request).get(request.path_params["batch_id"])
    return json(to_wire(batch))


async def list_batches(request: Request) -> Response:
    query = request.query_params
    limit_text = query.get("limit", "20")
    if not limit_text.isdigit():
        return error_response(
            400,
            f"limit must be a whole number, got {limit_text!r:.40}",
            "invalid_request_error",
            param="limit",
        )
    page = await batches(request).list(after=query.get("after") or None, limit=int(limit_text))
    data = [to_wire(batch) for batch in page.data]
    return json(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": page.has_more,
        }
    )


async def cancel_batch(request: Request) -> Response:
    try:
        batch = await batches(request).cancel(request.path_params["batch_id"])
    except InvalidTransition as exc:
        # the batch has ended: asking again cannot help, so the SDK must not retry
        response = error_response(409, exc.message, "invalid_request_error", code=exc.code)
        response.headers["x-should-retry"] = "false"
        return response
    return json(to_wire(batch))


ROUTES = [
    Route("/v1/batches", create_batch, methods=["POST"]),
    Route("/v1/batches", list_batches, methods=["GET"]),
    Route("/v1/batches/{batch_id}", get_batch, methods=["GET"]),
    Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
]
