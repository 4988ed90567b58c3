"""PostgreSQL engine internals: the URL, the schema and its migration, opening and closing."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from conveyor.domain.queues import QueueConfig
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import TaskSpec
from conveyor.engines import create_engine
from conveyor.engines.postgres import PostgresEngine
from conveyor.engines.postgres.schema import SCHEMA_VERSION
from conveyor.engines.postgres.store import parse_url
from conveyor.errors import EngineUnavailable, InvalidInput
from conveyor.service.tasks import TaskService
from tests.conftest import POSTGRES_URL, postgres_url


def schema_of(url: str) -> str:
    return parse_url(url).schema


async def server() -> asyncpg.Connection:
    return await asyncpg.connect(POSTGRES_URL)


async def test_open_creates_the_schema_at_the_current_version() -> None:
    url = postgres_url()
    engine = create_engine(url)
    assert isinstance(engine, PostgresEngine)
    await engine.open()
    await engine.close()
    conn = await server()
    try:
        schema = schema_of(url)
        versions = await conn.fetch(f'SELECT version FROM "{schema}".schema_version')
        tables = {
            name
            for (name,) in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema
            )
        }
    finally:
        await conn.close()
    assert [v for (v,) in versions] == [SCHEMA_VERSION]
    assert {"tasks", "queues", "counts", "events", "records", "batch_counts"} <= tables


async def test_opening_again_keeps_everything() -> None:
    url = postgres_url()
    first = create_engine(url)
    await first.open()
    service = TaskService(first)
    await service.register_queue(QueueConfig(name="q", max_attempts=5))
    ids = await service.put_many([TaskSpec(queue="q", data=i) for i in range(3)])
    await first.close()

    again = create_engine(url)
    await again.open()  # the migration finds the schema current and changes nothing
    try:
        assert (await again.get_queue("q")).max_attempts == 5
        stats = await again.queue_stats("q")
        assert stats.total(TaskStatus.QUEUED) == 3
        assert [t.task_id for t in await TaskService(again).take(["q"], size=5)] == ids
    finally:
        await again.close()


async def test_engines_opening_together_migrate_once() -> None:
    url = postgres_url()
    engines = [create_engine(url) for _ in range(4)]
    try:
        await asyncio.gather(*(engine.open() for engine in engines))
        await engines[0].register_queue(QueueConfig(name="q"))
        assert [c.name for c in await engines[3].list_queues()] == ["q"]
    finally:
        for engine in engines:
            await engine.close()
    conn = await server()
    try:
        rows = await conn.fetch(f'SELECT version FROM "{schema_of(url)}".schema_version')
    finally:
        await conn.close()
    assert [v for (v,) in rows] == [SCHEMA_VERSION]


async def test_refuses_a_schema_from_a_newer_conveyor() -> None:
    url = postgres_url()
    engine = create_engine(url)
    await engine.open()
    await engine.close()
    conn = await server()
    try:
        await conn.execute(f'UPDATE "{schema_of(url)}".schema_version SET version = 999')
    finally:
        await conn.close()
    with pytest.raises(EngineUnavailable, match="newer"):
        await create_engine(url).open()


async def test_an_unreachable_server_is_engine_unavailable() -> None:
    engine = create_engine("postgresql://postgres:secret@127.0.0.1:1/test?schema=nowhere")
    with pytest.raises(EngineUnavailable, match="cannot open") as caught:
        await engine.open()
    assert "secret" not in str(caught.value)
    assert not await engine.ready()
    await engine.close()  # closing an engine that never opened is harmless


async def test_a_closed_engine_is_unavailable_and_not_ready() -> None:
    engine = create_engine(postgres_url())
    await engine.open()
    assert await engine.ready()
    await engine.close()
    assert not await engine.ready()
    with pytest.raises(EngineUnavailable):
        await engine.get_queue("q")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("schema=Bad-Name", "schema"),
        ("schema=1st", "schema"),
        ("pool_size=0", "pool_size"),
        ("pool_size=many", "pool_size"),
    ],
)
def test_bad_url_options_are_refused(query: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        create_engine(f"postgresql://127.0.0.1/test?{query}")


def test_url_options_are_read_and_the_rest_passed_on() -> None:
    target = parse_url(
        "postgres://me:pw@db.example:6543/app?schema=tenant_a&pool_size=3&sslmode=disable"
    )
    assert target.schema == "tenant_a"
    assert target.pool_size == 3
    assert target.channel == "conveyor_tenant_a"
    assert target.dsn == "postgresql://me:pw@db.example:6543/app?sslmode=disable"
    assert target.display == "postgresql://me@db.example:6543/app"
    assert parse_url("postgresql://127.0.0.1/test").schema == "public"
