"""Two `conveyor serve` processes over one Redis: work put through one is taken, answered
and waited for through the other."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests._server import running_server
from tests.conftest import REDIS_URL, delete_redis_keys, require_server


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Two servers on the same Redis store (a key prefix of their own, deleted afterwards)."""
    require_server("Redis", REDIS_URL)
    prefix = f"thttp{secrets.token_hex(6)}"
    url = f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix={prefix}"
    try:
        with ExitStack() as stack:
            a, b = (
                stack.enter_context(
                    running_server(Path(tmp_path_factory.mktemp(name)), "--engine", url)
                )
                for name in ("a", "b")
            )
            yield a, b
    finally:
        delete_redis_keys([prefix])


async def test_a_task_put_on_one_server_is_taken_and_completed_on_the_other(
    servers: tuple[str, str],
) -> None:
    a, b = servers
    async with httpx.AsyncClient(base_url=a) as one, httpx.AsyncClient(base_url=b) as two:
        put = (await one.post("/v1/tasks", json={"queue": "q1", "data": {"n": 1}})).json()
        taken = (await two.post("/v1/tasks/take", json={"queues": ["q1"]})).json()["tasks"]
        assert [t["task_id"] for t in taken] == [put["task_id"]]
        done = await two.post(
            f"/v1/tasks/{put['task_id']}/complete",
            json={"lease_id": taken[0]["lease_id"], "result": {"body": "ok"}},
        )
        assert done.status_code == 200, done.text
        seen = (await one.get(f"/v1/tasks/{put['task_id']}")).json()
        assert seen["status"] == "succeeded"
        assert seen["result"]["body"] == "ok"


async def test_a_blocking_put_on_one_server_gets_the_result_given_to_the_other(
    servers: tuple[str, str],
) -> None:
    a, b = servers
    async with (
        httpx.AsyncClient(base_url=a, timeout=15) as one,
        httpx.AsyncClient(base_url=b, timeout=15) as two,
    ):

        async def worker() -> None:
            # a long-polling take on B wakes when A's put lands
            body = {"queues": ["q2"], "wait": 10}
            (task,) = (await two.post("/v1/tasks/take", json=body)).json()["tasks"]
            await two.post(
                f"/v1/tasks/{task['task_id']}/complete",
                json={"lease_id": task["lease_id"], "result": {"body": task["data"]}},
            )

        working = asyncio.create_task(worker())
        await asyncio.sleep(0.2)  # the worker is waiting before the put
        answer = await one.post(
            "/v1/tasks",
            json={"queue": "q2", "response_mode": "blocking", "timeout": 10, "data": "hi"},
        )
        await working
        assert answer.status_code == 200, answer.text
        assert answer.json() == "hi"  # the worker's result body, as the worker gave it
