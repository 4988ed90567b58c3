"""Small helpers shared by the conformance modules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Sequence
from typing import Any

from conveyor.domain.retry import Backoff, BackoffKind
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import Task, TaskError, TaskResult, TaskSpec
from conveyor.engines import Engine
from conveyor.engines.engine import QueueStats
from conveyor.service.tasks import TaskService

OK = TaskResult(status_code=200, body={"answer": 42})
BOOM = TaskError(message="boom", code="boom")
# A retry delay the tests can predict: fixed, no jitter.
FIXED_10S = Backoff(kind=BackoffKind.FIXED, base_s=10.0, cap_s=10.0, jitter=0.0)


async def put_n(service: TaskService, queue: str, n: int, **fields: Any) -> list[str]:
    """Put `n` tasks (one bulk put) in `queue` with `fields`; their ids in put order."""
    return await service.put_many(
        [TaskSpec(queue=queue, data={"n": i}, **fields) for i in range(n)]
    )


async def take_one(service: TaskService, queues: Sequence[str], **options: Any) -> Task:
    """Take exactly one task, failing the test if there is none."""
    tasks = await service.take(queues, **options)
    assert len(tasks) == 1, f"expected one task from {queues}, got {len(tasks)}"
    return tasks[0]


def lease_of(task: Task) -> str:
    """The lease id of a task just taken."""
    assert task.lease_id is not None, f"task {task.task_id} has no lease"
    return task.lease_id


async def collect(
    engine: Engine,
    queue: str,
    status: TaskStatus | None = None,
    *,
    limit: int = 1000,
    after: str | None = None,
) -> list[Task]:
    """Every task of `queue` (in `status`) from `after`, following cursors page by page."""
    tasks: list[Task] = []
    for _ in range(100_000):
        page = await engine.list_tasks(queue, status, after=after, limit=limit)
        assert len(page.tasks) <= limit
        tasks.extend(page.tasks)
        if page.next_cursor is None:
            return tasks
        after = page.next_cursor
    raise AssertionError("listing never ended")


async def statuses(engine: Engine, task_ids: Sequence[str]) -> list[TaskStatus]:
    """The current status of each task."""
    return [(await engine.get_task(task_id)).status for task_id in task_ids]


def counts_by_level(stats: QueueStats) -> dict[int, dict[TaskStatus, int]]:
    """A queue's non-zero counts per level and status (engines may or may not list zeros)."""
    result: dict[int, dict[TaskStatus, int]] = {}
    for level in stats.levels:
        counts = {status: n for status, n in level.counts.items() if n}
        if counts:
            result[level.level] = counts
    return result


async def wait_for_status(
    engine: Engine, task_id: str, wanted: Collection[TaskStatus], *, within_s: float
) -> tuple[Task, float]:
    """Poll a task (real time) until its status is in `wanted`; the task and when it got there.

    The polling is the test observing, not the engine being driven: nothing here calls sweep.
    """
    deadline = time.time() + within_s
    while True:
        task = await engine.get_task(task_id)
        if task.status in wanted:
            return task, time.time()
        if time.time() > deadline:
            raise AssertionError(
                f"task {task_id} is still {task.status} after {within_s}s; wanted {set(wanted)}"
            )
        await asyncio.sleep(0.01)
