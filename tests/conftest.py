"""Fixtures shared by every test: engines by name, opened and closed for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from conveyor.domain.clock import Clock, system_clock
from conveyor.engines import Engine, create_engine

ENGINES = ["memory", "sqlite"]

EngineFactory = Callable[..., Awaitable[Engine]]


def engine_url(name: str, tmp_path: Path) -> str:
    """The URL of a fresh store for engine `name`."""
    if name == "memory":
        return "memory://"
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'conveyor.db'}"
    raise AssertionError(name)


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
