"""The errors Conveyor raises, one tree under one root.

    ConveyorError
    ├── InvalidInput          bad input; the message says what to fix
    ├── NotFound              no such queue or task (or not visible to the caller)
    ├── Conflict              the request clashes with the stored state
    │   ├── IdempotencyConflict   same task id, other content
    │   ├── LeaseLost             stale, foreign or expired lease id
    │   └── InvalidTransition     the task is not in a state that allows it
    ├── WaitTimeout           a blocking call's wait ran out (its task was cancelled)
    └── EngineUnavailable     the store cannot be reached or is closed

The HTTP layer maps each class to a status once; the SDK maps it back.
"""

from __future__ import annotations


class ConveyorError(Exception):
    """Root of every error Conveyor raises on purpose."""

    code: str = "conveyor_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidInput(ConveyorError):
    """The input breaks a rule; nothing was written."""

    code = "invalid_input"


class NotFound(ConveyorError):
    """The queue or task does not exist."""

    code = "not_found"


class Conflict(ConveyorError):
    """The request clashes with the stored state; nothing was changed."""

    code = "conflict"


class IdempotencyConflict(Conflict):
    """A task with this id exists with different content."""

    code = "idempotency_conflict"


class LeaseLost(Conflict):
    """The lease id is stale, foreign or expired."""

    code = "lease_lost"


class InvalidTransition(Conflict):
    """The task's state does not allow the operation."""

    code = "invalid_transition"


class WaitTimeout(ConveyorError):
    """A caller waited for a task's result longer than it allowed; the task was cancelled."""

    code = "timeout"


class EngineUnavailable(ConveyorError):
    """The store cannot be reached, or the engine is closed."""

    code = "engine_unavailable"
