"""What a handler can reach while it runs: its task, `progress()` and `emit()`.

The worker sets the current task in a context variable before it calls the handler, so
these work from anywhere in the handler's call stack. From an async handler they return
an awaitable (`await emit("token", "Hello")`); from a sync handler, which runs in a
thread, they block until the server has the event, and what they return needs no await.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError
from conveyor.sdk._errors import Unsupported
from conveyor.sdk._models import LeasedTask, TaskEvent

if TYPE_CHECKING:
    from conveyor.sdk._async_client import AsyncClient


@dataclass(frozen=True, slots=True)
class TaskContext:
    """The task a handler is running, and the means to report on it."""

    task: LeasedTask
    client: AsyncClient
    loop: asyncio.AbstractEventLoop


_current: ContextVar[TaskContext] = ContextVar("conveyor_task")


def enter(context: TaskContext) -> None:
    """Make `context` the current one (in the calling task's own context copy)."""
    _current.set(context)


def _context() -> TaskContext:
    try:
        return _current.get()
    except LookupError:
        raise ConveyorError(
            "progress(), emit() and current_task() work only inside a Worker's handler"
        ) from None


def current_task() -> LeasedTask:
    """The task the calling handler is running."""
    return _context().task


class _Done:
    """An awaitable that is already done: what a sync handler gets back."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, int]:
        return self.value
        yield  # a generator, so that `await` works on it


async def _send(context: TaskContext, events: list[TaskEvent]) -> int:
    task = context.task
    try:
        return await context.client.emit(task.task_id, task.lease_id, events)
    except Unsupported as exc:
        raise Unsupported(
            "this server does not accept task events (progress() and emit() need"
            f" POST /v1/tasks/{{id}}/events); upgrade the server. ({exc.message})"
        ) from exc


def emit(event: str, data: Any = None) -> Awaitable[int]:
    """Append an event to the running task (a stream chunk, a log line); the event's id.

    Raises Unsupported if the server has no events route, LeaseLost if the task is no
    longer this worker's (it was cancelled or its lease expired).
    """
    context = _context()
    coroutine = _send(context, [TaskEvent(event=event, data=data)])
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is context.loop:
        return coroutine
    # a sync handler in a worker thread: run it on the worker's loop and wait here
    return _Done(asyncio.run_coroutine_threadsafe(coroutine, context.loop).result())


def progress(data: Any) -> Awaitable[int]:
    """Report progress (any JSON, such as {"done": 3, "total": 10}) as a `progress` event."""
    return emit("progress", data)
