"""`AsyncClient`: the API over aiohttp, for producers, admin code and workers.

Every method is one `Call` from `conveyor.sdk._calls` sent as it is. aiohttp and not httpx
because a worker's hot loop needs it: httpx stalls near 700 requests/s.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, Unpack

import aiohttp

from conveyor.domain.strategies import Strategy
from conveyor.domain.tasks import TaskError, TaskResult, TaskSpec
from conveyor.engines.engine import Completion
from conveyor.errors import NotFound
from conveyor.sdk import _calls as calls
from conveyor.sdk._batches import AsyncBatches
from conveyor.sdk._calls import PutOptions, QueueOptions
from conveyor.sdk._files import AsyncFiles
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
from conveyor.sdk._uploads import CHUNK_BYTES, Download, Multipart

T = TypeVar("T")


class AsyncClient:
    """Talks to a Conveyor server; use as `async with AsyncClient() as client:`.

    The server is `server`, else CONVEYOR_URL, else http://127.0.0.1:8080; the API key is
    `api_key`, else CONVEYOR_API_KEY. HTTP errors raise the Conveyor error they stand for
    (`NotFound`, `LeaseLost`, ...); a server that cannot be reached raises aiohttp's
    `ClientError`. `files` and `batches` are OpenAI's Files and Batch APIs.
    """

    files: AsyncFiles
    batches: AsyncBatches

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
        self._session: aiohttp.ClientSession | None = None  # made on first use, in the loop
        self.files = AsyncFiles(self)
        self.batches = AsyncBatches(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections; the client can be used again afterwards."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            )
        return self._session

    async def send(self, call: calls.Call[T]) -> T:
        """Send one prepared call and read its answer."""
        timeout = None if call.timeout_s is None else aiohttp.ClientTimeout(total=call.timeout_s)
        async with self._http().request(
            call.method,
            self.server + call.path,
            data=_data(call),
            params=call.params,
            headers=call.all_headers(),
            timeout=timeout,
        ) as response:
            content = await response.read()
        return calls.answer(call, response.status, content)

    async def save(self, call: calls.Call[None], path: str | os.PathLike[str]) -> Path:
        """Send one prepared call and write its 2xx body to `path` as it arrives."""
        timeout = None if call.timeout_s is None else aiohttp.ClientTimeout(total=call.timeout_s)
        async with self._http().request(
            call.method,
            self.server + call.path,
            data=_data(call),
            params=call.params,
            headers=call.all_headers(),
            timeout=timeout,
        ) as response:
            if not 200 <= response.status < 300:
                calls.answer(call, response.status, await response.read())
            # written in the loop: a write of at most a chunk lands in the page cache at
            # once, unlike the reads of an upload, which may wait for the disk
            with Download(path) as sink:
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    sink.write(chunk)
        return sink.path

    # ---- queues ----

    async def register_queue(
        self, name: str, *, paused: bool | None = None, **options: Unpack[QueueOptions]
    ) -> QueueInfo:
        """Create a queue with its defaults, or update the defaults of an existing one."""
        return await self.send(calls.register_queue(name, paused=paused, **options))

    async def list_queues(self) -> list[QueueInfo]:
        """Every queue, without stats."""
        return await self.send(calls.list_queues())

    async def get_queue(self, name: str) -> QueueInfo:
        """A queue with its counts per level."""
        return await self.send(calls.get_queue(name))

    async def update_queue(
        self, name: str, *, paused: bool | None = None, **options: Unpack[QueueOptions]
    ) -> QueueInfo:
        """Change a queue's defaults or paused flag."""
        return await self.send(calls.update_queue(name, paused=paused, **options))

    async def pause_queue(self, name: str) -> QueueInfo:
        """Stop takes from a queue; puts still land."""
        return await self.update_queue(name, paused=True)

    async def resume_queue(self, name: str) -> QueueInfo:
        """Let takes from a paused queue go on."""
        return await self.update_queue(name, paused=False)

    async def obliterate_queue(self, name: str, *, force: bool = False) -> int:
        """Delete a queue and its tasks (running ones only with `force`); the tasks deleted."""
        return await self.send(calls.obliterate_queue(name, force=force))

    # ---- producing ----

    async def put(self, queue: str, data: Any = None, **options: Unpack[PutOptions]) -> TaskInfo:
        """Put a task in callback mode: answered at once with the stored task."""
        return await self.send(calls.put(queue, data, **options))

    async def run(self, queue: str, data: Any = None, **options: Unpack[PutOptions]) -> TaskResult:
        """Put a task and wait for a worker's result (`timeout_s`, default 300 s).

        Returns the result's status code and body; raises WaitTimeout if no worker finished
        in time (the task is cancelled), TaskFailed if the task failed.
        """
        try:
            return await self.send(calls.run(queue, data, **options))
        except calls.ResultOrError as ambiguous:
            try:
                task: TaskInfo | None = await self.get_task(ambiguous.task_id)
            except NotFound:
                task = None
            return ambiguous.resolve(task)

    async def stream(
        self, queue: str, data: Any = None, **options: Unpack[PutOptions]
    ) -> AsyncIterator[StreamEvent]:
        """Put a task and yield the events its worker emits, ending with `result`.

        `end_of(message)` reads the final message. Leaving the loop early hangs up, which
        cancels the task.
        """
        async for message in self._events(calls.stream(queue, data, **options)):
            yield message

    async def follow(self, task_id: str, *, after: int = 0) -> AsyncIterator[StreamEvent]:
        """Yield a task's events above `after` as they come, ending with `result`."""
        async for message in self._events(calls.follow(task_id, after=after)):
            yield message

    async def _events(self, call: calls.Call[None]) -> AsyncIterator[StreamEvent]:
        timeout = aiohttp.ClientTimeout(total=call.timeout_s)
        async with self._http().request(
            call.method,
            self.server + call.path,
            data=_data(call),
            params=call.params,
            timeout=timeout,
        ) as response:
            if response.status != 200:
                calls.answer(call, response.status, await response.read())
            reader = StreamReader(call.what)
            pending = b""
            # by chunks, not readline: aiohttp refuses lines over 64 KiB, and data can be more
            async for chunk in response.content.iter_any():
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    message = reader.feed(line.decode())
                    if message is not None:
                        yield message
                        if message.event == RESULT:
                            return

    async def put_many(self, tasks: Sequence[TaskSpec]) -> list[str]:
        """Put many callback-mode tasks at once, all or none; their ids in order."""
        return await self.send(calls.put_many(tasks))

    async def get_task(self, task_id: str) -> TaskInfo:
        """One task."""
        return await self.send(calls.get_task(task_id))

    async def list_tasks(
        self, queue: str, status: str | None = None, *, after: str | None = None, limit: int = 100
    ) -> TaskList:
        """A page of a queue's tasks, optionally in one status."""
        return await self.send(calls.list_tasks(queue, status, after=after, limit=limit))

    async def cancel(self, task_id: str) -> TaskInfo:
        """Cancel a task (a running one when its worker next reports)."""
        return await self.send(calls.cancel(task_id))

    async def requeue(self, task_id: str) -> TaskInfo:
        """Send a failed (dead-lettered) task back to its queue."""
        return await self.send(calls.requeue(task_id))

    # ---- working ----

    async def take(
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
        return await self.send(call)

    async def complete(
        self, task_id: str, lease_id: str, result: TaskResult | None = None
    ) -> TaskInfo:
        """Record a leased task's result (default: status 200, no body)."""
        return await self.send(calls.complete(task_id, lease_id, result or TaskResult()))

    async def complete_many(self, items: Sequence[Completion]) -> list[CompleteOutcome]:
        """Record many results in one request; one outcome per item, in order."""
        return await self.send(calls.complete_many(items))

    async def fail(
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
        return await self.send(
            calls.fail(task_id, lease_id, error, retry=retry, retry_after_s=retry_after_s)
        )

    async def heartbeat(
        self, task_id: str, lease_id: str, extend_s: float | None = None
    ) -> HeartbeatInfo:
        """Extend a lease; the answer says whether the task was cancelled meanwhile."""
        return await self.send(calls.heartbeat(task_id, lease_id, extend_s))

    async def emit(self, task_id: str, lease_id: str, events: Sequence[TaskEvent]) -> int:
        """Append events to a running task; the id of the last one."""
        return await self.send(calls.emit(task_id, lease_id, events))


def _data(call: calls.Call[T]) -> bytes | AsyncIterable[bytes] | None:
    """What aiohttp sends: the body, or a multipart body's chunks as they are read."""
    return call.body.async_chunks() if isinstance(call.body, Multipart) else call.body
