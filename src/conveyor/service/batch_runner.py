"""The loop that moves batches on: every active batch, about every second and when poked.

Each batch advances in a task of its own, so one large batch being validated or finalized
does not hold back the progress of the others; a batch already advancing in this process
is not started twice. Many servers may run this loop over one store: every step is a
compare-and-set on the batch's record (see service/batches.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from types import TracebackType

from conveyor.engines.engine import Engine, Record
from conveyor.errors import Conflict
from conveyor.service.batches import KIND, BatchService

log = logging.getLogger(__name__)

INTERVAL_S = 1.0
PAGE = 500


class BatchRunner:
    """Owns the batch loop: `async with BatchRunner(engine, services):` starts and stops it."""

    def __init__(
        self,
        engine: Engine,
        services: Callable[[str], BatchService],
        interval_s: float = INTERVAL_S,
    ) -> None:
        self._engine = engine
        self._services = services
        self._interval_s = interval_s
        self._poked = asyncio.Event()
        self._stop = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._advancing: dict[str, asyncio.Task[None]] = {}

    def wake(self) -> None:
        """Look at the batches now (a batch was created or cancelled)."""
        self._poked.set()

    async def __aenter__(self) -> BatchRunner:
        self._stop.clear()
        self._loop_task = asyncio.create_task(self._run(), name="conveyor-batches")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._poked.set()
        if self._loop_task is not None:
            await self._loop_task
            self._loop_task = None
        # a step cut short is repeated by the next start: every step is safe to repeat
        advancing = list(self._advancing.values())
        for task in advancing:
            task.cancel()
        await asyncio.gather(*advancing, return_exceptions=True)

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("looking for batches to advance failed; trying again")
            self._poked.clear()
            delay_s = self._interval_s * random.uniform(0.8, 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), delay_s)

    async def run_once(self) -> None:
        """Start advancing every active batch not already advancing here."""
        after: str | None = None
        while True:
            records = await self._engine.list_active(KIND, PAGE, after=after)
            for record in records:
                if record.id not in self._advancing:
                    self._start(record)
            if len(records) < PAGE:
                return
            after = records[-1].id

    def _start(self, record: Record) -> None:
        task = asyncio.create_task(self._advance(record), name=f"conveyor-batch-{record.id}")
        self._advancing[record.id] = task
        task.add_done_callback(lambda _: self._advancing.pop(record.id, None))

    async def _advance(self, record: Record) -> None:
        try:
            await self._services(record.project).advance(record)
        except Conflict:
            # another step (a cancel, another server) moved the batch on: read it again
            log.debug("batch %s changed under a step; looking again", record.id)
            self.wake()
        except Exception:
            log.exception("batch %s: a step failed; it is tried again", record.id)
