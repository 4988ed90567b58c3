"""Fixtures for the conformance suite: an engine on a manual clock, and a service over it."""

from __future__ import annotations

import pytest

from conveyor.domain.clock import ManualClock
from conveyor.engines import Engine
from conveyor.service.tasks import TaskService
from tests.conftest import EngineFactory


@pytest.fixture
def clock() -> ManualClock:
    """The time every clocked engine and service in a test reads; moves only when told."""
    return ManualClock()


@pytest.fixture
async def clocked_engine(make_engine: EngineFactory, clock: ManualClock) -> Engine:
    """An open engine of the parametrised kind that reads `clock`."""
    return await make_engine(clock=clock)


@pytest.fixture
def service(clocked_engine: Engine, clock: ManualClock) -> TaskService:
    """A TaskService over `clocked_engine`, stamping new tasks with the same `clock`."""
    return TaskService(clocked_engine, clock=clock)
