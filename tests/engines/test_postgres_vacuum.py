"""The PostgreSQL engine vacuums its own tables from the sweep when dead rows pile up."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from conveyor.domain.queues import QueueConfig
from conveyor.domain.tasks import TaskSpec
from conveyor.engines import create_engine
from conveyor.engines.postgres import PostgresEngine, vacuum
from conveyor.service.tasks import TaskService
from tests.conformance._support import OK, lease_of
from tests.conftest import POSTGRES_URL, postgres_url

STATS = (
    "SELECT n_dead_tup, vacuum_count FROM pg_stat_user_tables"
    " WHERE schemaname = $1 AND relname = 'tasks'"
)


@pytest.mark.slow
async def test_a_sweep_vacuums_tasks_once_dead_rows_pass_the_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vacuum, "DEAD_MIN", 50)
    engine = create_engine(postgres_url())
    assert isinstance(engine, PostgresEngine)
    await engine.open()
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        schema = engine._target.schema
        assert (await engine.sweep()).purged == 0
        assert engine._vacuum.runs == 0  # nothing dead yet
        service = TaskService(engine)
        await service.register_queue(QueueConfig(name="q"))
        await service.put_many([TaskSpec(queue="q", data=i) for i in range(100)])
        for task in await service.take(["q"], size=100):
            await service.complete(task.task_id, lease_of(task), OK)
        for _ in range(150):  # idle backends report their statistics within 10 s
            dead, _ = await admin.fetchrow(STATS, schema)
            if dead > 50:
                break
            await asyncio.sleep(0.1)
        assert dead > 50
        monkeypatch.setattr(engine._vacuum, "_next_check", 0.0)  # CHECK_S has passed
        await engine.sweep()
        runs = engine._vacuum.runs
        assert runs >= 1
        await engine.sweep()
        assert engine._vacuum.runs == runs  # it looked a moment ago: not before CHECK_S
        for _ in range(50):
            dead, vacuums = await admin.fetchrow(STATS, schema)
            if vacuums:
                break
            await asyncio.sleep(0.1)
        assert vacuums >= 1
        assert dead < 50
    finally:
        await admin.close()
        await engine.close()
