"""SQLite engine internals: file layout, schema, counts kept with the tasks, reopening."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from conveyor.domain.queues import QueueConfig
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import TaskError, TaskResult, TaskSpec
from conveyor.engines import create_engine
from conveyor.engines.sqlite import SqliteEngine
from conveyor.engines.sqlite.queries import SCHEMA_VERSION
from conveyor.errors import EngineUnavailable, InvalidInput
from conveyor.service.tasks import TaskService


async def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    engine = SqliteEngine(tmp_path / "nested" / "c.db")
    await engine.open()
    await engine.close()
    conn = sqlite3.connect(tmp_path / "nested" / "c.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert int(version) == SCHEMA_VERSION
    conn.close()


async def test_refuses_a_store_from_a_newer_conveyor(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    engine = SqliteEngine(path)
    await engine.open()
    await engine.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(EngineUnavailable, match="newer"):
        await SqliteEngine(path).open()


async def test_counts_and_queues_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    engine = SqliteEngine(path)
    await engine.open()
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="q", max_attempts=5, paused=False))
    await service.put_many([TaskSpec(queue="q", data=i) for i in range(10)])
    taken = await service.take(["q"], size=4)
    for task in taken[:2]:
        assert task.lease_id is not None
        await service.complete(task.task_id, task.lease_id, TaskResult(body=None))
    await engine.close()

    reopened = SqliteEngine(path)
    await reopened.open()
    try:
        stats = await reopened.queue_stats("q")
        assert stats.queue.max_attempts == 5
        assert stats.total(TaskStatus.QUEUED) == 6
        assert stats.total(TaskStatus.RUNNING) == 2
        assert stats.total(TaskStatus.SUCCEEDED) == 2
        # the counts the writer keeps in memory were reloaded: a take still sees the queue
        again = await TaskService(reopened).take(["q"], size=10)
        assert len(again) == 6
    finally:
        await reopened.close()


async def test_counts_table_matches_tasks_table(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    engine = SqliteEngine(path)
    await engine.open()
    service = TaskService(engine)
    await service.put_many([TaskSpec(queue="a", level=i % 3, data=i) for i in range(30)])
    for task in await service.take(["a"], size=7):
        assert task.lease_id is not None
        await service.fail(task.task_id, task.lease_id, _error(), retry=False)
    await service.cancel((await service.take(["a"], size=1))[0].task_id)
    await engine.close()
    conn = sqlite3.connect(path)
    counted = dict(
        ((queue, level, status), n)
        for queue, level, status, n in conn.execute("SELECT queue, level, status, n FROM counts")
    )
    actual = dict(
        ((queue, level, status), n)
        for queue, level, status, n in conn.execute(
            "SELECT queue, level, status, count(*) FROM tasks GROUP BY 1, 2, 3"
        )
    )
    conn.close()
    assert counted == actual


async def test_engine_url_options(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/x.db?synchronous=full")
    assert isinstance(engine, SqliteEngine)
    with pytest.raises(InvalidInput, match="synchronous"):
        create_engine(f"sqlite:///{tmp_path}/x.db?synchronous=sometimes")
    with pytest.raises(InvalidInput, match="path"):
        create_engine("sqlite://")
    with pytest.raises(InvalidInput, match="unknown engine"):
        create_engine("mysql://localhost/x")


async def test_closed_engine_refuses_work(tmp_path: Path) -> None:
    engine = SqliteEngine(tmp_path / "c.db")
    await engine.open()
    await engine.close()
    with pytest.raises(EngineUnavailable):
        await engine.get_task("x")
    assert not await engine.ready()


def _error() -> TaskError:

    return TaskError(message="boom")


async def test_one_engine_at_a_time_serves_a_file(tmp_path: Path) -> None:
    first = SqliteEngine(tmp_path / "c.db")
    await first.open()
    with pytest.raises(EngineUnavailable, match="in use by another Conveyor process"):
        await SqliteEngine(tmp_path / "c.db").open()
    await first.close()
    second = SqliteEngine(tmp_path / "c.db")
    await second.open()  # the lock went with the first engine
    await second.close()


async def test_wal_stays_bounded_under_steady_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # small thresholds so that a short run shows what hours of load would
    monkeypatch.setattr("conveyor.engines.sqlite.store.RESTART_AFTER_FRAMES", 64)
    monkeypatch.setattr("conveyor.engines.sqlite.writer.CHECKPOINT_EVERY_S", 0.0)
    monkeypatch.setattr("conveyor.engines.sqlite.store.JOURNAL_SIZE_LIMIT", 1024 * 1024)
    path = tmp_path / "c.db"
    engine = SqliteEngine(path)
    await engine.open()
    service = TaskService(engine)
    wal = path.with_name(path.name + "-wal")
    largest = 0
    try:
        for index in range(3_000):  # one commit each: without checkpoints, ~100 MB of WAL
            await service.put(TaskSpec(queue="q", data={"index": index, "pad": "x" * 200}))
            if index % 100 == 0:
                largest = max(largest, wal.stat().st_size)
        # the checkpointer thread may lag while other processes load the CPUs (as in a test
        # run beside others), so the WAL may overshoot for a moment; it must never run away,
        # and must come back down once the checkpointer catches up
        assert largest < 40 * 1024 * 1024
        for _ in range(100):
            if wal.stat().st_size < 8 * 1024 * 1024:
                break
            await service.put(TaskSpec(queue="q", data={"pad": "x"}))  # a commit wakes it
            await asyncio.sleep(0.05)
        assert wal.stat().st_size < 8 * 1024 * 1024
    finally:
        await engine.close()
