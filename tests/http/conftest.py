"""A real `conveyor serve` process for the HTTP tests, shared by the session, once per
engine: every test that takes `server` runs against SQLite, Redis and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests._stores import SERVER_ENGINES, server_on
from tests.http._support import unique


@pytest.fixture(scope="session", params=SERVER_ENGINES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The base URL of a `conveyor serve` process on a fresh store of each engine."""
    with server_on(request.param, tmp_path_factory.mktemp(f"conveyor-{request.param}")) as url:
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
