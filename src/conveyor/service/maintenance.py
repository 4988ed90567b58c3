"""The sweeper: runs an engine's maintenance when something falls due, and at least every second."""

from __future__ import annotations

import asyncio
import logging
import random
from types import TracebackType

from conveyor.domain.clock import Clock, system_clock
from conveyor.engines.engine import Engine, SweepReport
from conveyor.service._waiting import pause

log = logging.getLogger(__name__)

MAX_INTERVAL_S = 1.0


class Sweeper:
    """Owns the maintenance loop: `async with Sweeper(engine):` starts it and stops it.

    Sleeps until the engine's next due time (a delay, a backoff, a lease expiry, a deadline)
    or until the engine reports an earlier one, capped at `max_interval_s` with a little
    jitter so that many servers over one store do not sweep in step.
    """

    def __init__(
        self,
        engine: Engine,
        max_interval_s: float = MAX_INTERVAL_S,
        clock: Clock = system_clock,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._max_interval_s = max_interval_s
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_report: SweepReport | None = None

    async def __aenter__(self) -> Sweeper:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="conveyor-sweeper")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            delay_s = self._max_interval_s
            try:
                report = await self._engine.sweep()
                self.last_report = report
                if report.next_due_at is not None:
                    delay_s = min(delay_s, max(0.0, report.next_due_at - self._clock()))
            except Exception:
                log.exception("sweep failed; retrying in %.1fs", delay_s)
            delay_s *= 1.0 - 0.1 * random.random()
            await pause(self._stop, self._engine.wait_for_due(delay_s), delay_s)
