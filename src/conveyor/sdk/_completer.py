"""Completions, batched: what finished in the same moment goes to the server in one request.

Handlers hand their results to the `Completer` and wait for the outcome. One sender loop
takes whatever has piled up, sends a lone result to `POST /v1/tasks/{id}/complete` and two
or more to `POST /v1/tasks/complete`, and while that request is out the next batch
gathers. An idle worker pays no delay; a busy one sends ever fewer, larger requests.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from types import TracebackType

from conveyor.domain.tasks import TaskResult
from conveyor.engines.engine import Completion
from conveyor.errors import ConveyorError
from conveyor.sdk._async_client import AsyncClient
from conveyor.sdk._errors import BY_STATUS
from conveyor.sdk._models import CompleteOutcome, ErrorInfo

log = logging.getLogger("conveyor.worker")

MAX_BATCH = 1_000


@dataclass(slots=True)
class CompletionStats:
    """How completions travelled: alone, or batched with others."""

    requests: int = 0  # complete requests of either kind
    single: int = 0  # results sent alone
    batches: int = 0  # bulk requests
    batched: int = 0  # results sent in bulk requests


class Completer:
    """Sends results for the worker; an async context manager that owns its sender loop.

    On exit it sends what is still pending, then stops.
    """

    def __init__(self, client: AsyncClient, *, max_batch: int = MAX_BATCH) -> None:
        self._client = client
        self._max_batch = max_batch
        self._pending: list[tuple[Completion, asyncio.Future[CompleteOutcome]]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._loop_task: asyncio.Task[None] | None = None
        self.stats = CompletionStats()

    async def __aenter__(self) -> Completer:
        self._loop_task = asyncio.create_task(self._run(), name="conveyor-completer")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._closing = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task

    def submit(
        self, task_id: str, lease_id: str, result: TaskResult
    ) -> asyncio.Future[CompleteOutcome]:
        """Queue a result; the future gets the server's outcome for it."""
        if self._closing:
            raise ConveyorError("the worker is closed; it sends no more results")
        future: asyncio.Future[CompleteOutcome] = asyncio.get_running_loop().create_future()
        self._pending.append((Completion(task_id, lease_id, result), future))
        self._wake.set()
        return future

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            # results finishing in this same turn of the loop join the batch
            await asyncio.sleep(0)
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                await self._send(batch)
            except Exception as exc:  # the server is unreachable: the leases will expire
                log.warning("could not send %d result(s): %r", len(batch), exc)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)

    async def _send(self, batch: list[tuple[Completion, asyncio.Future[CompleteOutcome]]]) -> None:
        self.stats.requests += 1
        if len(batch) == 1:
            ((item, future),) = batch
            self.stats.single += 1
            outcome = await self._one(item)
            if not future.done():
                future.set_result(outcome)
            return
        self.stats.batches += 1
        self.stats.batched += len(batch)
        outcomes = await self._client.complete_many([item for item, _ in batch])
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

    async def _one(self, item: Completion) -> CompleteOutcome:
        try:
            task = await self._client.complete(item.task_id, item.lease_id, item.result)
        except ConveyorError as exc:
            status = next((s for s, cls in BY_STATUS.items() if isinstance(exc, cls)), 500)
            error = ErrorInfo(message=exc.message, code=exc.code)
            return CompleteOutcome(task_id=item.task_id, status_code=status, error=error)
        return CompleteOutcome(task_id=item.task_id, status_code=200, status=task.status)
