"""Small helpers every route uses: read a body into a struct, answer with JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from conveyor.http.wire import encoder
from conveyor.service.tasks import TaskService
from conveyor.settings import Settings

T = TypeVar("T")


async def read(request: Request, kind: type[T]) -> T:
    """The request body decoded as `kind`; msgspec errors become 400s."""
    body = await request.body()
    if not body:
        raise msgspec.ValidationError("the request has no JSON body")
    return msgspec.json.decode(body, type=kind)


def json(content: Any, status: int = 200) -> Response:
    """A JSON response encoded with msgspec."""
    return Response(encoder.encode(content), status_code=status, media_type="application/json")


def service(request: Request) -> TaskService:
    """The task service for the caller: its project's, when API keys are in use."""
    principal = request.scope.get("state", {}).get("principal")
    if principal is None:
        tasks: TaskService = request.app.state.tasks
        return tasks
    project_service: TaskService = request.app.state.projects(principal.project)
    return project_service


def settings(request: Request) -> Settings:
    current: Settings = request.app.state.settings
    return current


async def disconnected(request: Request) -> None:
    """Return once the client has hung up (the body was read, so only that can arrive)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_hung_up(request: Request, work: Awaitable[T]) -> T | None:
    """What `work` gives, or None if the client hung up first (then `work` is cancelled).

    Long waits (a blocking put, a long-polling take) must end with their client: an
    abandoned take would still lease the next task, and a blocking put's task would run
    for nobody.
    """
    job = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(disconnected(request))
    try:
        await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not job.done():
            job.cancel()
        await asyncio.gather(job, gone, return_exceptions=True)
    return None if job.cancelled() else job.result()
