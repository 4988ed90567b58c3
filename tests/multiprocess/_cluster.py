"""Several `conveyor serve` processes over one Redis or PostgreSQL store, and workers.

The tests of this package start real processes: servers through tests/_server.py, workers
as `conveyor worker tests.multiprocess._worker:worker` (see that module for what they do).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests._server import CONVEYOR, environment, server_process, stop_process
from tests.conftest import (
    POSTGRES_URL,
    REDIS_URL,
    delete_redis_keys,
    drop_postgres_schemas,
    postgres_url,
    redis_cluster,
    redis_cluster_url,
    redis_url,
    require_server,
)

ROOT = Path(__file__).resolve().parents[2]  # the worker module is imported from here
ENGINES = ["redis", "redis-cluster", "postgres"]
CALLBACK_SECRET = "multiprocess-secret"


def store_url(engine: str) -> str:
    """A fresh store on the test Redis, Redis Cluster or PostgreSQL (removed after the test
    by conftest)."""
    if engine == "redis":
        return redis_url()
    if engine == "redis-cluster":
        return redis_cluster_url()
    return postgres_url()


@contextmanager
def own_store(engine: str) -> Iterator[str]:
    """A store for servers that outlive one test (a module's), removed afterwards.

    conftest's `redis_url` and `postgres_url` clean their stores up after each test.
    """
    if engine == "redis":
        require_server("Redis", REDIS_URL)
        prefix = f"mp{secrets.token_hex(6)}"
        try:
            yield f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix={prefix}"
        finally:
            delete_redis_keys([prefix])
    elif engine == "redis-cluster":
        cluster = redis_cluster()
        prefix = f"mp{secrets.token_hex(6)}"
        try:
            yield cluster.url(prefix)
        finally:
            cluster.delete([prefix])
    else:
        require_server("PostgreSQL", POSTGRES_URL)
        schema = f"mp_{secrets.token_hex(6)}"
        try:
            yield f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={schema}"
        finally:
            drop_postgres_schemas([schema])


@dataclass
class Server:
    """One `conveyor serve` process."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL the server and whatever it started (its own process group)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextmanager
def servers(
    tmp_path: Path, engine_url: str, count: int = 2, *args: str, env: dict[str, str] | None = None
) -> Iterator[list[Server]]:
    """`count` servers on `engine_url`, sharing one blob directory (as a shared mount would be).

    They start side by side (each start is mostly imports, one core each).
    """
    blobs = tmp_path / "blobs"
    blobs.mkdir(exist_ok=True)
    env = {"CONVEYOR_CALLBACK_SECRET": CALLBACK_SECRET} | (env or {})  # one for all

    def start(n: int) -> tuple[AbstractContextManager[tuple[str, Any]], Server]:
        data_dir = tmp_path / f"server-{n}"
        data_dir.mkdir()
        manager = server_process(
            data_dir, "--engine", engine_url, "--blob-dir", str(blobs), *args, env=env
        )
        url, process = manager.__enter__()
        return manager, Server(url, process, data_dir / "server.log")

    with ExitStack() as stack, ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(start, n) for n in range(count)]
        wait(futures)
        for future in futures:  # each one started is stopped, whatever else failed
            if future.exception() is None:
                stack.push(future.result()[0])
        yield [future.result()[1] for future in futures]


@dataclass
class Workers:
    """Worker processes and where they write their runs."""

    processes: list[subprocess.Popen[bytes]]
    runs_dir: Path
    logs: list[Path]

    def assert_alive(self) -> None:
        """Fail the test if a worker process has exited."""
        ended = [n for n, process in enumerate(self.processes) if process.poll() is not None]
        assert not ended, f"worker(s) {ended} exited:\n{self.log_text()}"

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            stop_process(process)

    def runs(self) -> dict[str, list[str]]:
        """Every run of the handler so far: task id -> run tokens."""
        runs: dict[str, list[str]] = defaultdict(list)
        for path in self.runs_dir.glob("runs-*.log"):
            for line in path.read_text().splitlines():
                task_id, _, token = line.partition(" ")
                runs[task_id].append(token)
        return runs

    def log_text(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text()}" for path in self.logs)


@contextmanager
def workers(
    tmp_path: Path,
    server_lists: list[list[str]],
    queue: str,
    *,
    concurrency: int = 16,
    lease_s: float = 5.0,
    delay_s: float = 0.0,
) -> Iterator[Workers]:
    """A worker process per entry of `server_lists` (its servers, its own first)."""
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir(exist_ok=True)
    started = Workers([], runs_dir, [])
    try:
        for n, urls in enumerate(server_lists):
            log = tmp_path / f"worker-{n}.log"
            started.logs.append(log)
            with log.open("wb") as out:
                started.processes.append(
                    subprocess.Popen(
                        [
                            CONVEYOR,
                            "worker",
                            "tests.multiprocess._worker:worker",
                            "--concurrency",
                            str(concurrency),
                            "--lease",
                            str(lease_s),
                            "--grace-period",
                            "5",
                            "--log-level",
                            "warning",
                        ],
                        cwd=ROOT,
                        env=environment(
                            MP_SERVERS=",".join(urls),
                            MP_QUEUE=queue,
                            MP_RUNS_DIR=str(runs_dir),
                            MP_DELAY_S=str(delay_s),
                        ),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        yield started
    except BaseException:
        started.stop()
        raise
    started.stop()
    text = started.log_text()
    assert " ERROR " not in text, text
    assert "Traceback" not in text, text


def queue_counts(url: str, queue: str) -> dict[str, int]:
    """The queue's task counts by state, summed over its levels (via the API)."""
    response = httpx.get(f"{url}/v1/queues/{queue}", timeout=10)
    response.raise_for_status()
    counts: dict[str, int] = defaultdict(int)
    for level in response.json()["levels"]:
        for state, count in level["counts"].items():
            counts[state] += count
    return dict(counts)


def all_tasks(url: str, queue: str) -> list[dict[str, Any]]:
    """Every task of `queue`, in put order, read page by page (via the API)."""
    tasks: list[dict[str, Any]] = []
    after: str | None = None
    with httpx.Client(base_url=url, timeout=30) as http:
        while True:
            params: dict[str, Any] = {"queue": queue, "limit": 1000}
            if after is not None:
                params["after"] = after
            response = http.get("/v1/tasks", params=params)
            response.raise_for_status()
            page = response.json()
            tasks.extend(page["data"])
            if not page["has_more"]:
                return tasks
            after = page["next_cursor"]


def wait_until(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    """Poll `predicate()` until it is true; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)
