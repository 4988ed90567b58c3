"""Conveyor: a task queue engine for AI workloads.

The public API: the service over an engine, the values it takes and returns, errors, and
the SDK (`Client`, `AsyncClient`, `Worker`, loaded on first use so that the server does
not import HTTP client libraries it never calls).
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from conveyor.domain.clock import Clock, ManualClock, system_clock
from conveyor.domain.queues import Lane, QueueConfig, QueueUpdate, Source
from conveyor.domain.retry import Backoff, BackoffKind
from conveyor.domain.states import TaskStatus
from conveyor.domain.strategies import Strategy
from conveyor.domain.tasks import ResponseMode, Task, TaskError, TaskResult, TaskSpec
from conveyor.engines import Engine, create_engine
from conveyor.engines.engine import Completion, Heartbeat, QueueStats, SweepReport, TaskPage
from conveyor.errors import (
    Conflict,
    ConveyorError,
    EngineUnavailable,
    IdempotencyConflict,
    InvalidInput,
    InvalidTransition,
    LeaseLost,
    NotFound,
    WaitTimeout,
)
from conveyor.service.maintenance import Sweeper
from conveyor.service.tasks import TaskService

if _TYPE_CHECKING:
    from conveyor.sdk._async_client import AsyncClient
    from conveyor.sdk._client import Client
    from conveyor.sdk._errors import TaskFailed, Unsupported
    from conveyor.sdk._worker import Worker

__version__ = "0.1.0"

_SDK = {
    "AsyncClient": "conveyor.sdk._async_client",
    "Client": "conveyor.sdk._client",
    "TaskFailed": "conveyor.sdk._errors",
    "Unsupported": "conveyor.sdk._errors",
    "Worker": "conveyor.sdk._worker",
}


def __getattr__(name: str) -> object:
    """Import an SDK class on first use (PEP 562)."""
    module = _SDK.get(name)
    if module is None:
        raise AttributeError(f"module 'conveyor' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AsyncClient",
    "Backoff",
    "BackoffKind",
    "Client",
    "Clock",
    "Completion",
    "Conflict",
    "ConveyorError",
    "Engine",
    "EngineUnavailable",
    "Heartbeat",
    "IdempotencyConflict",
    "InvalidInput",
    "InvalidTransition",
    "Lane",
    "LeaseLost",
    "ManualClock",
    "NotFound",
    "QueueConfig",
    "QueueStats",
    "QueueUpdate",
    "ResponseMode",
    "Source",
    "Strategy",
    "SweepReport",
    "Sweeper",
    "Task",
    "TaskError",
    "TaskFailed",
    "TaskPage",
    "TaskResult",
    "TaskService",
    "TaskSpec",
    "TaskStatus",
    "Unsupported",
    "WaitTimeout",
    "Worker",
    "__version__",
    "create_engine",
    "system_clock",
]
