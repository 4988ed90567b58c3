"""HTTP error answers back to Conveyor's error classes: the inverse of `conveyor.http.errors`.

The status picks the class (400 InvalidInput, 404 NotFound, 408 WaitTimeout, 409 Conflict,
503 EngineUnavailable); for 409 the error `code` picks the subclass (LeaseLost,
IdempotencyConflict, InvalidTransition). Two more exist on the client side only, under the
same root:

    ConveyorError
    ├── TaskFailed     a blocking call's task ended failed (HTTP 502, type task_failed)
    └── Unsupported    the server lacks the route (404 without a code, 405, 501): it is
                       older than this client
"""

from __future__ import annotations

import msgspec

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
from conveyor.sdk._models import ErrorInfo


class TaskFailed(ConveyorError):
    """A task the caller waited for ended failed; `error_code` is the worker's error code."""

    code = "task_failed"

    def __init__(
        self, message: str, *, param: str | None = None, error_code: str | None = None
    ) -> None:
        super().__init__(message, param=param)
        self.error_code = error_code


class Unsupported(ConveyorError):
    """The server does not offer this operation: it is older than this client."""

    code = "not_implemented"


BY_STATUS: dict[int, type[ConveyorError]] = {
    400: InvalidInput,
    404: NotFound,
    405: Unsupported,
    408: WaitTimeout,
    409: Conflict,
    501: Unsupported,
    503: EngineUnavailable,
}

BY_CODE: dict[str, type[ConveyorError]] = {
    cls.code: cls for cls in (IdempotencyConflict, LeaseLost, InvalidTransition)
}

# the `type` values the server itself writes; a worker's result may carry others
SERVER_TYPES = frozenset(
    {
        "invalid_request_error",
        "not_found_error",
        "conflict_error",
        "timeout_error",
        "service_unavailable_error",
        "server_error",
        "task_failed",
    }
)


class _Envelope(msgspec.Struct):
    error: ErrorInfo


_decode_envelope = msgspec.json.Decoder(_Envelope).decode


def error_info(content: bytes) -> ErrorInfo | None:
    """The error a response body carries in OpenAI's shape, or None if it is something else."""
    try:
        return _decode_envelope(content).error
    except msgspec.MsgspecError:
        return None


def error_from(status: int, content: bytes, what: str) -> ConveyorError:
    """The Conveyor error for a non-2xx answer to `what` (such as "GET /v1/tasks/x")."""
    info = error_info(content)
    if info is None:
        text = content[:200].decode(errors="replace").strip()
        info = ErrorInfo(message=f"{what} answered HTTP {status}" + (f": {text}" if text else ""))
    elif not info.message:
        info.message = f"{what} answered HTTP {status}"
    if status in (404, 405) and info.code is None:
        return Unsupported(
            f"the server does not offer {what} (HTTP {status}); it may be older than this client"
        )
    if status == 502 and info.type == "task_failed":
        return TaskFailed(info.message, error_code=info.code)
    cls = BY_STATUS.get(status)
    if cls is None:
        return ConveyorError(f"{what} answered HTTP {status}: {info.message}", param=info.param)
    refined = BY_CODE.get(info.code or "")
    if refined is not None and issubclass(refined, cls):
        cls = refined
    return cls(info.message, param=info.param)
