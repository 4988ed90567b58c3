"""One request and how to read its answer (`Call`), and what every request carries.

No I/O: `Client` and `AsyncClient` send a `Call` and hand the status and body back to
`answer`, which decodes a 2xx body or raises the Conveyor error the status maps to.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import TaskResult
from conveyor.errors import ConveyorError
from conveyor.sdk._errors import error_from
from conveyor.sdk._models import TaskInfo
from conveyor.sdk._uploads import Multipart

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_S = 30.0


def server_url(server: str | None = None) -> str:
    """The server's base URL: the argument, else CONVEYOR_URL, else the local default."""
    url = server or os.environ.get("CONVEYOR_URL") or DEFAULT_URL
    return url.rstrip("/")


def headers(api_key: str | None = None) -> dict[str, str]:
    """Headers for every request: the API key (argument, else CONVEYOR_API_KEY) as Bearer."""
    key = api_key if api_key is not None else os.environ.get("CONVEYOR_API_KEY")
    sent = {"User-Agent": "conveyor-python", "Content-Type": "application/json"}
    if key:
        sent["Authorization"] = f"Bearer {key}"
    return sent


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request and how to read its answer."""

    method: str
    path: str
    read: Callable[[int, bytes], T]
    body: bytes | Multipart | None = None  # a Multipart body is streamed as it is sent
    params: Mapping[str, str] | None = None
    timeout_s: float | None = None  # None: the client's default
    headers: Mapping[str, str] | None = None  # on top of the client's own

    def all_headers(self) -> Mapping[str, str] | None:
        """This call's own headers, with a multipart body's type and length."""
        if isinstance(self.body, Multipart):
            return {**(self.headers or {}), **self.body.headers()}
        return self.headers

    @property
    def what(self) -> str:
        return f"{self.method} {self.path}"


class ResultOrError(Exception):
    """A blocking put answered an error in OpenAI's shape with a non-2xx status.

    That is either the server's own error or a worker's result that happens to look like
    one (a forwarding worker relays OpenAI's errors as they are). The task says which:
    the client reads it and calls `resolve`.
    """

    def __init__(self, task_id: str, result: TaskResult, error: ConveyorError) -> None:
        super().__init__(error.message)
        self.task_id = task_id
        self.result = result
        self.error = error

    def resolve(self, task: TaskInfo | None) -> TaskResult:
        """The worker's result if the task succeeded with it, else raise the server's error."""
        if (
            task is not None
            and task.status is TaskStatus.SUCCEEDED
            and task.result is not None
            and task.result.status_code == self.result.status_code
        ):
            return self.result
        raise self.error


def expect(decode: Callable[[bytes], T]) -> Callable[[int, bytes], T]:
    """A reader that decodes a 2xx body with `decode` and raises the mapped error otherwise."""

    def read(status: int, content: bytes) -> T:
        if 200 <= status < 300:
            return decode(content)
        raise _Raise(status, content)

    return read


class _Raise(Exception):
    """Carries a non-2xx answer out of a reader; `_send` turns it into a Conveyor error."""

    def __init__(self, status: int, content: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.content = content


def answer(call: Call[T], status: int, content: bytes) -> T:
    """What `call` returns for an HTTP answer; raises the Conveyor error it maps to."""
    try:
        return call.read(status, content)
    except _Raise as exc:
        raise error_from(exc.status, exc.content, call.what) from None
