"""Fixtures shared by every test: engines by name, opened and closed for each test."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conveyor.domain.clock import Clock, system_clock
from conveyor.engines import Engine, create_engine
from tests._cluster import Cluster, require_binaries

ENGINES = ["memory", "sqlite", "postgres", "redis", "redis-cluster"]

EngineFactory = Callable[..., Awaitable[Engine]]


def engine_url(name: str, tmp_path: Path) -> str:
    """The URL of a fresh store for engine `name`."""
    if name == "memory":
        return "memory://"
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'conveyor.db'}"
    if name == "postgres":
        return postgres_url()
    if name == "redis":
        return redis_url()
    if name == "redis-cluster":
        return redis_cluster_url()
    raise AssertionError(name)


# ---- PostgreSQL: a schema of its own for each store, dropped after the test ----
POSTGRES_URL = os.environ.get("CONVEYOR_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")
_postgres_schemas: list[str] = []


@cache
def _unreachable(url: str) -> str | None:
    """Why the server at `url` cannot be reached, or None if it answers (asked once)."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2):
            return None
    except OSError as exc:
        return f"{parts.hostname}:{parts.port}: {exc}"


def require_server(what: str, url: str) -> None:
    """Skip the test when the server is unreachable; under CI=true, fail it instead."""
    reason = _unreachable(url)
    if reason is None:
        return
    message = f"{what} is not reachable at {reason} (set the URL in the environment)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must run every engine", pytrace=False)
    pytest.skip(message)


def postgres_url() -> str:
    """A fresh schema on the test PostgreSQL server (created by the engine on open)."""
    require_server("PostgreSQL", POSTGRES_URL)
    schema = f"t_{secrets.token_hex(6)}"
    _postgres_schemas.append(schema)
    return f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={schema}"


def drop_postgres_schemas(schemas: list[str]) -> None:
    """Drop `schemas` (and all in them) on the test PostgreSQL server."""
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            for schema in schemas:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    # in a thread of its own: the test's event loop may still be set on this one
    thread = threading.Thread(target=asyncio.run, args=(drop(),))
    thread.start()
    thread.join()


@pytest.fixture(autouse=True)
def _drop_postgres_schemas() -> Iterator[None]:
    """Drop the schemas the test's PostgreSQL stores used, once the test is over."""
    yield
    if _postgres_schemas:
        schemas = list(_postgres_schemas)
        _postgres_schemas.clear()
        drop_postgres_schemas(schemas)


# ---- Redis: a key prefix of its own for each store, its keys deleted after the test ----
REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS", "redis://127.0.0.1:6379/0")
_REDIS_SESSION = secrets.token_hex(4)  # this run's prefixes, apart from any other run's
_redis_prefixes: list[str] = []


def redis_url() -> str:
    """A fresh key prefix on the test Redis server."""
    require_server("Redis", REDIS_URL)
    prefix = f"t{_REDIS_SESSION}{secrets.token_hex(6)}"
    _redis_prefixes.append(prefix)
    return f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix={prefix}"


def delete_redis_keys(prefixes: list[str]) -> None:
    """Delete every key under `prefixes` (SCAN, then DEL)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        for prefix in prefixes:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
    finally:
        client.close()


@pytest.fixture(autouse=True)
def _delete_redis_keys() -> Iterator[None]:
    """Delete the keys the test's Redis stores used, once the test is over."""
    yield
    if _redis_prefixes:
        prefixes = list(_redis_prefixes)
        _redis_prefixes.clear()
        delete_redis_keys(prefixes)


# ---- Redis Cluster: three masters started for the session (tests/_cluster.py) ----
_clusters: list[Cluster] = []
_redis_cluster_prefixes: list[str] = []


def redis_cluster() -> Cluster:
    """The session's Redis Cluster, started on first use (skips without redis-server)."""
    require_binaries()
    if not _clusters:
        cluster = Cluster(Path(tempfile.mkdtemp(prefix="conveyor-cluster-")))
        _clusters.append(cluster)  # stopped at the end of the session, even half-started
        cluster.start()
    return _clusters[0]


def redis_cluster_url() -> str:
    """A fresh key prefix on the session's Redis Cluster."""
    cluster = redis_cluster()
    prefix = f"t{_REDIS_SESSION}{secrets.token_hex(6)}"
    _redis_cluster_prefixes.append(prefix)
    return cluster.url(prefix)


@pytest.fixture(scope="session", autouse=True)
def _stop_redis_cluster() -> Iterator[None]:
    """Stop the session's Redis Cluster, if a test started it, once every test is over."""
    yield
    for cluster in _clusters:
        cluster.stop()
        shutil.rmtree(cluster.directory, ignore_errors=True)
    _clusters.clear()


@pytest.fixture(autouse=True)
def _delete_redis_cluster_keys() -> Iterator[None]:
    """Delete the keys the test's Redis Cluster stores used, once the test is over."""
    yield
    if _redis_cluster_prefixes:
        prefixes = list(_redis_cluster_prefixes)
        _redis_cluster_prefixes.clear()
        _clusters[0].delete(prefixes)


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_engine(engine_name: str, tmp_path: Path) -> AsyncIterator[EngineFactory]:
    """Build and open engines of the parametrised kind; all are closed after the test."""
    opened: list[Engine] = []

    async def make(clock: Clock = system_clock) -> Engine:
        engine = create_engine(engine_url(engine_name, tmp_path / str(len(opened))), clock=clock)
        (tmp_path / str(len(opened))).mkdir(exist_ok=True)
        await engine.open()
        opened.append(engine)
        return engine

    yield make
    for engine in reversed(opened):
        await engine.close()


@pytest.fixture
async def engine(make_engine: EngineFactory) -> Engine:
    """One open engine of the parametrised kind, on the system clock."""
    return await make_engine()
