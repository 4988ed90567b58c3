"""Fixtures for the unit tests: a manual clock and a TaskService over a memory engine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conveyor.domain.clock import ManualClock
from conveyor.engines.memory import MemoryEngine
from conveyor.service.tasks import TaskService


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when a test advances it."""
    return ManualClock()


@pytest.fixture
async def memory_engine(clock: ManualClock) -> AsyncIterator[MemoryEngine]:
    """An open memory engine on the manual clock, closed after the test."""
    engine = MemoryEngine(clock=clock)
    await engine.open()
    yield engine
    await engine.close()


@pytest.fixture
def service(memory_engine: MemoryEngine, clock: ManualClock) -> TaskService:
    """The task service over the memory engine, on the same clock."""
    return TaskService(memory_engine, clock=clock)
