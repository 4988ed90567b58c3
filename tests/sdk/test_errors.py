"""The SDK's status → error class table is the inverse of the server's (no server needed)."""

from __future__ import annotations

import msgspec
import pytest

from conveyor import (
    Conflict,
    ConveyorError,
    EngineUnavailable,
    IdempotencyConflict,
    InvalidInput,
    InvalidTransition,
    LeaseLost,
    NotFound,
    TaskFailed,
    Unsupported,
    WaitTimeout,
)
from conveyor.http.errors import status_of
from conveyor.sdk._errors import error_from


def _body(kind: str, code: str | None, message: str = "why", param: str | None = None) -> bytes:
    error = {"message": message, "type": kind, "param": param, "code": code}
    return msgspec.json.encode({"error": error})


@pytest.mark.parametrize(
    "error",
    [
        InvalidInput("bad", param="size"),
        NotFound("gone"),
        Conflict("clash"),
        IdempotencyConflict("same id"),
        LeaseLost("stale"),
        InvalidTransition("not now"),
        WaitTimeout("too long"),
        EngineUnavailable("down"),
    ],
)
def test_every_server_error_comes_back_as_its_class(error: ConveyorError) -> None:
    status, kind = status_of(error)
    back = error_from(status, _body(kind, error.code, error.message, error.param), "POST /x")
    assert type(back) is type(error)
    assert (back.message, back.param) == (error.message, error.param)


def test_a_route_the_server_lacks_is_unsupported() -> None:
    starlette_404 = _body("not_found_error", None, "Not Found")
    back = error_from(404, starlette_404, "POST /v1/tasks/t/events")
    assert isinstance(back, Unsupported)
    assert "POST /v1/tasks/t/events" in back.message
    assert isinstance(error_from(501, _body("x", "not_implemented"), "GET /y"), Unsupported)


def test_a_failed_blocking_task_is_task_failed() -> None:
    back = error_from(502, _body("task_failed", "ValueError", "bad value"), "POST /v1/tasks")
    assert isinstance(back, TaskFailed)
    assert (back.message, back.error_code) == ("bad value", "ValueError")


def test_anything_else_is_a_conveyor_error_with_the_status() -> None:
    back = error_from(500, b"<html>oops</html>", "GET /v1/queues")
    assert type(back) is ConveyorError
    assert "HTTP 500" in back.message
    assert "oops" in back.message
    gateway = error_from(502, b"", "GET /v1/queues")
    assert type(gateway) is ConveyorError
