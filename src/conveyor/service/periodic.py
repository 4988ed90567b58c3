"""A small owned background loop for periodic upkeep (file expiry, and the like)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)


class Periodic:
    """Calls `work` every `interval_s` (less up to 10% jitter) while inside `async with`.

    The first call comes after one interval, not at start-up. A failing call is logged
    and the loop carries on; leaving the block stops the loop at once and awaits it (a call
    in progress is cancelled).
    """

    def __init__(
        self,
        work: Callable[[], Awaitable[Any]],
        interval_s: float,
        *,
        name: str,
        rng: random.Random | None = None,
    ) -> None:
        self._work = work
        self._interval_s = interval_s
        self._name = name
        self._rng = rng or random.Random()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Periodic:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name=self._name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()  # a call in progress is upkeep: the next start does it again
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            delay_s = self._interval_s * (1.0 - 0.1 * self._rng.random())
            try:
                await asyncio.wait_for(self._stop.wait(), delay_s)
                return
            except TimeoutError:
                pass
            try:
                await self._work()
            except Exception:
                log.exception("%s failed; trying again in about %.0f s", self._name, delay_s)
