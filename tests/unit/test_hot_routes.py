"""HotRoutes answers the hot routes itself and hands everything else to the router."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.errors import LeaseLost
from conveyor.http.hot import HotRoutes
from conveyor.http.responses import json


async def take(request: Request) -> Response:
    return json({"route": "take"})


async def complete(request: Request) -> Response:
    return json({"route": "complete", "task_id": request.path_params["task_id"]})


async def refuse(request: Request) -> Response:
    raise LeaseLost("the lease moved on")


ROUTES = [
    Route("/v1/tasks/take", take, methods=["POST"]),
    Route("/v1/tasks/{task_id}/complete", complete, methods=["POST"]),
    Route("/v1/tasks/{task_id}/fail", refuse, methods=["POST"]),
]


async def call(method: str, path: str) -> tuple[int, bytes, dict[str, Any]]:
    passed_on: list[str] = []

    async def router(scope: Any, receive: Any, send: Any) -> None:
        passed_on.append(scope["path"])
        await Response(b"router", status_code=404)(scope, receive, send)

    app = HotRoutes(router, ROUTES)
    scope: dict[str, Any] = {"type": "http", "method": method, "path": path, "headers": []}
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(dict(message))

    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    scope["passed_on"] = passed_on
    return messages[0]["status"], body, scope


async def test_a_fixed_path_wins_over_a_task_id_that_spells_it() -> None:
    status, body, scope = await call("POST", "/v1/tasks/take")
    assert (status, body) == (200, b'{"route":"take"}')
    assert scope["route"].path == "/v1/tasks/take"  # what the latency histogram labels by
    assert not scope["passed_on"]


async def test_a_task_verb_carries_the_task_id() -> None:
    status, body, scope = await call("POST", "/v1/tasks/01ABC/complete")
    assert (status, body) == (200, b'{"route":"complete","task_id":"01ABC"}')
    assert scope["path_params"] == {"task_id": "01ABC"}


async def test_errors_answer_through_the_apps_error_table() -> None:
    status, body, _ = await call("POST", "/v1/tasks/01ABC/fail")
    assert status == 409
    assert body == (
        b'{"error":{"message":"the lease moved on","type":"conflict_error",'
        b'"param":null,"code":"lease_lost"}}'
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/tasks/take"),  # another method
        ("POST", "/v1/tasks/01ABC/cancel"),  # a verb that is not hot
        ("POST", "/v1/tasks//complete"),  # no task id
        ("POST", "/v1/tasks/01ABC/complete/more"),  # deeper than a verb
        ("POST", "/v1/queues"),
    ],
)
async def test_everything_else_goes_to_the_router(method: str, path: str) -> None:
    status, body, scope = await call(method, path)
    assert (status, body) == (404, b"router")
    assert scope["passed_on"] == [path]


def test_routes_it_cannot_match_are_refused_at_start() -> None:
    with pytest.raises(ValueError, match="not a path"):
        HotRoutes(ROUTES[0].app, [Route("/v1/queues/{name}", take, methods=["GET"])])
