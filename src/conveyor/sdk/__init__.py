"""The Python SDK: `Client` (blocking), `AsyncClient` and `Worker`.

from conveyor import Client, Worker

with Client() as client:                      # CONVEYOR_URL, CONVEYOR_API_KEY
    client.put("emails", {"to": "a@example.com"})
    file = client.files.upload("requests.jsonl")
    batch = client.batches.create(file.id, "/v1/chat/completions", queue="llm")
    batch = client.batches.wait(batch.id)      # until it ends
    client.files.download(batch.output_file_id, "output.jsonl")

worker = Worker(concurrency=16)

@worker.handler("emails")
async def send(task):
    await progress({"step": "sending"})
    return {"sent": True}                     # completes with status 200

worker.run_sync()                             # until SIGTERM / SIGINT
"""

from conveyor.domain.batches import BatchStatus
from conveyor.sdk._async_client import AsyncClient
from conveyor.sdk._batches import AsyncBatches, Batches
from conveyor.sdk._calls import PutOptions, QueueOptions
from conveyor.sdk._client import Client
from conveyor.sdk._completer import CompletionStats
from conveyor.sdk._context import current_task, emit, progress
from conveyor.sdk._errors import TaskFailed, Unsupported
from conveyor.sdk._files import AsyncFiles, Files
from conveyor.sdk._models import (
    BatchInfo,
    CompleteOutcome,
    ErrorInfo,
    FileInfo,
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
    "AsyncBatches",
    "AsyncClient",
    "AsyncFiles",
    "BatchInfo",
    "BatchStatus",
    "Batches",
    "Client",
    "CompleteOutcome",
    "CompletionStats",
    "ErrorInfo",
    "FileInfo",
    "Files",
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
