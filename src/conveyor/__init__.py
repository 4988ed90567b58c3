"""Conveyor: a task queue engine for AI workloads.

The public API: the service over an engine, the values it takes and returns, and errors.
"""

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

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "BackoffKind",
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
    "TaskPage",
    "TaskResult",
    "TaskService",
    "TaskSpec",
    "TaskStatus",
    "WaitTimeout",
    "__version__",
    "create_engine",
    "system_clock",
]
