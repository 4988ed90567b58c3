"""Following a task: its events as they arrive, then the task as it ended."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from conveyor.domain.events import TaskEvent
from conveyor.domain.tasks import Task
from conveyor.engines.engine import Engine, WorkWatch
from conveyor.errors import WaitTimeout

PAGE = 1_000


async def follow(
    engine: Engine, task_id: str, watch: WorkWatch, *, after: int, deadline: float
) -> AsyncIterator[TaskEvent | Task]:
    """Yield the task's events above `after`, live, and finally the ended task.

    `watch` must be registered on the task before the first read, so that nothing
    appended or settled between a read and the wait is missed. Raises WaitTimeout at
    `deadline` (time.monotonic) if the task has not ended.
    """
    while True:
        events = await engine.list_events(task_id, after=after, limit=PAGE)
        for event in events:
            yield event
            after = event.event_id
        if len(events) == PAGE:
            continue
        task = await engine.get_task(task_id)
        if task.status.finished:
            # events appended just before the end
            for event in await engine.list_events(task_id, after=after, limit=PAGE * 100):
                yield event
            yield task
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"task {task_id} did not finish in time")
        await watch.wait(remaining)
