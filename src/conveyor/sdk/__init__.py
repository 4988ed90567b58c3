"""The Python SDK: `Client` (blocking), `AsyncClient` and `Worker`.

from conveyor import Client, Worker

with Client() as client:                      # CONVEYOR_URL, CONVEYOR_API_KEY
    client.put("emails", {"to": "a@example.com"})

worker = Worker(concurrency=16)

@worker.handler("emails")
async def send(task):
    await progress({"step": "sending"})
    return {"sent": True}                     # completes with status 200

worker.run_sync()                             # until SIGTERM / SIGINT
"""

from conveyor.sdk._async_client import AsyncClient
from conveyor.sdk._calls import PutOptions, QueueOptions
from conveyor.sdk._client import Client
from conveyor.sdk._completer import CompletionStats
from conveyor.sdk._context import current_task, emit, progress
from conveyor.sdk._errors import TaskFailed, Unsupported
from conveyor.sdk._models import (
    CompleteOutcome,
    ErrorInfo,
    HeartbeatInfo,
    LeasedTask,
    LevelInfo,
    QueueInfo,
    StreamEnd,
    StreamEvent,
    TaskEvent,
    TaskInfo,
    TaskList,
)
from conveyor.sdk._runner import Handler, WorkerStats
from conveyor.sdk._streams import end_of
from conveyor.sdk._worker import Worker

__all__ = [
    "AsyncClient",
    "Client",
    "CompleteOutcome",
    "CompletionStats",
    "ErrorInfo",
    "Handler",
    "HeartbeatInfo",
    "LeasedTask",
    "LevelInfo",
    "PutOptions",
    "QueueInfo",
    "QueueOptions",
    "StreamEnd",
    "StreamEvent",
    "TaskEvent",
    "TaskFailed",
    "TaskInfo",
    "TaskList",
    "Unsupported",
    "Worker",
    "WorkerStats",
    "current_task",
    "emit",
    "end_of",
    "progress",
]
