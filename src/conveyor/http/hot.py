"""A direct path for the routes that carry the load: put, take and the completions.

Starlette's router tries each route's regular expression in turn and wraps every call in
two layers of exception handling; on the hot routes that was a third of the app's CPU per
request (see `benchmarks/app.py`). `HotRoutes` sits inside our middlewares (so auth and
the latency histogram see every request) and answers the hot routes from a dict lookup,
with the same endpoints, the same error table and the same route labels; everything else
goes on to Starlette's router.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor.http.errors import HANDLERS

Endpoint = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]

TASK_PREFIX = "/v1/tasks/"
TASK_PARAM = "{task_id}"


class HotRoutes:
    """Answers `routes` (fixed paths, or `/v1/tasks/{task_id}/<verb>`) without the router."""

    def __init__(self, app: ASGIApp, routes: Sequence[Route]) -> None:
        self.app = app
        self.fixed: dict[tuple[str, str], Route] = {}
        self.per_task: dict[tuple[str, str], Route] = {}
        for route in routes:
            for method in route.methods or ():
                if "{" not in route.path:
                    self.fixed[method, route.path] = route
                elif route.path.startswith(TASK_PREFIX + TASK_PARAM + "/"):
                    verb = route.path.removeprefix(TASK_PREFIX + TASK_PARAM + "/")
                    if "{" in verb or "/" in verb:
                        raise ValueError(f"{route.path}: only /v1/tasks/{{task_id}}/<verb> is hot")
                    self.per_task[method, verb] = route
                else:
                    raise ValueError(f"{route.path}: not a path HotRoutes can match")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = self._match(scope)
            if route is not None:
                await self._answer(route, scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _match(self, scope: Scope) -> Route | None:
        method, path = scope["method"], scope["path"]
        route = self.fixed.get((method, path))
        if route is not None:
            # a fixed path wins over a task id that happens to spell it, as in the router
            scope["path_params"] = {}
            return route
        if not path.startswith(TASK_PREFIX):
            return None
        task_id, slash, verb = path[len(TASK_PREFIX) :].partition("/")
        if not slash or not task_id:
            return None
        route = self.per_task.get((method, verb))
        if route is not None:
            scope["path_params"] = {"task_id": task_id}
        return route

    async def _answer(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = route  # the latency histogram labels by the route's template
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            response = await _handler_for(exc)(request, exc)
        await response(scope, receive, send)


def _handler_for(exc: Exception) -> ErrorHandler:
    """The app's handler for `exc`: the most specific class in the table wins."""
    for cls in type(exc).__mro__:
        handler = HANDLERS.get(cls)
        if handler is not None:
            return handler
    raise exc
