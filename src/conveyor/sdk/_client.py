"""`Client`: the API over httpx, blocking, for scripts, admin commands and tests.

Every method is one `Call` from `conveyor.sdk._calls` sent as it is; `AsyncClient` is
the same over aiohttp, and the one a worker uses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from conveyor.domain.strategies import Strategy
from conveyor.domain.tasks import TaskError, TaskResult, TaskSpec
from conveyor.engines.engine import Completion
from conveyor.errors import NotFound
from conveyor.sdk import _calls as calls
from conveyor.sdk._batches import Batches
from conveyor.sdk._calls import PutOptions, QueueOptions
from conveyor.sdk._files import Files
from conveyor.sdk._models import (
    CompleteOutcome,
    HeartbeatInfo,
    LeasedTask,
    QueueInfo,
    StreamEvent,
    TaskEvent,
    TaskInfo,
    TaskList,
)
from conveyor.sdk._streams import RESULT, StreamReader
from conveyor.sdk._uploads import Download, Multipart

T = TypeVar("T")


class Client:
    """Talks to a Conveyor server; use as `with Client() as client:`.

    The server is `server`, else CONVEYOR_URL, else http://127.0.0.1:8080; the API key is
    `api_key`, else CONVEYOR_API_KEY. HTTP errors raise the Conveyor error they stand for
    (`NotFound`, `LeaseLost`, ...); a server that cannot be reached raises httpx's
    `TransportError`. `files` and `batches` are OpenAI's Files and Batch APIs.
    """

    files: Files
    batches: Batches

    def __init__(
        self,
        server: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = calls.DEFAULT_TIMEOUT_S,
        max_connections: int = 100,
    ) -> None:
        self.server = calls.server_url(server)
        self._headers = calls.headers(api_key)
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._client: httpx.Client | None = None  # made on first use
        self.files = Files(self)
        self.batches = Batches(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections; the client can be used again afterwards."""
        http, self._client = self._client, None
        if http is not None:
            http.close()

    def _http(self) -> httpx.Client:
        if self._client is None:
            limits = httpx.Limits(max_connections=self._max_connections)
            self._client = httpx.Client(
                headers=self._headers, timeout=self._timeout_s, limits=limits
            )
        return self._client

    def send(self, call: calls.Call[T]) -> T:
        """Send one prepared call and read its answer."""
        response = self._http().request(
            call.method,
            self.server + call.path,
            content=_content(call),
            params=call.params,
            headers=call.all_headers(),
            timeout=self._timeout_s if call.timeout_s is None else call.timeout_s,
        )
        return calls.answer(call, response.status_code, response.content)

    def save(self, call: calls.Call[None], path: str | os.PathLike[str]) -> Path:
        """Send one prepared call and write its 2xx body to `path` as it arrives."""
        with self._http().stream(
            call.method,
            self.server + call.path,
            content=_content(call),
            params=call.params,
            headers=call.all_headers(),
            timeout=self._timeout_s if call.timeout_s is None else call.timeout_s,
        ) as response:
            if not 200 <= response.status_code < 300:
                calls.answer(call, response.status_code, response.read())
            with Download(path) as sink:
                for chunk in response.iter_bytes():
                    sink.write(chunk)
        return sink.path

    # ---- queues ----

    def register_queue(
        self, name: str, *, paused: bool | None = None, **options: Unpack[QueueOptions]
    ) -> QueueInfo:
        """Create a queue with its defaults, or update the defaults of an existing one."""
        return self.send(calls.register_queue(name, paused=paused, **options))

    def list_queues(self) -> list[QueueInfo]:
        """Every queue, without stats."""
        return self.send(calls.list_queues())

    def get_queue(self, name: str) -> QueueInfo:
        """A queue with its counts per level."""
        return self.send(calls.get_queue(name))

    def update_queue(
        self, name: str, *, paused: bool | None = None, **options: Unpack[QueueOptions]
    ) -> QueueInfo:
        """Change a queue's defaults or paused flag."""
        return self.send(calls.update_queue(name, paused=paused, **options))

    def pause_queue(self, name: str) -> QueueInfo:
        """Stop takes from a queue; puts still land."""
        return self.update_queue(name, paused=True)

    def resume_queue(self, name: str) -> QueueInfo:
        """Let takes from a paused queue go on."""
        return self.update_queue(name, paused=False)

    def obliterate_queue(self, name: str, *, force: bool = False) -> int:
        """Delete a queue and its tasks (running ones only with `force`); the tasks deleted."""
        return self.send(calls.obliterate_queue(name, force=force))

    # ---- producing ----

    def put(self, queue: str, data: Any = None, **options: Unpack[PutOptions]) -> TaskInfo:
        """Put a task in callback mode: answered at once with the stored task."""
        return self.send(calls.put(queue, data, **options))

    def run(self, queue: str, data: Any = None, **options: Unpack[PutOptions]) -> TaskResult:
        """Put a task and wait for a worker's result (`timeout_s`, default 300 s).

        Returns the result's status code and body; raises WaitTimeout if no worker finished
        in time (the task is cancelled), TaskFailed if the task failed.
        """
        try:
            return self.send(calls.run(queue, data, **options))
        except calls.ResultOrError as ambiguous:
            try:
                task: TaskInfo | None = self.get_task(ambiguous.task_id)
            except NotFound:
                task = None
            return ambiguous.resolve(task)

    def stream(
        self, queue: str, data: Any = None, **options: Unpack[PutOptions]
    ) -> Iterator[StreamEvent]:
        """Put a task and yield the events its worker emits, ending with `result`.

        `end_of(message)` reads the final message. Leaving the loop early hangs up, which
        cancels the task.
        """
        yield from self._events(calls.stream(queue, data, **options))

    def follow(self, task_id: str, *, after: int = 0) -> Iterator[StreamEvent]:
        """Yield a task's events above `after` as they come, ending with `result`."""
        yield from self._events(calls.follow(task_id, after=after))

    def _events(self, call: calls.Call[None]) -> Iterator[StreamEvent]:
        with self._http().stream(
            call.method,
            self.server + call.path,
            content=_content(call),
            params=call.params,
            timeout=call.timeout_s,
        ) as response:
            if response.status_code != 200:
                calls.answer(call, response.status_code, response.read())
            reader = StreamReader(call.what)
            for line in response.iter_lines():
                message = reader.feed(line)
                if message is not None:
                    yield message
                    if message.event == RESULT:
                        return

    def put_many(self, tasks: Sequence[TaskSpec]) -> list[str]:
        """Put many callback-mode tasks at once, all or none; their ids in order."""
        return self.send(calls.put_many(tasks))

    def get_task(self, task_id: str) -> TaskInfo:
        """One task."""
        return self.send(calls.get_task(task_id))

    def list_tasks(
        self, queue: str, status: str | None = None, *, after: str | None = None, limit: int = 100
    ) -> TaskList:
        """A page of a queue's tasks, optionally in one status."""
        return self.send(calls.list_tasks(queue, status, after=after, limit=limit))

    def cancel(self, task_id: str) -> TaskInfo:
        """Cancel a task (a running one when its worker next reports)."""
        return self.send(calls.cancel(task_id))

    def requeue(self, task_id: str) -> TaskInfo:
        """Send a failed (dead-lettered) task back to its queue."""
        return self.send(calls.requeue(task_id))

    # ---- working ----

    def take(
        self,
        queues: Sequence[str],
        *,
        strategy: Strategy | str = Strategy.FIFO,
        size: int = 1,
        lease_s: float | None = None,
        wait_s: float = 0.0,
        worker_id: str = "",
    ) -> list[LeasedTask]:
        """Lease up to `size` tasks; with `wait_s`, wait up to that long for one to arrive."""
        call = calls.take(
            queues,
            strategy=strategy,
            size=size,
            lease_s=lease_s,
            wait_s=wait_s,
            worker_id=worker_id,
        )
        return self.send(call)

    def complete(self, task_id: str, lease_id: str, result: TaskResult | None = None) -> TaskInfo:
        """Record a leased task's result (default: status 200, no body)."""
        return self.send(calls.complete(task_id, lease_id, result or TaskResult()))

    def complete_many(self, items: Sequence[Completion]) -> list[CompleteOutcome]:
        """Record many results in one request; one outcome per item, in order."""
        return self.send(calls.complete_many(items))

    def fail(
        self,
        task_id: str,
        lease_id: str,
        message: str,
        *,
        code: str | None = None,
        retry: bool = True,
        retry_after_s: float | None = None,
    ) -> TaskInfo:
        """End an attempt with an error: the task retries (if `retry` and attempts are left)."""
        error = TaskError(message=message, code=code)
        return self.send(
            calls.fail(task_id, lease_id, error, retry=retry, retry_after_s=retry_after_s)
        )

    def heartbeat(
        self, task_id: str, lease_id: str, extend_s: float | None = None
    ) -> HeartbeatInfo:
        """Extend a lease; the answer says whether the task was cancelled meanwhile."""
        return self.send(calls.heartbeat(task_id, lease_id, extend_s))

    def emit(self, task_id: str, lease_id: str, events: Sequence[TaskEvent]) -> int:
        """Append events to a running task; the id of the last one."""
        return self.send(calls.emit(task_id, lease_id, events))


def _content(call: calls.Call[T]) -> bytes | Iterable[bytes] | None:
    """What httpx sends: the body, or a multipart body's chunks as they are read."""
    return call.body.chunks() if isinstance(call.body, Multipart) else call.body
