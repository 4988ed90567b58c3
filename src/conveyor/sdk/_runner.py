"""One task's run inside a worker: its handler call, its heartbeats, its outcome.

The runner owns the handler call it starts: it waits for it in slices of a fraction of
the lease and heartbeats between slices, cancels it if the server says the task was
cancelled or the lease is gone, and on a hard stop cancels it and hands the task back.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import random
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import msgspec

from conveyor.domain.tasks import TaskResult
from conveyor.errors import ConveyorError, LeaseLost
from conveyor.sdk import _context
from conveyor.sdk._async_client import AsyncClient
from conveyor.sdk._completer import Completer, CompletionStats
from conveyor.sdk._models import CompleteOutcome, LeasedTask

log = logging.getLogger("conveyor.worker")

Handler = Callable[[LeasedTask], Any]
"""A function of the task: async (run on the loop) or sync (run in a thread)."""

MAX_ERROR_MESSAGE = 4_000
DEFAULT_LEASE_S = 60.0
GIVE_BACK_TIMEOUT_S = 5.0
_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class WorkerStats:
    """What a worker has done so far."""

    takes: int = 0  # take requests answered
    taken: int = 0  # tasks received
    succeeded: int = 0  # results the server recorded
    failed: int = 0  # handler errors reported
    cancelled: int = 0  # handlers cancelled: the task was cancelled, or a hard stop
    lease_lost: int = 0  # heartbeats or results refused: the lease was no longer ours
    heartbeats: int = 0
    completions: CompletionStats = field(default_factory=CompletionStats)


def is_async(handler: Handler) -> bool:
    """True if calling `handler` gives a coroutine (a coroutine function or such a callable)."""
    if inspect.iscoroutinefunction(handler):
        return True
    return inspect.iscoroutinefunction(type(handler).__call__)


@dataclass(slots=True)
class Runner:
    """What every task run of one worker shares."""

    client: AsyncClient
    completer: Completer
    handlers: Mapping[str, Handler]
    executor: Executor
    loop: asyncio.AbstractEventLoop
    stats: WorkerStats
    lease_s: float | None
    heartbeat_fraction: float

    async def work(self, task: LeasedTask) -> None:
        """Run the task's handler with heartbeats, then report how it ended."""
        job = asyncio.ensure_future(self._call(task))
        try:
            ended = await self._watch(task, job)
        except asyncio.CancelledError:  # a hard stop: hand the task back for a prompt retry
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
            self.stats.cancelled += 1
            await asyncio.shield(self._give_back(task))
            raise
        if not ended:
            return
        try:
            value = job.result()
            result = value if isinstance(value, TaskResult) else TaskResult(body=value)
            # encoded here, so that one body that is not JSON cannot spoil a batch
            body = msgspec.Raw(_encode(result.body))
        except Exception as exc:
            await self._report_failure(task, exc)
            return
        await self._report_success(task, TaskResult(status_code=result.status_code, body=body))

    async def _call(self, task: LeasedTask) -> Any:
        handler = self.handlers.get(task.queue)
        if handler is None:
            raise ConveyorError(f"this worker has no handler for queue {task.queue!r}")
        _context.enter(_context.TaskContext(task, self.client, self.loop))
        if is_async(handler):
            return await handler(task)
        context = contextvars.copy_context()  # so progress() and emit() work in the thread
        return await self.loop.run_in_executor(self.executor, context.run, handler, task)

    async def _watch(self, task: LeasedTask, job: asyncio.Future[Any]) -> bool:
        """Heartbeat until `job` ends; False if the task was taken away meanwhile."""
        interval_s = self._lease_of(task) * self.heartbeat_fraction
        while True:
            # jittered (never later), so that tasks taken together do not beat together
            timeout_s = interval_s * random.uniform(0.8, 1.0)
            done, _ = await asyncio.wait({job}, timeout=timeout_s)
            if done:
                return True
            try:
                beat = await self.client.heartbeat(task.task_id, task.lease_id)
            except LeaseLost as exc:
                self.stats.lease_lost += 1
                log.warning("task %s: lease lost (%s); abandoning it", task.task_id, exc.message)
            except Exception as exc:
                log.warning("task %s: heartbeat failed: %r", task.task_id, exc)
                continue
            else:
                self.stats.heartbeats += 1
                if not beat.cancelled:
                    continue
                self.stats.cancelled += 1
                log.info("task %s was cancelled; stopping its handler", task.task_id)
            # a sync handler's thread runs on: Python cannot stop a thread
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
            return False

    def _lease_of(self, task: LeasedTask) -> float:
        if self.lease_s is not None:
            return self.lease_s
        if task.lease_expires_at is not None and task.started_at is not None:
            lease_s = task.lease_expires_at - task.started_at  # both by the server's clock
            if lease_s > 0:
                return lease_s
        return DEFAULT_LEASE_S

    async def _report_success(self, task: LeasedTask, result: TaskResult) -> None:
        # Hand the result over and free the slot at once: the next take overlaps this
        # completion's round trip instead of waiting for it (the completer batches them,
        # and sends what is pending before the worker stops).
        try:
            future = self.completer.submit(task.task_id, task.lease_id, result)
        except Exception as exc:
            log.warning("task %s: result not delivered: %r", task.task_id, exc)
            return
        future.add_done_callback(lambda done: self._record(task, done))

    def _record(self, task: LeasedTask, done: asyncio.Future[CompleteOutcome]) -> None:
        if done.cancelled():
            return
        exc = done.exception()
        if exc is not None:
            log.warning("task %s: result not delivered: %r", task.task_id, exc)
            return
        outcome = done.result()
        if outcome.ok:
            self.stats.succeeded += 1
        elif outcome.status_code == 409:
            self.stats.lease_lost += 1
            log.warning("task %s: result refused: %s", task.task_id, outcome.error)
        else:
            log.error("task %s: result refused: %s", task.task_id, outcome.error)

    async def _report_failure(self, task: LeasedTask, exc: Exception) -> None:
        self.stats.failed += 1
        message = (str(exc) or repr(exc))[:MAX_ERROR_MESSAGE]
        log.info("task %s failed: %s: %s", task.task_id, type(exc).__name__, message)
        try:
            await self.client.fail(
                task.task_id, task.lease_id, message, code=type(exc).__name__, retry=True
            )
        except LeaseLost:
            self.stats.lease_lost += 1
        except Exception as report_error:
            log.warning("task %s: failure not delivered: %r", task.task_id, report_error)

    async def _give_back(self, task: LeasedTask) -> None:
        """Fail a task cut short by a hard stop, so it retries now, not at lease expiry."""
        try:
            await asyncio.wait_for(
                self.client.fail(
                    task.task_id,
                    task.lease_id,
                    "the worker stopped before the task finished",
                    code="worker_stopped",
                    retry=True,
                    retry_after_s=0,
                ),
                timeout=GIVE_BACK_TIMEOUT_S,
            )
        except Exception as exc:  # then its lease expires and it retries after all
            log.warning("task %s: could not hand it back: %r", task.task_id, exc)
