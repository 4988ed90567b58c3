"""Streaming mode and task events: the put relays a worker's events over SSE, then the end."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.http._support import (
    assert_error,
    get_task,
    json_of,
    put,
    read_stream,
    take_one,
    unique,
    wait_for_status,
)


def streaming_put(client: httpx.AsyncClient, queue: str, **fields: Any) -> Any:
    """The streamed response of a streaming-mode put (use with `async with`)."""
    body = {"queue": queue, "response_mode": "streaming", **fields}
    return client.stream("POST", "/v1/tasks", json=body)


async def emit(client: httpx.AsyncClient, task: dict[str, Any], *events: Any) -> httpx.Response:
    """Append `events` to a running task under its lease."""
    return await client.post(
        f"/v1/tasks/{task['task_id']}/events",
        json={"lease_id": task["lease_id"], "events": list(events)},
    )


async def test_a_streaming_put_relays_events_then_the_result(
    client: httpx.AsyncClient, server: str, queue: str
) -> None:
    result = {"status_code": 200, "body": {"text": "hello"}}

    async def work() -> None:
        async with httpx.AsyncClient(base_url=server) as worker:
            task = await take_one(worker, queue, wait=10)
            first = await emit(
                worker, task, {"event": "token", "data": {"t": "hel"}}, {"data": "lo"}
            )
            assert json_of(first) == {"last_event_id": 2}
            await emit(worker, task, {"event": "progress", "data": 1.0})
            await worker.post(
                f"/v1/tasks/{task['task_id']}/complete",
                json={"lease_id": task["lease_id"], "result": result},
            )

    working = asyncio.ensure_future(work())
    task_id = unique("t")
    async with streaming_put(client, queue, task_id=task_id, timeout=10) as response:
        messages = await read_stream(response)
    await working
    assert [(m.id, m.event, m.data) for m in messages[:-1]] == [
        ("1", "token", {"t": "hel"}),
        ("2", "message", "lo"),
        ("3", "progress", 1.0),
    ]
    last = messages[-1]
    assert (last.id, last.event) == (None, "result")
    assert last.data == {"task_id": task_id, "status": "succeeded", "result": result, "error": None}


async def test_a_failed_task_ends_its_stream_with_the_error(
    client: httpx.AsyncClient, queue: str
) -> None:
    async def work() -> None:
        task = await take_one(client, queue, wait=10)
        await client.post(
            f"/v1/tasks/{task['task_id']}/fail",
            json={"lease_id": task["lease_id"], "error": {"message": "no"}, "retry": False},
        )

    working = asyncio.ensure_future(work())
    async with streaming_put(client, queue, timeout=10) as response:
        (last,) = await read_stream(response)
    await working
    assert last.event == "result"
    assert (last.data["status"], last.data["error"]) == ("failed", {"message": "no", "code": None})


async def test_a_streaming_timeout_is_an_error_message_and_cancels(
    client: httpx.AsyncClient, queue: str
) -> None:
    task_id = unique("t")
    async with streaming_put(client, queue, task_id=task_id, timeout=0.3) as response:
        (last,) = await read_stream(response)
    assert last.event == "error", last
    assert last.data["status_code"] == 408
    assert last.data["error"]["code"] == "timeout"
    task = await get_task(client, task_id)
    assert (task["status"], task["timeout"], task["expires_at"]) == ("cancelled", None, None)


async def test_a_stream_dropped_by_its_client_cancels_the_task(
    client: httpx.AsyncClient, server: str, queue: str
) -> None:
    task_id = unique("t")
    async with (
        httpx.AsyncClient(base_url=server) as leaving,
        streaming_put(leaving, queue, task_id=task_id, timeout=30) as response,
    ):
        assert response.status_code == 200
        await wait_for_status(client, task_id, "queued")
    await wait_for_status(client, task_id, "cancelled")


@pytest.mark.parametrize(
    ("fields", "param"), [({"level": 99}, "level"), ({"timeout": 0}, "timeout")]
)
async def test_bad_input_is_refused_before_the_stream_starts(
    client: httpx.AsyncClient, queue: str, fields: dict[str, Any], param: str
) -> None:
    async with streaming_put(client, queue, **fields) as response:
        await response.aread()
    assert_error(response, 400, param=param)


async def test_following_a_task_replays_its_events_then_goes_live(
    client: httpx.AsyncClient, server: str, queue: str
) -> None:
    await put(client, queue)
    task = await take_one(client, queue)
    await emit(client, task, {"data": 1}, {"data": 2})
    path = f"/v1/tasks/{task['task_id']}/events"
    async with (
        httpx.AsyncClient(base_url=server) as reader,
        reader.stream("GET", path, params={"after": "1"}) as response,
    ):
        following = asyncio.ensure_future(read_stream(response))
        await asyncio.sleep(0.1)
        await emit(client, task, {"event": "late", "data": 3})
        await client.post(
            f"/v1/tasks/{task['task_id']}/complete", json={"lease_id": task["lease_id"]}
        )
        messages = await following
    assert [(m.id, m.event, m.data) for m in messages[:-1]] == [
        ("2", "message", 2),
        ("3", "late", 3),
    ]
    assert messages[-1].data["status"] == "succeeded"
    # a reconnecting EventSource sends the last id it saw as a header
    headers = {"Last-Event-ID": "2"}
    async with client.stream("GET", path, headers=headers) as again:
        replayed = await read_stream(again)
    assert [m.id for m in replayed] == ["3", None]


async def test_event_routes_refuse_bad_requests(client: httpx.AsyncClient, queue: str) -> None:
    await put(client, queue)
    task = await take_one(client, queue)
    assert_error(await emit(client, task), 400, param="events")
    assert_error(await emit(client, task, {"event": "a\nb"}), 400, param="events[0].event")
    foreign = {**task, "lease_id": "not-the-lease"}
    assert_error(await emit(client, foreign, {"data": 1}), 409, code="lease_lost")
    unknown = {**task, "task_id": unique("t")}
    assert_error(await emit(client, unknown, {"data": 1}), 404)
    assert_error(await client.get(f"/v1/tasks/{unique('t')}/events"), 404, code="not_found")
    bad_after = await client.get(f"/v1/tasks/{task['task_id']}/events", params={"after": "x"})
    assert_error(bad_after, 400, param="after")
