"""Worker routes: take (long-poll), complete one or many, fail, heartbeat, lease conflicts."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.http._support import (
    FIXED_30S,
    TASK_FIELDS,
    assert_error,
    bulk_put,
    get_task,
    json_of,
    put,
    take,
    take_one,
    unique,
)


async def settle(
    client: httpx.AsyncClient, task: dict[str, Any], action: str, **body: Any
) -> httpx.Response:
    """POST /v1/tasks/{id}/{action} with the task's lease and `body`."""
    return await client.post(
        f"/v1/tasks/{task['task_id']}/{action}", json={"lease_id": task["lease_id"], **body}
    )


# ---- take ----


async def test_take_leases_the_task(client: httpx.AsyncClient, queue: str) -> None:
    put_task = await put(client, queue, data={"x": 1})
    task = await take_one(client, queue, process_timeout=30, worker_id="w-1")
    assert set(task) >= TASK_FIELDS
    assert (task["task_id"], task["data"], task["status"]) == (
        put_task["task_id"],
        {"x": 1},
        "running",
    )
    assert (task["attempts"], task["worker_id"]) == (1, "w-1")
    assert isinstance(task["lease_id"], str)
    assert task["lease_id"]
    assert task["lease_expires_at"] - task["started_at"] == pytest.approx(30.0)
    assert await take(client, queue) == []


async def test_take_by_level_and_size(client: httpx.AsyncClient, queue: str) -> None:
    await bulk_put(client, [{"queue": queue, "level": level} for level in (0, 2, 2, 2)])
    tasks = await take(client, f"{queue}:2", size=2)
    assert [task["level"] for task in tasks] == [2, 2]
    assert len(await take(client, queue, size=10)) == 2


async def test_an_empty_take_answers_at_once(client: httpx.AsyncClient, queue: str) -> None:
    started = time.monotonic()
    assert await take(client, queue) == []
    assert time.monotonic() - started < 1.0


async def test_a_long_poll_ends_empty_when_wait_runs_out(
    client: httpx.AsyncClient, queue: str
) -> None:
    started = time.monotonic()
    assert await take(client, queue, wait=0.3) == []
    assert 0.25 <= time.monotonic() - started < 3.0


async def test_a_long_poll_wakes_when_a_task_is_put(
    client: httpx.AsyncClient, server: str, queue: str
) -> None:
    polling = asyncio.ensure_future(take(client, queue, wait=5))
    await asyncio.sleep(0.3)  # let the take reach its wait
    assert not polling.done()
    async with httpx.AsyncClient(base_url=server) as producer:
        task = await put(producer, queue)
    put_at = time.monotonic()
    tasks = await polling
    assert time.monotonic() - put_at < 1.0  # woken by the put, not by the 5 s wait ending
    assert [t["task_id"] for t in tasks] == [task["task_id"]]


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"queues": []}, "queues"),
        ({"queues": ["q:x"]}, "queues"),
        ({"queues": ["q"], "strategy": "random"}, "strategy"),
        ({"queues": ["q"], "size": 0}, "size"),
        ({"queues": ["q"], "wait": 61}, "wait"),
        ({"queues": ["q"], "process_timeout": -5}, "process_timeout"),
        ({"queues": "q"}, "queues"),
    ],
)
async def test_take_refuses_bad_options(
    client: httpx.AsyncClient, options: dict[str, Any], param: str
) -> None:
    assert_error(await client.post("/v1/tasks/take", json=options), 400, param=param)


# ---- complete ----


async def test_complete_records_the_result(client: httpx.AsyncClient, queue: str) -> None:
    await put(client, queue)
    task = await take_one(client, queue)
    result = {"status_code": 201, "body": {"answer": 42}}
    response = await settle(client, task, "complete", result=result)
    assert response.status_code == 200, response.text
    done = json_of(response)
    assert (done["status"], done["result"], done["error"]) == ("succeeded", result, None)
    assert done["completed_at"] >= done["started_at"]
    assert "lease_id" not in done
    assert await get_task(client, task["task_id"]) == done
    # the lease ended with the task
    assert_error(await settle(client, task, "complete"), 409, code="lease_lost")


async def test_complete_checks_the_result(client: httpx.AsyncClient, queue: str) -> None:
    await put(client, queue)
    task = await take_one(client, queue)
    response = await settle(client, task, "complete", result={"status_code": 99})
    assert_error(response, 400, param="result.status_code")
    assert (await get_task(client, task["task_id"]))["status"] == "running"


async def test_bulk_complete_answers_per_item(client: httpx.AsyncClient, queue: str) -> None:
    await bulk_put(client, [{"queue": queue} for _ in range(3)])
    first, second, third = await take(client, queue, size=3)
    # an old lease: the second task failed and was taken again under a new one
    await settle(client, second, "fail", error={"message": "retry me"}, retry_after=0)
    retaken = await take_one(client, queue)
    assert retaken["task_id"] == second["task_id"]
    result = {"status_code": 200, "body": "ok"}
    items = [
        {"task_id": task["task_id"], "lease_id": task["lease_id"], "result": result}
        for task in (first, second, third)
    ]
    items.append({"task_id": unique("t"), "lease_id": "nope", "result": result})
    response = await client.post("/v1/tasks/complete", json={"items": items})
    assert response.status_code == 200, response.text
    body = json_of(response)
    assert body["object"] == "list"
    answers = body["data"]
    assert [answer["task_id"] for answer in answers] == [item["task_id"] for item in items]
    assert [answer["status_code"] for answer in answers] == [200, 409, 200, 404]
    assert answers[0]["status"] == answers[2]["status"] == "succeeded"
    assert answers[1]["error"]["code"] == "lease_lost"
    assert answers[3]["error"]["type"] == "not_found_error"
    assert (await get_task(client, second["task_id"]))["status"] == "running"
    assert (await get_task(client, third["task_id"]))["result"] == result


# ---- fail ----


async def test_fail_with_retry_schedules_a_backoff(client: httpx.AsyncClient, queue: str) -> None:
    await put(client, queue, backoff=FIXED_30S)
    task = await take_one(client, queue)
    error = {"message": "rate limited", "code": "429"}
    response = await settle(client, task, "fail", error=error)
    assert response.status_code == 200, response.text
    failed = json_of(response)
    assert (failed["status"], failed["attempts"], failed["error"]) == ("scheduled", 1, error)
    assert failed["run_at"] - time.time() == pytest.approx(30.0, abs=5.0)
    assert await take(client, queue) == []


async def test_fail_with_retry_after_zero_requeues(client: httpx.AsyncClient, queue: str) -> None:
    await put(client, queue)
    task = await take_one(client, queue)
    failed = json_of(await settle(client, task, "fail", error={"message": "x"}, retry_after=0))
    assert (failed["status"], failed["attempts"]) == ("queued", 1)
    again = await take_one(client, queue)
    assert (again["task_id"], again["attempts"]) == (task["task_id"], 2)
    assert again["lease_id"] != task["lease_id"]


async def test_fail_without_retry_is_final(client: httpx.AsyncClient, queue: str) -> None:
    await put(client, queue, max_attempts=5)
    task = await take_one(client, queue)
    response = await settle(client, task, "fail", error={"message": "bad input"}, retry=False)
    failed = json_of(response)
    assert (failed["status"], failed["attempts"]) == ("failed", 1)
    assert failed["error"] == {"message": "bad input", "code": None}
    assert failed["completed_at"] is not None


async def test_the_last_attempt_fails_for_good(client: httpx.AsyncClient, queue: str) -> None:
    await put(client, queue, max_attempts=1)
    task = await take_one(client, queue)
    failed = json_of(await settle(client, task, "fail", error={"message": "x"}))
    assert (failed["status"], failed["attempts"]) == ("failed", 1)


# ---- heartbeat ----


async def test_heartbeat_extends_the_lease(client: httpx.AsyncClient, queue: str) -> None:
    await put(client, queue)
    task = await take_one(client, queue, process_timeout=5)
    response = await settle(client, task, "heartbeat", extend=120)
    assert response.status_code == 200, response.text
    beat = json_of(response)
    assert beat["cancelled"] is False
    assert beat["lease_expires_at"] > task["lease_expires_at"] + 100
    stored = await get_task(client, task["task_id"])
    assert stored["lease_expires_at"] == beat["lease_expires_at"]
    assert_error(await settle(client, task, "heartbeat", extend=0), 400, param="extend")


# ---- conflicts and unknown tasks ----


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("complete", {"result": {"body": 1}}),
        ("fail", {"error": {"message": "x"}}),
        ("heartbeat", {}),
    ],
)
async def test_a_foreign_lease_is_a_conflict(
    client: httpx.AsyncClient, queue: str, action: str, body: dict[str, Any]
) -> None:
    await put(client, queue)
    task = await take_one(client, queue)
    foreign = {**task, "lease_id": uuid.uuid4().hex}
    assert_error(await settle(client, foreign, action, **body), 409, code="lease_lost")
    assert (await get_task(client, task["task_id"]))["status"] == "running"
    unknown = {**task, "task_id": unique("t")}
    assert_error(await settle(client, unknown, action, **body), 404, code="not_found")


async def test_the_lease_id_is_shown_only_to_the_taker(
    client: httpx.AsyncClient, queue: str
) -> None:
    await put(client, queue)
    task = await take_one(client, queue)
    assert "lease_id" in task
    shown = [
        await get_task(client, task["task_id"]),
        *json_of(await client.get("/v1/tasks", params={"queue": queue}))["data"],
        json_of(await client.post(f"/v1/tasks/{task['task_id']}/cancel")),
    ]
    for seen in shown:
        assert "lease_id" not in seen
        assert task["lease_id"] not in str(seen)
