"""Through a real server: callbacks reach a receiver, signed; SSE read by a real SSE client."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from aiohttp import web
from httpx_sse import aconnect_sse

from tests._server import running_server

SECRET = "test-secret"


@pytest.fixture(scope="module")
def callback_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {"CONVEYOR_CALLBACK_SECRET": SECRET}
    data_dir = tmp_path_factory.mktemp("callbacks")
    with running_server(data_dir, "--allow-private-callbacks", env=env) as url:
        yield url


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, asyncio.Queue[tuple[bytes, dict[str, str]]]]]:
    """A callback receiver on loopback: its URL, and what it received."""
    received: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await received.put((await request.read(), dict(request.headers)))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        await runner.cleanup()


async def test_a_finished_task_calls_back_signed(
    callback_server: str, receiver: tuple[str, asyncio.Queue[tuple[bytes, dict[str, str]]]]
) -> None:
    url, received = receiver
    async with httpx.AsyncClient(base_url=callback_server, timeout=10) as http:
        put = await http.post("/v1/tasks", json={"queue": "cb", "data": 1, "callback_url": url})
        assert put.status_code == 202
        (task,) = (await http.post("/v1/tasks/take", json={"queues": ["cb"], "wait": 5})).json()[
            "tasks"
        ]
        result = {"status_code": 200, "body": {"answer": 42}}
        await http.post(
            f"/v1/tasks/{task['task_id']}/complete",
            json={"lease_id": task["lease_id"], "result": result},
        )
    body, headers = await asyncio.wait_for(received.get(), 10)
    payload = json.loads(body)
    assert payload["task_id"] == task["task_id"]
    assert payload["status"] == "succeeded"
    assert payload["result"] == result
    stamp = headers["X-Conveyor-Timestamp"]
    expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-Conveyor-Signature"] == f"v1={expected}"


async def test_private_callback_urls_are_refused_by_default(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=10) as http:
        refused = await http.post(
            "/v1/tasks", json={"queue": "cb", "callback_url": "http://127.0.0.1:9/hook"}
        )
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "callback_url"


async def test_a_real_sse_client_reads_a_streaming_put(callback_server: str) -> None:
    async with httpx.AsyncClient(base_url=callback_server, timeout=10) as http:

        async def worker() -> None:
            taken = await http.post("/v1/tasks/take", json={"queues": ["sse"], "wait": 5})
            (task,) = taken.json()["tasks"]
            lease = task["lease_id"]
            for word in ("hello", "world"):
                events = [{"event": "token", "data": {"text": word}}]
                await http.post(
                    f"/v1/tasks/{task['task_id']}/events",
                    json={"lease_id": lease, "events": events},
                )
            await http.post(
                f"/v1/tasks/{task['task_id']}/complete",
                json={"lease_id": lease, "result": {"body": "hello world"}},
            )

        working = asyncio.create_task(worker())
        body = {
            "queue": "sse",
            "data": {"prompt": "hi"},
            "response_mode": "streaming",
            "timeout": 10,
        }
        seen: list[tuple[str, str, str]] = []
        async with aconnect_sse(http, "POST", "/v1/tasks", json=body) as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            async for event in source.aiter_sse():
                seen.append((event.id, event.event, event.data))
        await working
    assert seen[0] == ("1", "token", '{"text":"hello"}')
    assert seen[1] == ("2", "token", '{"text":"world"}')
    assert seen[-1][1] == "result"
    assert json.loads(seen[-1][2])["result"] == {"status_code": 200, "body": "hello world"}
