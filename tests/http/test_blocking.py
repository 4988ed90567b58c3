"""Blocking mode: the put answers with the worker's result; timeouts, hang-ups, failures."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.http._support import (
    assert_error,
    get_task,
    json_of,
    take_one,
    unique,
    wait_for_status,
)


async def blocking_put(client: httpx.AsyncClient, queue: str, **fields: Any) -> httpx.Response:
    """Put a blocking-mode task and wait for the answer."""
    body = {"queue": queue, "response_mode": "blocking", **fields}
    return await client.post("/v1/tasks", json=body)


async def worker(
    client: httpx.AsyncClient, queue: str, action: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Long-poll one task from `queue` and settle it with `action` (complete or fail)."""
    task = await take_one(client, queue, wait=10)
    response = await client.post(
        f"/v1/tasks/{task['task_id']}/{action}", json={"lease_id": task["lease_id"], **body}
    )
    assert response.status_code == 200, response.text
    settled: dict[str, Any] = json_of(response)
    return settled


@pytest.mark.parametrize(
    ("result", "status", "answer"),
    [
        ({"status_code": 201, "body": {"id": "chatcmpl-1", "choices": [1, 2]}}, 201, None),
        ({"status_code": 422, "body": {"detail": "no"}}, 422, None),
        ({"body": "just text"}, 200, None),
        ({"status_code": 200}, 200, None),
    ],
)
async def test_blocking_put_answers_with_the_result(
    client: httpx.AsyncClient,
    queue: str,
    result: dict[str, Any],
    status: int,
    answer: object,
) -> None:
    working = asyncio.ensure_future(worker(client, queue, "complete", {"result": result}))
    response = await blocking_put(client, queue, data={"prompt": "hi"}, timeout=10)
    settled = await working
    assert response.status_code == status, response.text
    assert response.json() == result.get("body", answer)
    assert settled["status"] == "succeeded"
    assert settled["result"] == {"status_code": status, "body": result.get("body")}


async def test_blocking_put_times_out_with_408_and_cancels(
    client: httpx.AsyncClient, queue: str
) -> None:
    task_id = unique("t")
    response = await blocking_put(client, queue, task_id=task_id, timeout=0.3)
    error = assert_error(response, 408, code="timeout", kind="timeout_error")
    assert task_id in error["message"]
    task = await get_task(client, task_id)
    # the timeout was the caller's wait, not a deadline: the task is cancelled, not expired
    assert (task["status"], task["timeout"], task["expires_at"]) == ("cancelled", None, None)


@pytest.mark.parametrize("wait", [0, -1, 601])
async def test_blocking_timeout_is_bounded(
    client: httpx.AsyncClient, queue: str, wait: float
) -> None:
    response = await blocking_put(client, queue, timeout=wait)
    assert_error(response, 400, param="timeout")


async def test_a_client_that_hangs_up_cancels_its_task(
    client: httpx.AsyncClient, server: str, queue: str
) -> None:
    task_id = unique("t")
    async with httpx.AsyncClient(base_url=server, timeout=30.0) as leaving:
        waiting = asyncio.ensure_future(blocking_put(leaving, queue, task_id=task_id, timeout=30))
        await wait_for_status(client, task_id, "queued")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    # the server notices the closed connection and cancels the task nobody waits for
    task = await wait_for_status(client, task_id, "cancelled")
    assert task["response_mode"] == "blocking"


async def test_a_task_that_fails_for_good_answers_502(
    client: httpx.AsyncClient, queue: str
) -> None:
    error = {"message": "the model fell over", "code": "model_error"}
    working = asyncio.ensure_future(worker(client, queue, "fail", {"error": error, "retry": False}))
    response = await blocking_put(client, queue, timeout=10)
    await working
    failure = assert_error(response, 502, code="model_error")
    assert failure["message"] == "the model fell over"


async def test_a_retried_failure_keeps_the_caller_waiting(
    client: httpx.AsyncClient, queue: str
) -> None:
    async def fail_then_complete() -> None:
        error = {"error": {"message": "flaky"}, "retry_after": 0}
        await worker(client, queue, "fail", error)
        await worker(client, queue, "complete", {"result": {"body": {"ok": True}}})

    working = asyncio.ensure_future(fail_then_complete())
    response = await blocking_put(client, queue, timeout=10)
    await working
    assert (response.status_code, response.json()) == (200, {"ok": True})


async def test_a_task_cancelled_by_someone_else_answers_409(
    client: httpx.AsyncClient, queue: str
) -> None:
    task_id = unique("t")
    waiting = asyncio.ensure_future(blocking_put(client, queue, task_id=task_id, timeout=10))
    await wait_for_status(client, task_id, "queued")
    await client.post(f"/v1/tasks/{task_id}/cancel")
    assert_error(await waiting, 409, code="task_cancelled")
