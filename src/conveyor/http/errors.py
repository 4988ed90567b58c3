"""Errors as HTTP: one table from error class to status, in OpenAI's error shape."""

from __future__ import annotations

import logging

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from conveyor.errors import (
    Conflict,
    ConveyorError,
    EngineUnavailable,
    InvalidInput,
    NotFound,
    WaitTimeout,
)

log = logging.getLogger(__name__)

# the most specific class wins: Conflict's subclasses share its status and keep their code
STATUS: dict[type[ConveyorError], tuple[int, str]] = {
    InvalidInput: (400, "invalid_request_error"),
    NotFound: (404, "not_found_error"),
    Conflict: (409, "conflict_error"),
    WaitTimeout: (408, "timeout_error"),
    EngineUnavailable: (503, "service_unavailable_error"),
}


def error_body(
    message: str, kind: str, *, param: str | None = None, code: str | None = None
) -> bytes:
    """The JSON of an error, in OpenAI's shape."""
    return msgspec.json.encode(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}
    )


def error_response(
    status: int, message: str, kind: str, *, param: str | None = None, code: str | None = None
) -> Response:
    return Response(
        error_body(message, kind, param=param, code=code),
        status_code=status,
        media_type="application/json",
    )


def status_of(exc: ConveyorError) -> tuple[int, str]:
    """The HTTP status and error type for a Conveyor error."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500, "server_error"


async def conveyor_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConveyorError)
    status, kind = status_of(exc)
    return error_response(status, exc.message, kind, param=exc.param, code=exc.code)


async def validation_error(request: Request, exc: Exception) -> Response:
    # msgspec says where: "Expected `int`, got `str` - at `$.size`"
    message = str(exc)
    param = message.rsplit("at `$.", 1)[1].rstrip("`") if "at `$." in message else None
    return error_response(
        400, f"invalid request body: {message}", "invalid_request_error", param=param
    )


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error_response(exc.status_code, str(exc.detail), kind)


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "the server failed to handle the request", "server_error")


HANDLERS = {
    ConveyorError: conveyor_error,
    msgspec.ValidationError: validation_error,
    msgspec.DecodeError: validation_error,
    HTTPException: http_error,
    Exception: server_error,
}
