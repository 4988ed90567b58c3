"""PostgreSQL connections: verbs and wake-ups carry on after the server drops them, and
reach the waiters of another engine (another server process) on the same schema."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from conveyor.domain.events import EventSpec
from conveyor.domain.queues import QueueConfig
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import TaskSpec
from conveyor.engines import Engine, create_engine
from conveyor.engines.postgres import PostgresEngine
from conveyor.service.tasks import TaskService
from tests.conformance._support import OK, lease_of
from tests.conftest import POSTGRES_URL, postgres_url


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Engine, Engine]]:
    """Two engines on one schema, as two server processes would be."""
    url = postgres_url()
    engines = [create_engine(url), create_engine(url)]
    for engine in engines:
        await engine.open()
    yield engines[0], engines[1]
    for engine in engines:
        await engine.close()


async def terminate_backends(engine: Engine) -> int:
    """Have the server end every connection of `engine`'s schema, as a restart would."""
    assert isinstance(engine, PostgresEngine)
    schema = engine._target.schema
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        ended = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = $1 AND pid <> pg_backend_pid()",
            f"conveyor {schema}",
        )
    finally:
        await conn.close()
    await asyncio.sleep(0.1)  # the clients see their sockets close
    return len(ended)


async def test_verbs_work_again_after_the_server_ends_every_connection() -> None:
    engine = create_engine(postgres_url())
    await engine.open()
    try:
        service = TaskService(engine)
        await service.register_queue(QueueConfig(name="q"))
        first, second = await service.put_many([TaskSpec(queue="q"), TaskSpec(queue="q")])
        # several pooled connections, and the listener's
        await asyncio.gather(*(engine.get_task(first) for _ in range(5)))
        assert await terminate_backends(engine) >= 2
        assert await engine.ready()
        (task,) = await service.take(["q"])
        assert task.task_id == first
        done = await service.complete(task.task_id, lease_of(task), OK)
        assert done.status is TaskStatus.SUCCEEDED
        assert await terminate_backends(engine) >= 1
        assert (await engine.get_task(second)).status is TaskStatus.QUEUED
        assert (await engine.queue_stats("q")).total(TaskStatus.SUCCEEDED) == 1
    finally:
        await engine.close()


async def test_a_put_on_one_engine_wakes_a_watch_on_another(pair: tuple[Engine, Engine]) -> None:
    here, there = pair
    await TaskService(there).register_queue(QueueConfig(name="q"))
    async with here.watch(["q"]) as watch:
        assert not await watch.wait(0.05)
        await TaskService(there).put(TaskSpec(queue="q"))
        assert await watch.wait(5)
    assert len(await TaskService(here).take(["q"])) == 1


async def test_events_and_the_end_on_one_engine_wake_a_task_watch_on_another(
    pair: tuple[Engine, Engine],
) -> None:
    here, there = pair
    service = TaskService(there)
    task = await service.put(TaskSpec(queue="q"))
    async with here.watch_task(task.task_id) as watch:
        (taken,) = await service.take(["q"])
        assert not await watch.wait(0.05)
        await service.append_events(taken.task_id, lease_of(taken), [EventSpec(data="token")])
        assert await watch.wait(5)
        await service.complete(taken.task_id, lease_of(taken), OK)
        assert await watch.wait(5)
    assert [e.data for e in await here.list_events(task.task_id)] == ["token"]
    assert (await here.get_task(task.task_id)).status is TaskStatus.SUCCEEDED


async def test_a_blocking_put_on_one_engine_gets_the_result_completed_on_another(
    pair: tuple[Engine, Engine],
) -> None:
    here, there = pair

    async def worker() -> None:
        service = TaskService(there)
        (task,) = await service.take(["q"], wait_s=5)
        await service.complete(task.task_id, lease_of(task), OK)

    running = asyncio.create_task(worker())
    done = await TaskService(here).run(TaskSpec(queue="q"), wait_s=5)
    await running
    assert done.status is TaskStatus.SUCCEEDED
    assert done.result == OK


async def test_watches_wake_after_the_listener_reconnects(pair: tuple[Engine, Engine]) -> None:
    here, there = pair
    assert isinstance(here, PostgresEngine)
    await TaskService(there).register_queue(QueueConfig(name="q"))
    async with here.watch(["q"]) as watch:
        await terminate_backends(here)
        # whatever was sent while no one listened, a waiter looks again once it is back
        assert await watch.wait(5)
        for _ in range(100):
            if here._listener.reconnects:
                break
            await asyncio.sleep(0.05)
        assert here._listener.reconnects >= 1
        await TaskService(there).put(TaskSpec(queue="q"))
        assert await watch.wait(5)
