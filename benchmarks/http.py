"""The server benchmark: one `conveyor serve` process on SQLite, loaded over real HTTP.

    python -m benchmarks.http [--quick] [--output FILE]

Figures (issue 3): put req/s with 64 concurrent clients (wrk when installed, else
aiohttp); blocking round trip p50/p99 with 32 concurrent clients and idle workers (an SDK
worker process with a no-op handler); pick-up latency from a put to an idle long-polling
worker, p50/p99; end to end: the SDK bulk-puts 20,000 tasks and one worker process with
concurrency 16 drains them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import aiohttp

from benchmarks._report import Row, markdown, note, percentile

WRK_SCRIPT = Path(__file__).with_name("wrk") / "put.lua"
PUT_BODY = {
    "queue": "bench",
    "endpoint": "/v1/chat/completions",
    "data": {"messages": [{"role": "user", "content": "hello"}]},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def server(
    data_dir: str, extra_env: dict[str, str] | None = None, engine: str | None = None
) -> Iterator[str]:
    """A `conveyor serve` process on a fresh store (SQLite unless `engine`); its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(extra_env or {})
    command = [
        sys.executable,
        "-m",
        "conveyor.cli",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        data_dir,
        *(["--engine", engine] if engine else []),
    ]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.3)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def worker_process(url: str, queue: str, concurrency: int) -> Iterator[None]:
    """`conveyor worker` with the no-op handler on `queue`, stopped with SIGTERM after."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["CONVEYOR_URL"] = url
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    command = [
        str(Path(sys.executable).with_name("conveyor")),
        "worker",
        "benchmarks.noop_worker:handle",
        "--queues",
        queue,
        "--concurrency",
        str(concurrency),
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(1.5)  # started and long-polling
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


async def end_to_end(url: str, total: int) -> float:
    """Tasks per second from the first bulk put to the last completion (SDK + worker process)."""
    from conveyor.domain.tasks import TaskSpec
    from conveyor.sdk import AsyncClient

    async with AsyncClient(url) as client:
        start = time.perf_counter()
        for offset in range(0, total, 1_000):
            await client.put_many(
                [
                    TaskSpec(queue="e2e", data={"n": n})
                    for n in range(offset, min(total, offset + 1_000))
                ]
            )
        while True:
            queue = await client.get_queue("e2e")
            done: int = sum(level.counts.get("succeeded", 0) for level in queue.levels or [])
            if done >= total:
                return total / (time.perf_counter() - start)
            await asyncio.sleep(0.05)


def put_rate_wrk(url: str, seconds: int) -> float:
    """Requests per second of callback puts, from wrk with 64 connections."""
    subprocess.run(
        ["wrk", "-t2", "-c64", "-d2s", "-s", str(WRK_SCRIPT), url], capture_output=True, check=True
    )
    run = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{seconds}s", "-s", str(WRK_SCRIPT), url],
        capture_output=True,
        text=True,
        check=True,
    )
    if "Non-2xx" in run.stdout:
        raise RuntimeError(f"wrk saw errors:\n{run.stdout}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", run.stdout)
    assert match is not None, run.stdout
    return float(match.group(1))


async def put_rate_aiohttp(url: str, seconds: float) -> float:
    """The same with 64 aiohttp clients in this process (slower: the client shares the box)."""
    done = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

        async def client() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with http.post(f"{url}/v1/tasks", json=PUT_BODY) as response:
                    await response.read()
                    if response.status != 202:
                        raise RuntimeError(f"put answered {response.status}")
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(64)))
        return done / (time.perf_counter() - start)


async def blocking_round_trips(
    url: str, clients: int, per_client: int, interval_s: float = 0.0
) -> list[float]:
    """Milliseconds per blocking put, `clients` at a time, answered by an idle worker process.

    With `interval_s` 0 each client sends its next request as soon as the last is answered
    (the box saturates, and latency is mostly queueing); otherwise each client starts one
    request every `interval_s` (offered load clients / interval_s per second), which is what
    a round trip costs while the workers wait idle for work.
    """
    times: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def client(index: int) -> None:
            loop = asyncio.get_running_loop()
            next_at = loop.time() + interval_s * index / clients  # spread the clients out
            for _ in range(per_client):
                if interval_s:
                    await asyncio.sleep(max(0.0, next_at - loop.time()))
                    next_at += interval_s
                body = {
                    "queue": "blocking",
                    "data": {"x": 1},
                    "response_mode": "blocking",
                    "timeout": 30,
                }
                start = time.perf_counter()
                async with http.post(f"{url}/v1/tasks", json=body) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"blocking put answered {response.status}")
                times.append((time.perf_counter() - start) * 1000)

        await asyncio.gather(*(client(i) for i in range(clients)))
    return sorted(times)


async def pick_up_latency(url: str, samples: int) -> list[float]:
    """Milliseconds from sending a put to an idle long-polling taker holding the task."""
    times: list[float] = []
    async with aiohttp.ClientSession() as http:
        for _ in range(samples):
            take = asyncio.create_task(
                http.post(f"{url}/v1/tasks/take", json={"queues": ["pickup"], "wait": 10})
            )
            await asyncio.sleep(0.01)  # the taker is parked on the server, idle
            start = time.perf_counter()
            async with http.post(f"{url}/v1/tasks", json={"queue": "pickup", "data": 1}) as put:
                await put.read()
            response = await take
            tasks = (await response.json())["tasks"]
            times.append((time.perf_counter() - start) * 1000)
            response.release()
            for task in tasks:
                body = {"lease_id": task["lease_id"]}
                async with http.post(
                    f"{url}/v1/tasks/{task['task_id']}/complete", json=body
                ) as done:
                    await done.read()
    return sorted(times)


def engine_label(engine: str | None) -> str:
    """The name a report gives a store: sqlite, redis or postgres."""
    if not engine:
        return "sqlite"
    scheme = engine.partition(":")[0]
    return "postgres" if scheme.startswith("postgres") else scheme


@contextmanager
def fresh_store(engine: str | None) -> Iterator[str | None]:
    """`engine` with a key prefix or schema of its own, emptied afterwards (SQLite: None)."""
    if not engine:
        yield None
        return
    name = f"bench_{secrets.token_hex(4)}"
    label = engine_label(engine)
    option = "prefix" if label == "redis" else "schema"
    yield f"{engine}{'&' if '?' in engine else '?'}{option}={name}"
    asyncio.run(_empty(label, engine.partition("?")[0], name))


async def _empty(label: str, base: str, name: str) -> None:
    if label == "redis":
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(base)
        async for key in client.scan_iter(match=f"{name}*", count=1_000):
            await client.delete(key)
        await client.aclose()
    else:
        import asyncpg

        conn = await asyncpg.connect(base)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await conn.close()


def run(quick: bool, engine: str | None = None, http_server: str = "uvicorn") -> list[Row]:
    rows: list[Row] = []
    scale = 10 if quick else 1
    label = engine_label(engine)
    with (
        tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp,
        fresh_store(engine) as url_of_store,
        server(tmp, {"CONVEYOR_SERVER": http_server}, engine=url_of_store) as url,
    ):
        if shutil.which("wrk"):
            rate, tool = put_rate_wrk(url, 10 // scale or 1), "wrk"
        else:
            rate, tool = asyncio.run(put_rate_aiohttp(url, 10 / scale)), "aiohttp"
        note(f"put: {rate:,.0f} req/s ({tool})")
        rows.append(Row(label, f"put (callback), 64 concurrent clients ({tool})", rate, "req/s"))
        for interval_s, load in ((0.032, "paced, 1,000 req/s offered"), (0.0, "saturated")):
            with worker_process(url, "blocking", concurrency=32):
                times = asyncio.run(
                    blocking_round_trips(url, 32, 200 // scale, interval_s=interval_s)
                )
            for q in (50, 99):
                rows.append(
                    Row(
                        label,
                        f"blocking round trip p{q}, 32 clients {load}, SDK worker (no-op)",
                        percentile(times, q),
                        "ms",
                    )
                )
            note(
                f"blocking ({load}): p50 {percentile(times, 50):.2f} ms,"
                f" p99 {percentile(times, 99):.2f} ms"
            )
        picks = asyncio.run(pick_up_latency(url, 300 // scale))
        for q in (50, 99):
            rows.append(
                Row(
                    label,
                    f"pick-up latency p{q}, put to idle long-polling taker",
                    percentile(picks, q),
                    "ms",
                )
            )
        note(f"pick-up: p50 {percentile(picks, 50):.2f} ms, p99 {percentile(picks, 99):.2f} ms")
        total = 20_000 // scale
        with worker_process(url, "e2e", concurrency=16):
            e2e = asyncio.run(end_to_end(url, total))
        rows.append(
            Row(
                label,
                f"end to end: SDK bulk-puts {total:,}, one worker process (concurrency 16) drains",
                e2e,
                "tasks/s",
            )
        )
        note(f"end to end: {e2e:,.0f} tasks/s")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run, about a tenth of the work"
    )
    parser.add_argument(
        "--engines",
        default="sqlite",
        help="comma-separated: sqlite (a temp dir), or engine URLs for conveyor serve --engine,"
        " e.g. redis://127.0.0.1:6379/0?prefix=bench,postgresql://127.0.0.1:5432/test?schema=bench",
    )
    parser.add_argument(
        "--http-server",
        choices=["uvicorn", "granian"],
        default="uvicorn",
        help="what `conveyor serve --server` runs the app under",
    )
    parser.add_argument("--output", help="also write the markdown report to this file")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    for engine in args.engines.split(","):
        rows += run(args.quick, None if engine == "sqlite" else engine, args.http_server)
    report = markdown(rows, [("server", f"conveyor serve ({args.http_server}, 1 process)")])
    print(report)
    if args.output:
        Path(args.output).write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
