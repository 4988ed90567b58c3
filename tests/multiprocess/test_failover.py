"""Two servers on one store, four worker processes, 20,000 tasks, one server SIGKILLed
half-way: every task succeeds exactly once in the store, with one result, and none is lost.

Producers put in bulks of 500 with ids of their own, so a bulk whose answer was lost can be
sent again to the other server (an identical put is a no-op). Workers hold 5 s leases and
move to the other server when theirs stops answering; tasks they held through the dead
server (a take answered into a dead socket, a result never delivered) come back when their
lease expires. The handler may therefore run a task twice; the store keeps one result.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.multiprocess._cluster import (
    ENGINES,
    Server,
    all_tasks,
    queue_counts,
    servers,
    store_url,
    workers,
)

TASKS = 20_000
BULK = 500
PRODUCERS = 2
WINDOW = 3_000  # producers wait while this many tasks are put and not yet done
QUEUE = "mp"


class Progress:
    """What the producers and the watcher share."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.put = 0
        self.succeeded = 0
        self.killed_at: float | None = None
        self.put_done_at: float | None = None
        self.advanced = asyncio.Event()

    def elapsed(self) -> float:
        return time.monotonic() - self.started


async def produce(
    http: httpx.AsyncClient, urls: list[str], ids: list[str], progress: Progress
) -> int:
    """Put `ids` in bulks, moving to the next server when one fails; how many retries."""
    retries = 0
    current = 0
    for start in range(0, len(ids), BULK):
        while progress.put - progress.succeeded >= WINDOW:
            progress.advanced.clear()
            await progress.advanced.wait()
        chunk = ids[start : start + BULK]
        body = {"tasks": [{"queue": QUEUE, "task_id": i, "data": {"n": int(i[1:])}} for i in chunk]}
        while True:
            try:
                response = await http.post(f"{urls[current]}/v1/tasks/bulk", json=body)
                if response.status_code == 202:
                    break
                assert response.status_code >= 500, response.text
            except httpx.TransportError:
                pass
            retries += 1
            current = (current + 1) % len(urls)
            await asyncio.sleep(0.05)
        progress.put += len(chunk)
    return retries


async def watch(http: httpx.AsyncClient, survivor: str, victim: Server, progress: Progress) -> None:
    """Follow the count of succeeded tasks (through the server that stays); SIGKILL the
    other one once half the tasks have succeeded; return when all have."""
    deadline = time.monotonic() + 120
    while progress.succeeded < TASKS:
        assert time.monotonic() < deadline, f"only {progress.succeeded} tasks succeeded"
        await asyncio.sleep(0.2)
        response = await http.get(f"{survivor}/v1/queues/{QUEUE}")
        counts = [level["counts"] for level in response.json()["levels"]]
        progress.succeeded = sum(c.get("succeeded", 0) for c in counts)
        progress.advanced.set()
        if progress.killed_at is None and progress.succeeded >= TASKS // 2:
            victim.kill()
            progress.killed_at = progress.elapsed()
        if progress.put_done_at is None and progress.put >= TASKS:
            progress.put_done_at = progress.elapsed()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_every_task_succeeds_once_when_a_server_dies(engine: str, tmp_path: Path) -> None:
    url = store_url(engine)
    ids = [f"t{n:05d}" for n in range(TASKS)]
    with servers(tmp_path, url) as (a, b):
        response = httpx.post(
            f"{b.url}/v1/queues", json={"name": QUEUE, "process_timeout": 5, "max_attempts": 5}
        )
        assert response.status_code == 200, response.text
        lists = [[a.url, b.url], [a.url, b.url], [b.url, a.url], [b.url, a.url]]
        with workers(tmp_path, lists, QUEUE, concurrency=64) as running:
            progress = Progress()

            async def main() -> list[int]:
                async with httpx.AsyncClient(timeout=30) as http:
                    share = TASKS // PRODUCERS
                    producers = [
                        produce(
                            http,
                            [a.url, b.url] if p % 2 == 0 else [b.url, a.url],
                            ids[p * share : (p + 1) * share],
                            progress,
                        )
                        for p in range(PRODUCERS)
                    ]
                    retries, _ = await asyncio.gather(
                        asyncio.gather(*producers), watch(http, b.url, a, progress)
                    )
                    return retries

            retries = asyncio.run(main())
            running.assert_alive()
            print(
                f"\n{engine}: killed at {progress.killed_at:.1f} s; puts done at"
                f" {progress.put_done_at:.1f} s (producer retries {retries});"
                f" all succeeded at {progress.elapsed():.1f} s"
            )
            assert progress.put_done_at is not None
            assert progress.killed_at is not None
            assert progress.killed_at < progress.put_done_at  # producers met the dead server
        counts = queue_counts(b.url, QUEUE)
        assert counts == {"succeeded": TASKS}, counts
        tasks = all_tasks(b.url, QUEUE)
    runs = running.runs()
    assert sorted(task["task_id"] for task in tasks) == ids  # each once
    twice = retried = 0
    for task in tasks:
        assert task["status"] == "succeeded", task
        result = task["result"]
        assert result["status_code"] == 200, task
        assert result["body"]["n"] == int(task["task_id"][1:])
        ran = runs[task["task_id"]]
        assert result["body"]["run"] in ran, (task, ran)  # the result of one real run
        twice += len(ran) > 1
        retried += task["attempts"] > 1
    tokens = [token for ran in runs.values() for token in ran]
    assert len(tokens) == len(set(tokens))
    refused = running.log_text().count("result refused")
    print(
        f"{engine}: {len(tokens)} handler runs for {TASKS} tasks; {twice} tasks ran more than"
        f" once, {retried} were taken more than once (a take answered into the killed server's"
        f" dead socket: the lease expired), {refused} results refused (sent again to the other"
        " server after they had landed, or after their lease had expired)"
    )
