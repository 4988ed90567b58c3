"""A real `conveyor serve` process for the HTTP tests, shared by the session, once per
engine: every test that takes `server` runs against SQLite, Redis and PostgreSQL alike."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests._server import running_server
from tests.conftest import (
    POSTGRES_URL,
    REDIS_URL,
    delete_redis_keys,
    drop_postgres_schemas,
    require_server,
)
from tests.http._support import unique

SERVER_ENGINES = ["sqlite", "redis", "postgres"]


def _with_param(url: str, name: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{name}={value}"


@contextmanager
def session_store(engine: str) -> Iterator[tuple[str, ...]]:
    """The `--engine` arguments of a fresh store of `engine` that outlives single tests
    (the per-test stores of tests/conftest.py are removed after each test); removed when
    the session's server stops."""
    if engine == "sqlite":  # the server's default, in its data directory
        yield ()
    elif engine == "redis":
        require_server("Redis", REDIS_URL)
        prefix = f"shttp{secrets.token_hex(6)}"
        try:
            yield ("--engine", _with_param(REDIS_URL, "prefix", prefix))
        finally:
            delete_redis_keys([prefix])
    elif engine == "postgres":
        require_server("PostgreSQL", POSTGRES_URL)
        schema = f"shttp_{secrets.token_hex(6)}"
        try:
            yield ("--engine", _with_param(POSTGRES_URL, "schema", schema))
        finally:
            drop_postgres_schemas([schema])
    else:
        raise AssertionError(engine)


@pytest.fixture(scope="session", params=SERVER_ENGINES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The base URL of a `conveyor serve` process on a fresh store of each engine."""
    with (
        session_store(request.param) as engine_args,
        running_server(tmp_path_factory.mktemp(f"conveyor-{request.param}"), *engine_args) as url,
    ):
        yield url


@pytest.fixture
async def client(server: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the server, closed after the test."""
    async with httpx.AsyncClient(base_url=server, timeout=15.0) as http:
        yield http


@pytest.fixture
async def queue(client: httpx.AsyncClient) -> AsyncIterator[str]:
    """A queue name no other test uses; the queue and its tasks are deleted afterwards."""
    name = unique()
    yield name
    response = await client.delete(f"/v1/queues/{name}", params={"force": "true"})
    assert response.status_code in (200, 404), response.text
