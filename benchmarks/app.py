"""The app's own CPU per request: ASGI calls made in-process, no HTTP server, no network.

    python -m benchmarks.app [--requests N] [--profile]

What one server process can do at most is bounded by this figure plus the server's own
cost per request (~85 µs for granian, see ../shared/reference/limits.md). It measures put
(callback mode), take size=16 and a bulk complete of 16, on a fresh SQLite store.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from collections.abc import Awaitable, Callable

import msgspec
from starlette.types import ASGIApp as ASGI
from starlette.types import Message

from conveyor.http.app import create_app
from conveyor.settings import Settings

PUT_BODY = msgspec.json.encode(
    {
        "queue": "bench",
        "endpoint": "/v1/chat/completions",
        "data": {"messages": [{"role": "user", "content": "hello"}]},
    }
)


async def call(app: ASGI, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    """One request through the app; its status and body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # nothing more arrives: the client stays
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def lifespan(app: ASGI) -> Callable[[], Awaitable[None]]:
    """Start the app's lifespan; the coroutine that ends it."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()

    async def send(message: Message) -> None:
        await outbox.put(message)

    runner = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)
    )
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started

    async def stop() -> None:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await runner

    return stop


async def measure(requests: int, profile: bool) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        app: ASGI = create_app(Settings(data_dir=data_dir).validated())
        stop = await lifespan(app)
        try:
            profiler = cProfile.Profile() if profile else None
            # puts: many in flight, as under a loaded server, so commits group
            if profiler:
                profiler.enable()
            start = time.perf_counter()
            in_flight = 64
            for offset in range(0, requests, in_flight):
                n = min(in_flight, requests - offset)
                answers = await asyncio.gather(
                    *(call(app, "POST", "/v1/tasks", PUT_BODY) for _ in range(n))
                )
                assert all(status == 202 for status, _ in answers), answers[0]
            put_s = time.perf_counter() - start
            # drain: take 16, complete 16, as a worker with concurrency 16 does
            take = msgspec.json.encode({"queues": ["bench"], "size": 16})
            taken = 0
            take_s = complete_s = 0.0
            while True:
                t0 = time.perf_counter()
                status, body = await call(app, "POST", "/v1/tasks/take", take)
                t1 = time.perf_counter()
                tasks = msgspec.json.decode(body)["tasks"]
                if not tasks:
                    break
                items = [
                    {
                        "task_id": t["task_id"],
                        "lease_id": t["lease_id"],
                        "result": {"status_code": 200, "body": {}},
                    }
                    for t in tasks
                ]
                status, body = await call(
                    app, "POST", "/v1/tasks/complete", msgspec.json.encode({"items": items})
                )
                t2 = time.perf_counter()
                assert status == 200, body
                taken += len(tasks)
                take_s += t1 - t0
                complete_s += t2 - t1
            if profiler:
                profiler.disable()
        finally:
            await stop()
    assert taken == requests, (taken, requests)
    cycles = requests / 16
    print(
        f"put (callback)      {put_s / requests * 1e6:7.1f} µs/request  ({requests / put_s:,.0f}/s)"
    )
    print(f"take size=16        {take_s / cycles * 1e6:7.1f} µs/request")
    print(f"complete 16 (bulk)  {complete_s / cycles * 1e6:7.1f} µs/request")
    print(
        f"drain               {(take_s + complete_s) / requests * 1e6:7.1f} µs/task  ({requests / (take_s + complete_s):,.0f}/s)"
    )
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true", help="print where the time goes")
    args = parser.parse_args()
    asyncio.run(measure(args.requests, args.profile))


if __name__ == "__main__":
    main()
