"""Errors as HTTP: one table from error class to status, in OpenAI's error shape."""

from __future__ import annotations

import logging
import re

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


# the domain names some durations after their unit; the wire names them as clients send them
WIRE_NAMES = {
    "lease_s": "process_timeout",
    "retention_s": "retention",
    "timeout_s": "timeout",
    "delay_s": "delay",
}
_DOMAIN_NAME = re.compile(r"\b(" + "|".join(WIRE_NAMES) + r")$")


def wire_names(message: str, param: str | None) -> tuple[str, str | None]:
    """The message and param with a domain field name replaced by the name clients send.

    Only an error about that very field is rewritten, and in its message only the first
    mention, so that a queue or task id that happens to read `delay_s` is left alone.
    """
    if param is None or (found := _DOMAIN_NAME.search(param)) is None:
        return message, param
    domain, wire = found.group(1), WIRE_NAMES[found.group(1)]
    return re.sub(rf"\b{domain}\b", wire, message, count=1), param[: found.start()] + wire


async def conveyor_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConveyorError)
    status, kind = status_of(exc)
    message, param = wire_names(exc.message, exc.param)
    return error_response(status, message, kind, param=param, code=exc.code)


_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_FIELD = re.compile(r"(?:unknown|required) field `(?P<field>[^`]+)`")


def validation_param(message: str) -> str | None:
    """The field a msgspec error is about, as `a.b[0].c`, or None for the body as a whole.

    msgspec says where ("Expected `int`, got `str` - at `$.size`"), and for an unknown or
    missing field names the field apart from where its object is.
    """
    at = _AT.search(message)
    path = at.group("path") if at else ""
    field = _FIELD.search(message)
    if field is not None:
        path = f"{path}.{field.group('field')}" if path else field.group("field")
    return path or None


async def validation_error(request: Request, exc: Exception) -> Response:
    message = str(exc)
    return error_response(
        400,
        f"invalid request body: {message}",
        "invalid_request_error",
        param=validation_param(message),
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
