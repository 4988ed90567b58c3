"""The worker the multi-process tests run: `conveyor worker tests.multiprocess._worker:worker`.

It is configured by the environment (the test starts one process per worker):
- MP_SERVERS: the servers it may use, comma-separated, its own first. Every request goes to
  the current one; when it cannot be reached (refused, reset, cut off), the worker moves to
  the next and sends the request again, as a client behind a load balancer would. Each
  server answers for the same store, so a lease taken through one is settled through any.
- MP_QUEUE: the queue it serves. MP_DELAY_S: how long each run takes (seconds, default 0).
- MP_RUNS_DIR: where it writes `runs-<pid>.log`, one line `task_id run_token` per run of
  the handler, written before the result is sent.

Its handler answers `{"pid", "run", "n"}` for plain tasks and a chat completion for batch
lines, the run token in both, so that the stored result names the one run it came from.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from conveyor.domain.tasks import TaskResult
from conveyor.sdk import AsyncClient, LeasedTask, Worker
from conveyor.sdk import _calls as calls

log = logging.getLogger("conveyor.worker")

T = TypeVar("T")

PID = os.getpid()
ROUNDS = 20  # times round the list of servers before a request gives up
PAUSE_S = 0.25  # between rounds


class FailoverClient(AsyncClient):
    """An AsyncClient over a list of servers: the first that answers, in turn."""

    def __init__(self, servers: list[str], **options: Any) -> None:
        super().__init__(servers[0], **options)
        self.servers = servers
        self._current = 0

    async def send(self, call: calls.Call[T]) -> T:
        for attempt in range(ROUNDS * len(self.servers)):
            server = self.servers[self._current]
            self.server = server
            try:
                return await super().send(call)
            except aiohttp.ClientConnectionError as exc:
                if self.servers[self._current] == server:  # not moved on by another call
                    self._current = (self._current + 1) % len(self.servers)
                    log.warning(
                        "%s failed on %s (%r); moving to the next server", call.path, server, exc
                    )
                if (attempt + 1) % len(self.servers) == 0:
                    await asyncio.sleep(PAUSE_S)
        raise aiohttp.ClientConnectionError(f"no server of {self.servers} answers")


def _runs_file() -> Any:
    directory = Path(os.environ.get("MP_RUNS_DIR", "."))
    return (directory / f"runs-{PID}.log").open("a", buffering=1)


RUNS = _runs_file()
DELAY_S = float(os.environ.get("MP_DELAY_S", "0"))


async def handle(task: LeasedTask) -> Any:
    """Record the run, take DELAY_S, answer with this run's token."""
    run = secrets.token_hex(8)
    if DELAY_S:
        await asyncio.sleep(DELAY_S)
    RUNS.write(f"{task.task_id} {run}\n")
    if task.batch_id is None:
        return {"pid": PID, "run": run, "n": task.data["n"]}
    content = task.data["messages"][0]["content"]
    return TaskResult(
        status_code=200,
        body={
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content[::-1]}}],
            "pid": PID,
            "run": run,
        },
    )


SERVERS = [url for url in os.environ.get("MP_SERVERS", "").split(",") if url]
QUEUE = os.environ.get("MP_QUEUE", "mp")


class FailoverWorker(Worker):
    """A Worker on a FailoverClient, which it closes when it stops."""

    def __init__(self) -> None:
        self.failover = FailoverClient(SERVERS, max_connections=72)
        super().__init__({QUEUE: handle}, client=self.failover, wait_s=2.0)

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            await self.failover.aclose()


worker = FailoverWorker()
