"""Operations routes: liveness, readiness, health, and the OpenAPI document."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.http.errors import error_response
from conveyor.http.responses import json


async def livez(request: Request) -> Response:
    return json({"status": "ok"})


async def readyz(request: Request) -> Response:
    if await request.app.state.engine.ready():
        return json({"status": "ok"})
    return error_response(503, "the store does not answer", "service_unavailable_error")


async def health(request: Request) -> Response:
    ready = await request.app.state.engine.ready()
    return json({"status": "UP" if ready else "DOWN"}, status=200 if ready else 503)


async def openapi(request: Request) -> Response:
    return Response(request.app.state.openapi, media_type="application/json")


ROUTES = [
    Route("/livez", livez, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/actuator/health", health, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
