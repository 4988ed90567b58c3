"""Helpers shared by the HTTP modules: unique names, the error shape, put/take shortcuts."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import httpx

ERROR_KEYS = {"message", "type", "param", "code"}

# every task object carries these (GET, put, take, complete, fail, cancel answers)
TASK_FIELDS = {
    "task_id",
    "queue",
    "level",
    "endpoint",
    "data",
    "status",
    "response_mode",
    "attempts",
    "max_attempts",
    "created_at",
    "started_at",
    "completed_at",
    "result",
    "error",
}

# a retry delay the tests can predict: fixed, no jitter
FIXED_30S = {"kind": "fixed", "base_s": 30.0, "cap_s": 30.0, "jitter": 0.0}


def unique(prefix: str = "q") -> str:
    """A queue name or task id no other test uses (the server is shared by the session)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def json_of(response: httpx.Response) -> Any:
    """The response's JSON body; fails the test with the body when it is not JSON."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.json()


def assert_error(
    response: httpx.Response,
    status: int,
    *,
    param: str | None = None,
    code: str | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    """Check an error answer: its status and OpenAI's shape; return the inner error."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body = json_of(response)
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == ERROR_KEYS, error
    assert isinstance(error["message"], str), error
    assert error["message"], error
    assert isinstance(error["type"], str), error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    if kind is not None:
        assert error["type"] == kind, error
    return error


async def put(client: httpx.AsyncClient, queue: str, **fields: Any) -> dict[str, Any]:
    """Put one callback-mode task; return the task object of the 202 answer."""
    response = await client.post("/v1/tasks", json={"queue": queue, **fields})
    assert response.status_code == 202, response.text
    task: dict[str, Any] = json_of(response)
    return task


async def bulk_put(client: httpx.AsyncClient, tasks: list[dict[str, Any]]) -> list[str]:
    """Bulk-put `tasks`; their ids in order."""
    response = await client.post("/v1/tasks/bulk", json={"tasks": tasks})
    assert response.status_code == 202, response.text
    return [item["task_id"] for item in json_of(response)["data"]]


async def take(client: httpx.AsyncClient, *queues: str, **options: Any) -> list[dict[str, Any]]:
    """Take from `queues`; the leased tasks."""
    response = await client.post("/v1/tasks/take", json={"queues": list(queues), **options})
    assert response.status_code == 200, response.text
    tasks: list[dict[str, Any]] = json_of(response)["tasks"]
    return tasks


async def take_one(client: httpx.AsyncClient, *queues: str, **options: Any) -> dict[str, Any]:
    """Take exactly one task, failing the test if there is none."""
    tasks = await take(client, *queues, **options)
    assert len(tasks) == 1, tasks
    return tasks[0]


async def get_task(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    """GET a task that must exist."""
    response = await client.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 200, response.text
    task: dict[str, Any] = json_of(response)
    return task


async def wait_for_status(
    client: httpx.AsyncClient, task_id: str, status: str, within: float = 5.0
) -> dict[str, Any]:
    """Poll a task until it reaches `status`; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        response = await client.get(f"/v1/tasks/{task_id}")
        if response.status_code == 200 and response.json()["status"] == status:
            task: dict[str, Any] = response.json()
            return task
        assert time.monotonic() < deadline, f"task {task_id} never became {status}: {response.text}"
        await asyncio.sleep(0.02)


class SseMessage(NamedTuple):
    """One Server-Sent Events message, its data read as JSON."""

    id: str | None
    event: str
    data: Any


async def sse_messages(response: httpx.Response) -> AsyncIterator[SseMessage]:
    """The messages of an event stream as they arrive (the text/event-stream format)."""
    fields: dict[str, str] = {}
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:  # a blank line ends a message
            if data:
                yield SseMessage(
                    fields.get("id"), fields.get("event", "message"), json.loads("\n".join(data))
                )
            fields, data = {}, []
        elif not line.startswith(":"):  # a colon first: a comment
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value


async def read_stream(response: httpx.Response) -> list[SseMessage]:
    """Every message up to and including the last one (`result` or `error`)."""
    assert response.status_code == 200, (await response.aread()).decode()
    assert response.headers["content-type"].startswith("text/event-stream")
    messages: list[SseMessage] = []
    async for message in sse_messages(response):
        messages.append(message)
        if message.event in ("result", "error"):
            break
    return messages
