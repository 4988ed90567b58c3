"""The Bella-Queue compatible routes: Bella's wire shapes over the same handlers."""

from __future__ import annotations

import asyncio

import httpx


async def test_register_put_take_complete_get(client: httpx.AsyncClient, queue: str) -> None:
    registered = await client.post("/v1/queue/register", json={"queue": queue, "endpoint": "/v1/x"})
    assert registered.status_code == 200
    assert registered.json() == queue

    put = await client.post(
        "/v1/queue/put",
        json={"queue": queue, "level": 1, "endpoint": "/v1/x", "data": {"q": 1}, "trace_id": "t-1"},
    )
    assert put.status_code == 200
    assert put.json()["code"] == 200
    task_id = put.json()["data"]

    taken = await client.post(
        "/v1/queue/take", json={"queues": [f"{queue}:0", f"{queue}:1"], "size": 5}
    )
    assert taken.status_code == 200
    answer = taken.json()
    assert answer[f"{queue}:0"] == []
    (task,) = answer[f"{queue}:1"]
    assert task["task_id"] == task_id
    assert task["trace_id"] == "t-1"
    assert task["data"] == {"q": 1}
    assert task["status"] == "running"
    assert isinstance(task["start_time"], int)  # milliseconds, as Bella sends them

    # Bella's complete carries the result map itself and no lease id
    done = await client.post(
        f"/v1/queue/{task_id}/complete",
        json={"status_code": 200, "request_id": "r-1", "body": {"ok": True}},
    )
    assert done.status_code == 200
    assert done.json() == task_id
    stored = (await client.get(f"/v1/queue/{task_id}")).json()
    assert stored["status"] == "succeeded"
    assert stored["result"] == {"status_code": 200, "body": {"ok": True}}
    assert stored["completed_time"] >= stored["start_time"]
    assert stored["running_time"] >= 0

    again = await client.post(f"/v1/queue/{task_id}/complete", json={"status_code": 200})
    assert again.status_code == 409


async def test_cancel_answers_202_with_the_id(client: httpx.AsyncClient, queue: str) -> None:
    put = await client.post("/v1/queue/put", json={"queue": queue, "data": 1})
    task_id = put.json()["data"]
    cancelled = await client.post(f"/v1/queue/{task_id}/cancel")
    assert cancelled.status_code == 202
    assert cancelled.json() == task_id
    assert (await client.get(f"/v1/queue/{task_id}")).json()["status"] == "cancelled"


async def test_blocking_put_answers_with_the_workers_result(
    client: httpx.AsyncClient, queue: str
) -> None:
    async def worker() -> None:
        taken = await client.post("/v1/queue/take", json={"queues": [f"{queue}:0"]})
        for _ in range(100):
            tasks = taken.json()[f"{queue}:0"]
            if tasks:
                break
            await asyncio.sleep(0.02)
            taken = await client.post("/v1/queue/take", json={"queues": [f"{queue}:0"]})
        await client.post(
            f"/v1/queue/{tasks[0]['task_id']}/complete",
            json={"status_code": 201, "body": {"answer": 42}},
        )

    working = asyncio.create_task(worker())
    answer = await client.post(
        "/v1/queue/put",
        json={"queue": queue, "data": {"q": 1}, "response_mode": "blocking", "timeout": 10},
    )
    await working
    assert answer.status_code == 201
    assert answer.json() == {"answer": 42}


async def test_unknown_task_is_404_in_the_error_shape(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/queue/no-such-task")
    assert missing.status_code == 404
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
