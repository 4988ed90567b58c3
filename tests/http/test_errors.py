"""Bad requests in OpenAI's error shape, the operations routes, /openapi.json, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from conveyor.http.app import ROUTES as APP_ROUTES
from tests.http._support import assert_error, json_of, unique

BODY_ROUTES = [
    ("POST", "/v1/queues"),
    ("PATCH", "/v1/queues/some-queue"),
    ("POST", "/v1/tasks"),
    ("POST", "/v1/tasks/bulk"),
    ("POST", "/v1/tasks/take"),
    ("POST", "/v1/tasks/complete"),
    ("POST", "/v1/tasks/some-task/complete"),
    ("POST", "/v1/tasks/some-task/fail"),
    ("POST", "/v1/tasks/some-task/heartbeat"),
    ("POST", "/v1/tasks/some-task/events"),
]

# every route the server has, as (method, path template)
ROUTES = {
    ("post", "/v1/queues"),
    ("get", "/v1/queues"),
    ("get", "/v1/queues/{name}"),
    ("patch", "/v1/queues/{name}"),
    ("delete", "/v1/queues/{name}"),
    ("post", "/v1/tasks"),
    ("get", "/v1/tasks"),
    ("post", "/v1/tasks/bulk"),
    ("get", "/v1/tasks/{task_id}"),
    ("post", "/v1/tasks/{task_id}/cancel"),
    ("post", "/v1/tasks/{task_id}/requeue"),
    ("post", "/v1/tasks/take"),
    ("post", "/v1/tasks/complete"),
    ("post", "/v1/tasks/{task_id}/complete"),
    ("post", "/v1/tasks/{task_id}/fail"),
    ("post", "/v1/tasks/{task_id}/heartbeat"),
    ("post", "/v1/tasks/{task_id}/events"),
    ("get", "/v1/tasks/{task_id}/events"),
    ("post", "/v1/queue/register"),
    ("post", "/v1/queue/put"),
    ("post", "/v1/queue/take"),
    ("post", "/v1/queue/{task_id}/complete"),
    ("post", "/v1/queue/{task_id}/cancel"),
    ("get", "/v1/queue/{task_id}"),
    ("post", "/v1/files"),
    ("get", "/v1/files"),
    ("get", "/v1/files/{file_id}"),
    ("get", "/v1/files/{file_id}/content"),
    ("delete", "/v1/files/{file_id}"),
    ("get", "/livez"),
    ("get", "/readyz"),
    ("get", "/actuator/health"),
    ("get", "/openapi.json"),
}


# ---- bodies the server cannot read ----


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize("content", [b'{"queue": ', b"", b"[]", b"not json", b"\xff\xfe"])
async def test_an_unreadable_body_is_a_400(
    client: httpx.AsyncClient, method: str, path: str, content: bytes
) -> None:
    response = await client.request(method, path, content=content)
    error = assert_error(response, 400, kind="invalid_request_error")
    assert error["message"].startswith("invalid request body")


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        # wrong types
        ("/v1/tasks", {"queue": 7}, "queue"),
        ("/v1/tasks", {"queue": "q", "level": "0"}, "level"),
        ("/v1/tasks", {"queue": "q", "metadata": [1]}, "metadata"),
        ("/v1/tasks/take", {"queues": ["q"], "size": "1"}, "size"),
        ("/v1/tasks/take", {"queues": ["q"], "wait": True}, "wait"),
        ("/v1/queues", {"name": "q", "paused": "yes"}, "paused"),
        ("/v1/tasks/bulk", {"tasks": [{"queue": "q"}, {"queue": []}]}, "tasks[1].queue"),
        (
            "/v1/tasks/t/complete",
            {"lease_id": "l", "result": {"status_code": "200"}},
            "result.status_code",
        ),
        ("/v1/tasks/t/fail", {"lease_id": "l", "error": {"message": 5}}, "error.message"),
        ("/v1/tasks/t/heartbeat", {"lease_id": "l", "extend": "soon"}, "extend"),
        # unknown fields (a typo must not pass unnoticed)
        ("/v1/tasks", {"queue": "q", "priority": 1}, "priority"),
        ("/v1/tasks/take", {"queues": ["q"], "visibility_timeout": 5}, "visibility_timeout"),
        ("/v1/tasks/bulk", {"tasks": [{"queue": "q", "prio": 1}]}, "tasks[0].prio"),
        (
            "/v1/tasks/complete",
            {"items": [{"task_id": "t", "lease_id": "l", "x": 1}]},
            "items[0].x",
        ),
        ("/v1/tasks/t/heartbeat", {"lease_id": "l", "ttl": 3}, "ttl"),
        ("/v1/tasks/t/fail", {"lease_id": "l", "error": {"message": "m"}, "retries": 0}, "retries"),
        # missing fields
        ("/v1/tasks", {"level": 1}, "queue"),
        ("/v1/tasks/take", {}, "queues"),
        ("/v1/tasks/t/complete", {"result": {}}, "lease_id"),
        ("/v1/tasks/t/fail", {"lease_id": "l"}, "error"),
        ("/v1/tasks/complete", {"items": [{"task_id": "t"}]}, "items[0].lease_id"),
    ],
)
async def test_a_bad_field_is_a_400_naming_it(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], param: str
) -> None:
    response = await client.post(path, json=body)
    assert_error(response, 400, param=param, kind="invalid_request_error")


# ---- routes that do not exist ----


async def test_an_unknown_route_is_a_404_in_the_error_shape(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v2/nothing"), 404, kind="not_found_error")
    assert_error(await client.post("/v1/tasks/a/b/c", json={}), 404)


async def test_a_wrong_method_is_a_405_in_the_error_shape(client: httpx.AsyncClient) -> None:
    assert_error(await client.put(f"/v1/queues/{unique()}", json={}), 405)
    assert_error(await client.delete("/v1/tasks"), 405)


# ---- operations ----


async def test_liveness_readiness_and_health(client: httpx.AsyncClient) -> None:
    assert json_of(await client.get("/livez")) == {"status": "ok"}
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})
    health = await client.get("/actuator/health")
    assert (health.status_code, health.json()) == (200, {"status": "UP"})


async def test_openapi_documents_every_route(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = json.loads(response.content)  # strict: the whole document is valid JSON
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "Conveyor"
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert documented >= ROUTES, ROUTES - documented
    served = {
        (method.lower(), route.path)
        for route in APP_ROUTES
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert documented == served
    schemas = document["components"]["schemas"]
    assert set(schemas["Error"]["properties"]["error"]["required"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    # every request body refers to a schema the document defines
    for path, item in document["paths"].items():
        for operation in item.values():
            for content in operation.get("requestBody", {}).get("content", {}).values():
                ref = content["schema"]["$ref"]  # JSON bodies, and the multipart upload
                assert ref.removeprefix("#/components/schemas/") in schemas, (path, ref)
    put_body = schemas["PutBody"]
    assert {"queue", "response_mode", "timeout", "delay"} <= set(put_body["properties"])
    assert put_body.get("additionalProperties") is False  # unknown fields are refused


# ---- the command line ----


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `conveyor serve` with `args`; it must give up by itself."""
    command = [sys.executable, "-m", "conveyor.cli", "serve", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_serve_refuses_a_public_address_without_insecure() -> None:
    run = serve("--host", "0.0.0.0", "--port", "1")
    assert run.returncode != 0
    assert "refusing to serve 0.0.0.0" in run.stderr
    assert "--insecure" in run.stderr
    assert "Traceback" not in run.stderr


def test_serve_refuses_a_bad_port() -> None:
    run = serve("--port", "70000")
    assert run.returncode != 0
    assert "port must be 1-65535" in run.stderr
