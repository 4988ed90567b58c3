"""Group commit: calls that arrive while others are in flight go out together.

A put or a complete is one statement, and with `synchronous_commit` on each statement
waits for its commit to reach the disk; many callers at once would each wait for a flush
of their own. A `Group` sends a call at once when fewer than `in_flight` are out, and
otherwise holds it until one comes back, then sends everything held as one statement: one
round trip and one flush for the lot. A lone caller waits for nothing.

`run` answers each item of a group, or None for an item that must run on its own (with
`alone`: a group must not fail for one item, such as a missing queue or an existing id).
An error it raises is every item's.

A group is bounded: items are added while their `weigh`ts (tasks, bytes) stay within
`max_weight`, so that calls each fine alone never add up to a statement PostgreSQL
refuses (a bind message is at most 1 GB); the rest wait for the next flush. An item
heavier than the bound alone is sent alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741 - an item, as R is a result
R = TypeVar("R")


class Group(Generic[I, R]):
    """Concurrent calls sent together (see the module doc); owns its flushes' tasks."""

    def __init__(
        self,
        run: Callable[[Sequence[I]], Awaitable[Sequence[R | None]]],
        alone: Callable[[I], Awaitable[R]],
        in_flight: int,
        *,
        weigh: Callable[[I], int] = lambda _: 1,
        max_weight: int = 1_000,
    ) -> None:
        self._run = run
        self._alone = alone
        self._limit = in_flight
        self._weigh = weigh
        self._max_weight = max_weight
        self._held: list[tuple[I, asyncio.Future[R]]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def call(self, item: I) -> R:
        """`item`'s result, sent alone or with the calls held meanwhile."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._held.append((item, future))
        if len(self._flushes) < self._limit:
            self._flush()
        return await future

    async def drain(self) -> None:
        """Wait for every call sent or held to be answered."""
        while self._flushes:
            await asyncio.wait(set(self._flushes))

    def _flush(self) -> None:
        while self._held and len(self._flushes) < self._limit:
            count, weight = 0, 0
            for item, _ in self._held:
                weight += self._weigh(item)
                if count and weight > self._max_weight:
                    break
                count += 1
            held, self._held = self._held[:count], self._held[count:]
            task = asyncio.create_task(self._send(held), name="conveyor-postgres-group")
            self._flushes.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        self._flush()

    async def _send(self, held: list[tuple[I, asyncio.Future[R]]]) -> None:
        try:
            alone = held
            if len(held) > 1:
                results = await self._run([item for item, _ in held])
                alone = []
                for (item, future), result in zip(held, results, strict=True):
                    if result is None:
                        alone.append((item, future))
                    elif not future.done():
                        future.set_result(result)
            await asyncio.gather(*(self._one(item, future) for item, future in alone))
        except Exception as exc:  # every caller hears it; the task itself ends quietly
            for _, future in held:
                if not future.done():
                    future.set_exception(exc)
        except BaseException:
            for _, future in held:
                future.cancel()
            raise

    async def _one(self, item: I, future: asyncio.Future[R]) -> None:
        try:
            result = await self._alone(item)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(result)
