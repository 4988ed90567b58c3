"""What crosses server processes: two `conveyor serve` over one store, a client on one
and a worker on the other.

- a blocking put on A is answered when the worker completes through B;
- a streaming put on A relays the events the worker appends through B, then the result;
- a long-polling take on A wakes soon after B puts a task (not at its next look);
- a callback is delivered once although both servers run a dispatcher;
- leases that expire are swept once although both servers sweep: each task comes back
  once, counting one attempt.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import msgspec
import pytest

from conveyor.domain.callbacks import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from tests.multiprocess._cluster import CALLBACK_SECRET, ENGINES, own_store, queue_counts, servers

WAKE_S = 1.0  # a woken take answers within this; a watch looks again every 2 s anyway


@pytest.fixture(scope="module", params=ENGINES)
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """The URLs of two servers over one fresh store."""
    with (
        own_store(str(request.param)) as url,
        servers(
            tmp_path_factory.mktemp(f"across-{request.param}"),
            url,
            2,
            "--allow-private-callbacks",
            env={"CONVEYOR_CALLBACK_SECRET": CALLBACK_SECRET},
        ) as (a, b),
    ):
        yield a.url, b.url


@pytest.fixture
def queue() -> str:
    return f"x-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def take(
    http: httpx.AsyncClient, url: str, queue: str, *, size: int = 1, wait: float = 10, **extra: Any
) -> list[dict[str, Any]]:
    response = await http.post(
        f"{url}/v1/tasks/take",
        json={"queues": [queue], "size": size, "wait": wait, "worker_id": "test", **extra},
    )
    assert response.status_code == 200, response.text
    tasks: list[dict[str, Any]] = response.json()["tasks"]
    return tasks


async def complete(http: httpx.AsyncClient, url: str, task: dict[str, Any], body: Any) -> None:
    response = await http.post(
        f"{url}/v1/tasks/{task['task_id']}/complete",
        json={"lease_id": task["lease_id"], "result": {"status_code": 201, "body": body}},
    )
    assert response.status_code == 200, response.text


async def test_a_blocking_put_on_a_is_answered_through_b(
    pair: tuple[str, str], queue: str, http: httpx.AsyncClient
) -> None:
    a, b = pair
    put = asyncio.create_task(
        http.post(
            f"{a}/v1/tasks",
            json={"queue": queue, "data": {"q": 1}, "response_mode": "blocking", "timeout": 20},
        )
    )
    (task,) = await take(http, b, queue)
    assert task["data"] == {"q": 1}
    await complete(http, b, task, {"answer": 42})
    completed = time.monotonic()
    response = await put
    assert time.monotonic() - completed < WAKE_S
    assert response.status_code == 201, response.text
    assert response.json() == {"answer": 42}


async def test_a_streaming_put_on_a_relays_the_events_appended_through_b(
    pair: tuple[str, str], queue: str, http: httpx.AsyncClient
) -> None:
    a, b = pair
    received: list[tuple[str, Any]] = []

    async def follow() -> None:
        body = {"queue": queue, "data": "tell", "response_mode": "streaming", "timeout": 20}
        async with http.stream("POST", f"{a}/v1/tasks", json=body) as response:
            assert response.status_code == 200
            event = "message"
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    received.append((event, msgspec.json.decode(line.removeprefix("data: "))))
                    if event == "result":
                        return

    reader = asyncio.create_task(follow())
    (task,) = await take(http, b, queue)
    words = ["one", "two", "three"]
    for word in words:
        response = await http.post(
            f"{b}/v1/tasks/{task['task_id']}/events",
            json={"lease_id": task["lease_id"], "events": [{"event": "token", "data": word}]},
        )
        assert response.status_code == 200, response.text
        await asyncio.sleep(0.05)
    await complete(http, b, task, {"text": "one two three"})
    await asyncio.wait_for(reader, 10)
    assert received[:-1] == [("token", word) for word in words]
    event, result = received[-1]
    assert event == "result"
    assert result["status"] == "succeeded"
    assert result["result"] == {"status_code": 201, "body": {"text": "one two three"}}


async def test_a_long_polling_take_on_a_wakes_when_b_puts(
    pair: tuple[str, str], queue: str, http: httpx.AsyncClient
) -> None:
    a, b = pair
    for round_ in range(3):
        waiting = asyncio.create_task(take(http, a, queue, wait=20))
        await asyncio.sleep(0.5)  # the take is waiting on A
        assert not waiting.done()
        response = await http.post(f"{b}/v1/tasks", json={"queue": queue, "data": round_})
        assert response.status_code == 202, response.text
        put = time.monotonic()
        (task,) = await asyncio.wait_for(waiting, 10)
        woke_s = time.monotonic() - put
        assert woke_s < WAKE_S, f"the take woke {woke_s:.2f} s after the put"
        assert task["data"] == round_
        await complete(http, a, task, None)


class Receiver:
    """An HTTP server in a thread that counts the callbacks it gets, checking signatures."""

    def __init__(self) -> None:
        self.deliveries: Counter[str] = Counter()
        self.bad: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handle(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stamp = int(self.headers[TIMESTAMP_HEADER])
                good = self.headers[SIGNATURE_HEADER] == signature(
                    CALLBACK_SECRET.encode(), stamp, body
                )
                time.sleep(0.05)  # a receiver that takes a moment: deliveries overlap
                task_id = msgspec.json.decode(body)["task_id"]
                with receiver.lock:
                    receiver.deliveries[task_id] += 1
                    if not good:
                        receiver.bad.append(task_id)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def total(self) -> int:
        with self.lock:
            return sum(self.deliveries.values())


async def test_a_callback_is_delivered_once_with_two_servers(
    pair: tuple[str, str], queue: str, http: httpx.AsyncClient
) -> None:
    a, b = pair
    count = 40
    with Receiver() as receiver:
        tasks = [
            {"queue": queue, "task_id": f"{queue}-{n}", "data": n, "callback_url": receiver.url}
            for n in range(count)
        ]
        response = await http.post(f"{a}/v1/tasks/bulk", json={"tasks": tasks})
        assert response.status_code == 202, response.text
        taken = await take(http, b, queue, size=count)
        assert len(taken) == count
        # half completed through each server: both dispatchers are woken by what ends
        await asyncio.gather(
            *(complete(http, (a, b)[n % 2], task, n) for n, task in enumerate(taken))
        )
        deadline = time.monotonic() + 20
        while receiver.total() < count:
            assert time.monotonic() < deadline, receiver.deliveries
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.5)  # long enough for a second delivery to show up
        assert receiver.deliveries == Counter({f"{queue}-{n}": 1 for n in range(count)})
        assert receiver.bad == []


async def test_an_expired_lease_is_swept_once_with_two_servers(
    pair: tuple[str, str], queue: str, http: httpx.AsyncClient
) -> None:
    a, b = pair
    count = 50
    response = await http.post(f"{a}/v1/queues", json={"name": queue, "max_attempts": 2})
    assert response.status_code == 200, response.text
    tasks = [{"queue": queue, "data": n} for n in range(count)]
    response = await http.post(f"{a}/v1/tasks/bulk", json={"tasks": tasks})
    assert response.status_code == 202, response.text
    # a worker takes them through B with a 1 s lease, and vanishes
    vanished = await take(http, b, queue, size=count, process_timeout=1)
    assert len(vanished) == count
    deadline = time.monotonic() + 10
    while queue_counts(a, queue).get("queued", 0) < count:  # both servers sweep meanwhile
        assert time.monotonic() < deadline, queue_counts(a, queue)
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.5)  # more sweeps by both servers: nothing changes
    assert queue_counts(b, queue) == {"queued": count}
    again = await take(http, a, queue, size=2 * count, wait=0)
    assert sorted(task["data"] for task in again) == list(range(count))  # each once
    assert {task["attempts"] for task in again} == {2}
    assert await take(http, b, queue, size=count, wait=0) == []
    await asyncio.gather(*(complete(http, (a, b)[n % 2], t, n) for n, t in enumerate(again)))
    assert queue_counts(a, queue) == {"succeeded": count}
