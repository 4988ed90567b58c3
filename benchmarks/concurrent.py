"""10,000 concurrent blocking requests held by one `conveyor serve` process.

    python -m benchmarks.concurrent [--clients 10000]

All clients put in blocking mode at once and wait; only when every request is parked on
the server does a worker process start answering. Reports how many were answered, how
long that took, and the server's peak resident memory (VmHWM of its processes).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from benchmarks._report import Row, markdown, note
from benchmarks.http import server, worker_process


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory of `pid` and its children, in MB (VmHWM)."""
    total = 0.0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pids.extend(int(child) for child in children)
        except OSError:
            continue
    return total


async def hold(url: str, clients: int) -> tuple[int, float]:
    """Open `clients` blocking puts at once; answered count and seconds until the last."""
    answered = 0
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def client(n: int) -> None:
            nonlocal answered
            body = {"queue": "held", "data": {"n": n}, "response_mode": "blocking", "timeout": 240}
            async with http.post(f"{url}/v1/tasks", json=body) as response:
                await response.read()
                if response.status == 200:
                    answered += 1

        start = time.perf_counter()
        waiting = []
        for n in range(clients):  # ramped: a burst of 10,000 SYNs overflows any backlog
            waiting.append(asyncio.create_task(client(n)))
            if n % 250 == 249:
                await asyncio.sleep(0.05)
        # wait until every request is parked on the server as a queued task
        async with http.get(f"{url}/v1/queues/held") as stats:
            await stats.read()
        while True:
            async with http.get(f"{url}/v1/queues/held") as response:
                levels = (await response.json()).get("levels", []) if response.status == 200 else []
            queued = sum(level["counts"].get("queued", 0) for level in levels)
            if queued >= clients:
                break
            await asyncio.sleep(0.5)
        note(f"{clients:,} blocking requests parked after {time.perf_counter() - start:.1f} s")
        with worker_process(url, "held", concurrency=256):
            await asyncio.gather(*waiting, return_exceptions=True)
        return answered, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument(
        "--http-server",
        choices=["uvicorn", "granian"],
        default="uvicorn",
        help="what `conveyor serve --server` runs the app under",
    )
    args = parser.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server inherits it
    with (
        tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp,
        server(tmp, {"CONVEYOR_SERVER": args.http_server}) as url,
    ):
        answered, seconds = asyncio.run(hold(url, args.clients))
        pid = _server_pid(url)
        rss = peak_rss_mb(pid) if pid else float("nan")
    rows = [
        Row(
            "sqlite",
            f"{args.clients:,} concurrent blocking requests answered",
            answered,
            "requests",
        ),
        Row("sqlite", "time from first put to last answer", seconds, "s"),
        Row("sqlite", "server peak RSS (all its processes)", rss, "MB"),
    ]
    settings = [("clients", str(args.clients)), ("nofile", f"{hard}")]
    print(markdown(rows, [*settings, ("server", f"conveyor serve ({args.http_server})")]))
    return 0 if answered == args.clients else 1


def _server_pid(url: str) -> int | None:
    port = url.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in cmdline and port.encode() in cmdline:
            return int(proc.name)
    return None


if __name__ == "__main__":
    sys.exit(main())
