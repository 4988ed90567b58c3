"""Producer routes: put (callback mode), idempotent ids, delays, bulk put, get, list, cancel."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.http._support import (
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

# ---- one task ----


async def test_put_answers_202_with_the_task(client: httpx.AsyncClient, queue: str) -> None:
    data = {"messages": [{"role": "user", "content": "héllo ☃"}], "n": None, "x": 1.5}
    fields: dict[str, Any] = {
        "level": 2,
        "endpoint": "/v1/chat/completions",
        "data": data,
        "custom_id": "req-1",
        "group": "tenant-a",
        "metadata": {"k": ["v", 2]},
        "max_attempts": 5,
    }
    before = time.time()
    response = await client.post("/v1/tasks", json={"queue": queue, **fields})
    assert response.status_code == 202, response.text
    task = json_of(response)
    assert set(task) >= TASK_FIELDS
    assert "lease_id" not in task
    assert {key: task[key] for key in fields} == fields
    assert task["queue"] == queue
    assert task["status"] == "queued"
    assert task["response_mode"] == "callback"
    assert task["attempts"] == 0
    assert before - 1 <= task["created_at"] <= time.time() + 1
    assert (task["started_at"], task["completed_at"]) == (None, None)
    assert (task["result"], task["error"]) == (None, None)
    assert await get_task(client, task["task_id"]) == task


async def test_put_needs_only_a_queue(client: httpx.AsyncClient, queue: str) -> None:
    task = await put(client, queue)
    assert (task["level"], task["endpoint"], task["data"]) == (0, "", None)
    assert (task["response_mode"], task["max_attempts"]) == ("callback", 3)
    assert json_of(await client.get(f"/v1/queues/{queue}"))["name"] == queue


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"level": 10}, "level"),
        ({"level": -1}, "level"),
        ({"delay": -1}, "delay"),
        ({"delay": 5, "run_at": 2_000_000_000}, "delay"),
        ({"timeout": 0}, "timeout"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"callback_url": "ftp://example.com/hook"}, "callback_url"),
        ({"task_id": "has space"}, "task_id"),
        ({"response_mode": "carrier-pigeon"}, "response_mode"),
        ({"endpoint": "x" * 513}, "endpoint"),
    ],
)
async def test_a_refused_put_stores_nothing(
    client: httpx.AsyncClient, queue: str, fields: dict[str, Any], param: str
) -> None:
    response = await client.post("/v1/tasks", json={"queue": queue, **fields})
    assert_error(response, 400, param=param, kind="invalid_request_error")
    # not even the queue a put would have registered
    assert_error(await client.get(f"/v1/queues/{queue}"), 404)


async def test_put_refuses_a_bad_queue_name(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/v1/tasks", json={"queue": "a/b"}), 400, param="queue")


async def test_client_task_id_is_idempotent(client: httpx.AsyncClient, queue: str) -> None:
    body: dict[str, Any] = {"queue": queue, "task_id": unique("t"), "data": {"prompt": "hi"}}
    first = await client.post("/v1/tasks", json=body)
    again = await client.post("/v1/tasks", json=body)
    assert (first.status_code, again.status_code) == (202, 202)
    assert json_of(again) == json_of(first)
    other = await client.post("/v1/tasks", json={**body, "data": {"prompt": "bye"}})
    assert_error(other, 409, code="idempotency_conflict", kind="conflict_error")
    assert (await get_task(client, body["task_id"]))["data"] == {"prompt": "hi"}


async def test_delay_schedules_the_task(client: httpx.AsyncClient, queue: str) -> None:
    task = await put(client, queue, delay=30)
    assert task["status"] == "scheduled"
    assert task["run_at"] - task["created_at"] == pytest.approx(30.0)
    assert await take(client, queue) == []


async def test_get_unknown_task(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(f"/v1/tasks/{unique('t')}"), 404, code="not_found")


# ---- bulk ----


async def test_bulk_put_stores_every_task_in_order(client: httpx.AsyncClient, queue: str) -> None:
    ids = await bulk_put(client, [{"queue": queue, "data": {"n": n}} for n in range(3)])
    assert len(set(ids)) == 3
    for n, task_id in enumerate(ids):
        task = await get_task(client, task_id)
        assert (task["data"], task["status"]) == ({"n": n}, "queued")


async def test_bulk_put_is_all_or_nothing(client: httpx.AsyncClient, queue: str) -> None:
    tasks = [{"queue": queue}, {"queue": queue, "level": 99}, {"queue": queue}]
    response = await client.post("/v1/tasks/bulk", json={"tasks": tasks})
    error = assert_error(response, 400, param="tasks[1].level")
    assert error["message"].startswith("tasks[1]")
    assert_error(await client.get(f"/v1/queues/{queue}"), 404)


async def test_bulk_put_with_a_conflicting_id_stores_nothing(
    client: httpx.AsyncClient, queue: str
) -> None:
    taken = await put(client, queue, task_id=unique("t"), data=1)
    fresh = unique("t")
    batch = [{"queue": queue, "task_id": fresh}, {"queue": queue, "task_id": taken["task_id"]}]
    response = await client.post("/v1/tasks/bulk", json={"tasks": batch})
    assert_error(response, 409, code="idempotency_conflict")
    assert_error(await client.get(f"/v1/tasks/{fresh}"), 404)


@pytest.mark.parametrize(
    ("tasks", "param"),
    [
        ([], "tasks"),
        ([{"queue": "ok", "response_mode": "blocking"}], "tasks"),
        ([{"queue": "ok"}, {"queue": "ok", "level": "1"}], "tasks[1].level"),
        ([{"queue": "ok", "priority": 1}], "tasks[0].priority"),
        ([{}], "tasks[0].queue"),
    ],
)
async def test_bulk_put_refusals_name_the_task(
    client: httpx.AsyncClient, tasks: list[dict[str, Any]], param: str
) -> None:
    response = await client.post("/v1/tasks/bulk", json={"tasks": tasks})
    assert_error(response, 400, param=param)


# ---- listing ----


async def test_list_pages_until_has_more_is_false(client: httpx.AsyncClient, queue: str) -> None:
    ids = await bulk_put(client, [{"queue": queue, "data": n} for n in range(7)])
    seen: list[str] = []
    pages: list[tuple[int, bool]] = []
    after: str | None = None
    while True:
        params = {"queue": queue, "limit": "3", **({"after": after} if after else {})}
        page = json_of(await client.get("/v1/tasks", params=params))
        assert page["object"] == "list"
        assert all("lease_id" not in task for task in page["data"])
        seen += [task["task_id"] for task in page["data"]]
        pages.append((len(page["data"]), page["has_more"]))
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        after = page["next_cursor"]
    assert pages == [(3, True), (3, True), (1, False)]
    assert seen == ids


async def test_list_filters_by_status(client: httpx.AsyncClient, queue: str) -> None:
    ids = await bulk_put(client, [{"queue": queue} for _ in range(4)])
    running = {task["task_id"] for task in await take(client, queue, size=2)}
    listed = json_of(await client.get("/v1/tasks", params={"queue": queue, "status": "running"}))
    assert {task["task_id"] for task in listed["data"]} == running
    assert {task["status"] for task in listed["data"]} == {"running"}
    queued = json_of(await client.get("/v1/tasks", params={"queue": queue, "status": "queued"}))
    assert {task["task_id"] for task in queued["data"]} == set(ids) - running


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({}, "queue"),
        ({"status": "sleeping"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
    ],
)
async def test_list_refuses_bad_parameters(
    client: httpx.AsyncClient, queue: str, params: dict[str, str], param: str
) -> None:
    if param != "queue":
        params = {"queue": queue, **params}
    assert_error(await client.get("/v1/tasks", params=params), 400, param=param)


# ---- cancel and requeue ----


async def test_cancel_a_queued_task(client: httpx.AsyncClient, queue: str) -> None:
    task = await put(client, queue)
    response = await client.post(f"/v1/tasks/{task['task_id']}/cancel")
    assert response.status_code == 200, response.text
    cancelled = json_of(response)
    assert cancelled["status"] == "cancelled"
    assert cancelled["completed_at"] is not None
    assert (await get_task(client, task["task_id"]))["status"] == "cancelled"
    assert await take(client, queue) == []
    # cancelling again changes nothing
    again = await client.post(f"/v1/tasks/{task['task_id']}/cancel")
    assert json_of(again)["status"] == "cancelled"


async def test_cancel_a_running_task_waits_for_its_worker(
    client: httpx.AsyncClient, queue: str
) -> None:
    await put(client, queue)
    taken = await take_one(client, queue)
    marked = json_of(await client.post(f"/v1/tasks/{taken['task_id']}/cancel"))
    assert (marked["status"], marked["cancel_requested"]) == ("running", True)
    beat = await client.post(
        f"/v1/tasks/{taken['task_id']}/heartbeat", json={"lease_id": taken["lease_id"]}
    )
    assert json_of(beat)["cancelled"] is True
    assert (await get_task(client, taken["task_id"]))["status"] == "cancelled"


async def test_cancel_refuses_an_ended_task(client: httpx.AsyncClient, queue: str) -> None:
    await put(client, queue)
    taken = await take_one(client, queue)
    await client.post(
        f"/v1/tasks/{taken['task_id']}/complete", json={"lease_id": taken["lease_id"]}
    )
    response = await client.post(f"/v1/tasks/{taken['task_id']}/cancel")
    assert_error(response, 409, code="invalid_transition")
    assert_error(await client.post(f"/v1/tasks/{unique('t')}/cancel"), 404)


async def test_requeue_a_failed_task(client: httpx.AsyncClient, queue: str) -> None:
    task = await put(client, queue, max_attempts=1)
    taken = await take_one(client, queue)
    failed = await client.post(
        f"/v1/tasks/{task['task_id']}/fail",
        json={"lease_id": taken["lease_id"], "error": {"message": "bad gateway"}},
    )
    assert json_of(failed)["status"] == "failed"
    response = await client.post(f"/v1/tasks/{task['task_id']}/requeue")
    assert response.status_code == 200, response.text
    requeued = json_of(response)
    assert (requeued["status"], requeued["attempts"], requeued["error"]) == ("queued", 0, None)
    assert (await take_one(client, queue))["task_id"] == task["task_id"]
    # only a failed task can be requeued
    again = await client.post(f"/v1/tasks/{task['task_id']}/requeue")
    assert_error(again, 409, code="invalid_transition")
