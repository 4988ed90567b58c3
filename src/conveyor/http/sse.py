"""Server-Sent Events: a task's events as `id`/`event`/`data` frames, then its end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse

from conveyor.domain.events import TaskEvent
from conveyor.domain.tasks import Task
from conveyor.errors import ConveyorError
from conveyor.http.errors import status_of
from conveyor.http.wire import encoder

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def frame(event: str, data: Any, event_id: int | None = None) -> bytes:
    """One SSE message; `data` is JSON on one line, so it needs no escaping."""
    head = b"" if event_id is None else b"id: %d\n" % event_id
    return head + b"event: " + event.encode() + b"\ndata: " + encoder.encode(data) + b"\n\n"


def end_of(task: Task) -> bytes:
    """The last message: the task's result, or why it has none."""
    body = {
        "task_id": task.task_id,
        "status": task.status,
        "result": task.result,
        "error": task.error,
    }
    return frame("result", body)


async def frames(items: AsyncIterator[TaskEvent | Task]) -> AsyncIterator[bytes]:
    """SSE frames for a followed task; an error mid-stream becomes an `error` frame."""
    try:
        async for item in items:
            if isinstance(item, Task):
                yield end_of(item)
            else:
                yield frame(item.event, item.data, item.event_id)
    except ConveyorError as exc:
        status, kind = status_of(exc)
        error = {"message": exc.message, "type": kind, "param": exc.param, "code": exc.code}
        yield frame("error", {"error": error, "status_code": status})


def response(
    items: AsyncIterator[TaskEvent | Task], headers: dict[str, str] | None = None
) -> StreamingResponse:
    """A streaming SSE response; when the client hangs up, `items` is closed."""
    return StreamingResponse(
        frames(items), media_type="text/event-stream", headers={**HEADERS, **(headers or {})}
    )
