"""A real `conveyor serve` process on a free port for the SDK and CLI tests, per session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from conveyor.sdk import AsyncClient, Client
from tests._stores import SERVER_ENGINES, server_on


@pytest.fixture(scope="session", params=SERVER_ENGINES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The base URL of `conveyor serve` on a fresh store of each engine."""
    with server_on(request.param, tmp_path_factory.mktemp(f"sdk-{request.param}")) as url:
        yield url


@pytest.fixture
def queue() -> str:
    """A queue name no other test uses."""
    return f"sdk-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(server: str) -> Iterator[Client]:
    """A blocking client of the test server."""
    with Client(server) as sdk:
        yield sdk


@pytest.fixture
async def async_client(server: str) -> AsyncIterator[AsyncClient]:
    """An async client of the test server."""
    async with AsyncClient(server) as sdk:
        yield sdk
