"""SQLite keeps each batch's counts with its tasks, and fills them for an older file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conveyor.domain.tasks import TaskResult, TaskSpec
from conveyor.engines.engine import BatchCounts
from conveyor.engines.sqlite import SqliteEngine
from conveyor.service.tasks import TaskService


async def run_some(engine: SqliteEngine) -> BatchCounts:
    """A batch of 6: two answered 200, one 500, one cancelled before it ran, two queued."""
    service = TaskService(engine)
    specs = [
        TaskSpec(queue="b", data={"n": n}, batch_id="batch_1", task_id=f"batch_1:{n}")
        for n in range(6)
    ]
    await service.put_many(specs)
    await service.put(TaskSpec(queue="b", data={"n": "not in the batch"}))
    taken = await service.take(["b"], size=3)
    for task, code in zip(taken, (200, 200, 500), strict=True):
        assert task.lease_id is not None
        await service.complete(task.task_id, task.lease_id, TaskResult(status_code=code))
    await service.cancel("batch_1:3")
    return await engine.batch_counts("batch_1")


async def test_counts_follow_every_change(tmp_path: Path) -> None:
    engine = SqliteEngine(tmp_path / "c.db")
    await engine.open()
    try:
        counts = await run_some(engine)
        assert counts == BatchCounts(total=6, completed=2, failed=1, not_run=1)
        assert counts.unfinished == 2
        assert await engine.batch_counts("batch_unknown") == BatchCounts(0, 0, 0, 0)
        await engine.obliterate_queue("b", force=True)
        assert await engine.batch_counts("batch_1") == BatchCounts(0, 0, 0, 0)
    finally:
        await engine.close()


async def test_a_file_from_before_batch_counts_gets_them_filled(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    engine = SqliteEngine(path)
    await engine.open()
    try:
        before = await run_some(engine)
    finally:
        await engine.close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE batch_counts")
    conn.commit()
    conn.close()
    engine = SqliteEngine(path)
    await engine.open()
    try:
        assert await engine.batch_counts("batch_1") == before
    finally:
        await engine.close()
