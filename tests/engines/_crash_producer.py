"""Run by test_sqlite_crash: put tasks one at a time, printing each id once put returned."""

from __future__ import annotations

import asyncio
import sys

from conveyor.domain.tasks import TaskSpec
from conveyor.engines.sqlite import SqliteEngine
from conveyor.service.tasks import TaskService


async def produce(path: str, count: int) -> None:
    engine = SqliteEngine(path)
    await engine.open()
    service = TaskService(engine)
    for index in range(count):
        task = await service.put(TaskSpec(queue="crash", data={"index": index}))
        sys.stdout.write(f"{task.task_id}\n")
        sys.stdout.flush()
    await engine.close()


if __name__ == "__main__":
    asyncio.run(produce(sys.argv[1], int(sys.argv[2])))
