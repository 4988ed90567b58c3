"""Queues over HTTP: register with defaults, list, counts per level, pause, obliterate."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.http._support import assert_error, json_of, put, take, take_one, unique

DEFAULTS = {
    "object": "queue",
    "max_level": 9,
    "process_timeout": 60.0,
    "max_attempts": 3,
    "backoff": {"kind": "exponential", "base_s": 1.0, "cap_s": 300.0, "jitter": 0.1},
    "retention": 604_800.0,
    "paused": False,
}


async def test_register_fills_in_the_defaults(client: httpx.AsyncClient, queue: str) -> None:
    response = await client.post("/v1/queues", json={"name": queue})
    assert response.status_code == 200, response.text
    body = json_of(response)
    assert body["created_at"] > 0
    assert {key: value for key, value in body.items() if key != "created_at"} == {
        "name": queue,
        **DEFAULTS,
    }


async def test_register_again_replaces_the_defaults(client: httpx.AsyncClient, queue: str) -> None:
    await client.post("/v1/queues", json={"name": queue})
    own = {"max_level": 2, "process_timeout": 5.0, "max_attempts": 7, "retention": 3600.0}
    response = await client.post("/v1/queues", json={"name": queue, **own})
    assert response.status_code == 200, response.text
    stored = json_of(await client.get(f"/v1/queues/{queue}"))
    assert {key: stored[key] for key in own} == own
    # a put inherits them: max_attempts, and the highest level allowed
    assert (await put(client, queue))["max_attempts"] == 7
    refused = await client.post("/v1/tasks", json={"queue": queue, "level": 3})
    assert_error(refused, 400, param="level", kind="invalid_request_error")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_level": 100}, "max_level"),
        ({"max_level": "9"}, "max_level"),
        ({"process_timeout": 0}, "process_timeout"),
        ({"retention": -1}, "retention"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"backoff": {"jitter": 2}}, "backoff.jitter"),
        ({"paused": "yes"}, "paused"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_register_refuses_bad_defaults(
    client: httpx.AsyncClient, queue: str, fields: dict[str, Any], param: str
) -> None:
    response = await client.post("/v1/queues", json={"name": queue, **fields})
    assert_error(response, 400, param=param, kind="invalid_request_error")
    assert_error(await client.get(f"/v1/queues/{queue}"), 404, code="not_found")


@pytest.mark.parametrize("body", [{}, {"name": "no spaces"}, {"name": "x" * 65}, {"name": 7}])
async def test_register_refuses_bad_names(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    assert_error(await client.post("/v1/queues", json=body), 400, param="name")


async def test_list_shows_every_queue(client: httpx.AsyncClient) -> None:
    names = [unique(), unique()]
    for name in names:
        await client.post("/v1/queues", json={"name": name, "max_level": 4})
    try:
        body = json_of(await client.get("/v1/queues"))
        assert body["object"] == "list"
        listed = {queue["name"]: queue for queue in body["data"]}
        for name in names:
            assert listed[name]["max_level"] == 4
            assert listed[name]["object"] == "queue"
            assert "levels" not in listed[name]  # counts are for GET /v1/queues/{name}
    finally:
        for name in names:
            await client.delete(f"/v1/queues/{name}")


async def test_get_counts_tasks_per_level_and_state(client: httpx.AsyncClient, queue: str) -> None:
    for level in (0, 0, 3):
        await put(client, queue, level=level)
    await take_one(client, f"{queue}:3")
    await put(client, queue, level=5, delay=60)
    body = json_of(await client.get(f"/v1/queues/{queue}"))
    assert body["name"] == queue
    levels = {level["level"]: level for level in body["levels"]}
    assert {level: entry["counts"] for level, entry in levels.items()} == {
        0: {"queued": 2},
        3: {"running": 1},
        5: {"scheduled": 1},
    }
    assert levels[0]["oldest_queued_age"] >= 0
    assert levels[3]["oldest_queued_age"] is None


async def test_get_unknown_or_misnamed_queue(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(f"/v1/queues/{unique()}"), 404, code="not_found")
    assert_error(await client.get("/v1/queues/bad.name"), 400, param="name")


async def test_pause_stops_takes_until_resume(client: httpx.AsyncClient, queue: str) -> None:
    await client.post("/v1/queues", json={"name": queue})
    paused = await client.patch(f"/v1/queues/{queue}", json={"paused": True})
    assert paused.status_code == 200, paused.text
    assert json_of(paused)["paused"] is True
    task = await put(client, queue)  # a paused queue still takes puts
    assert json_of(await client.get(f"/v1/queues/{queue}"))["paused"] is True
    assert await take(client, queue) == []
    resumed = await client.patch(f"/v1/queues/{queue}", json={"paused": False})
    assert json_of(resumed)["paused"] is False
    assert (await take_one(client, queue))["task_id"] == task["task_id"]


async def test_patch_changes_defaults_and_checks_them(
    client: httpx.AsyncClient, queue: str
) -> None:
    await client.post("/v1/queues", json={"name": queue})
    response = await client.patch(f"/v1/queues/{queue}", json={"max_attempts": 9})
    assert json_of(response)["max_attempts"] == 9
    assert json_of(response)["paused"] is False  # fields not sent stay as they were
    bad = await client.patch(f"/v1/queues/{queue}", json={"process_timeout": -1})
    assert_error(bad, 400, param="process_timeout")
    assert_error(await client.patch(f"/v1/queues/{queue}", json={"name": "x"}), 400, param="name")
    assert_error(await client.patch(f"/v1/queues/{unique()}", json={"paused": True}), 404)


async def test_delete_refuses_running_tasks_unless_forced(
    client: httpx.AsyncClient, queue: str
) -> None:
    await put(client, queue)
    running = await take_one(client, queue)
    await put(client, queue)
    refused = await client.delete(f"/v1/queues/{queue}")
    assert_error(refused, 409, kind="conflict_error")
    assert json_of(await client.get(f"/v1/queues/{queue}"))["name"] == queue
    forced = await client.delete(f"/v1/queues/{queue}", params={"force": "true"})
    assert forced.status_code == 200, forced.text
    assert json_of(forced) == {
        "object": "queue.deleted",
        "name": queue,
        "deleted": True,
        "tasks_deleted": 2,
    }
    assert_error(await client.get(f"/v1/queues/{queue}"), 404)
    assert_error(await client.get(f"/v1/tasks/{running['task_id']}"), 404)


async def test_delete_without_running_tasks(client: httpx.AsyncClient, queue: str) -> None:
    await put(client, queue)
    response = await client.delete(f"/v1/queues/{queue}")
    assert json_of(response)["tasks_deleted"] == 1
    assert_error(await client.delete(f"/v1/queues/{queue}"), 404, code="not_found")
