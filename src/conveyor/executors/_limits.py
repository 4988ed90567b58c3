"""How fast the forwarding worker may call its upstream: an adaptive limit and a rate.

`AdaptiveLimit` is additive-increase / multiplicative-decrease, as in TCP's congestion
avoidance: the number of requests allowed at once starts at the maximum, halves when the
upstream answers 429 (never below 1), and grows by one for every `allowed` answers that
are not 429s or 5xx (one per round of requests). Only a 429 to a request sent since the
last decrease halves it again, so that one burst of 429s (answers to requests sent at the
old level) counts once. The worker reads `allowed` before each take, and requests wait
in `acquire` while as many as allowed are in flight.

Growing by one per round rather than per answer keeps the overshoot past an upstream's
real limit to about one request: per answer, a limit of L would be pushed to 2L by one
round of answers before the next 429 halves it again.

`RateLimit` is a token bucket for requests per minute, shared by all requests.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from conveyor.errors import InvalidInput


class AdaptiveLimit:
    """Requests allowed in flight at once: halves on a 429, grows by one per round of successes."""

    def __init__(self, maximum: int) -> None:
        if maximum < 1:
            raise InvalidInput(f"the limit must be 1 or more, got {maximum}")
        self.maximum = maximum
        self.allowed = maximum
        self.in_flight = 0
        self.decreases = 0  # counts halvings: a request remembers the count it was sent at
        self._growth = 0.0  # successes since the last change, in rounds of `allowed`
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._on_grow: list[Callable[[], None]] = []

    def on_grow(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever `allowed` grows (the worker re-reads its capacity)."""
        self._on_grow.append(callback)

    async def acquire(self) -> int:
        """Wait for a free place; the decrease count to pass back to `release`."""
        if self.in_flight < self.allowed and not self._waiters:
            self.in_flight += 1
            return self.decreases
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted as it was cancelled
                self.in_flight -= 1
                self._wake()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        return self.decreases

    def release(self, ticket: int, *, throttled: bool = False, succeeded: bool = False) -> None:
        """Free a place; a 429 (`throttled`) halves the limit, successes grow it."""
        self.in_flight -= 1
        if throttled:
            if ticket == self.decreases:  # sent at the current level: the level is too high
                self.allowed = max(1, self.allowed // 2)
                self.decreases += 1
                self._growth = 0.0
        elif succeeded and self.allowed < self.maximum:
            self._growth += 1 / self.allowed
            if self._growth >= 1 - 1e-9:
                self._growth = 0.0
                self.allowed += 1
                for callback in self._on_grow:
                    callback()
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.allowed:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)


class RateLimit:
    """At most `per_minute` requests a minute, evenly spaced, in bursts of one second's worth."""

    def __init__(self, per_minute: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute <= 0:
            raise InvalidInput(f"the requests-per-minute limit must be above 0, got {per_minute}")
        self.rate_per_s = per_minute / 60.0
        self.burst = max(1.0, self.rate_per_s)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    def reserve(self) -> float:
        """Take a token, going into debt if there is none; the seconds to wait before using it."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate_per_s

    def refund(self) -> None:
        """Give back a token reserved and not used (its request was cancelled)."""
        self._tokens = min(self.burst, self._tokens + 1)

    async def acquire(self) -> None:
        """Wait until a request may go."""
        delay_s = self.reserve()
        if delay_s <= 0:
            return
        try:
            await asyncio.sleep(delay_s)
        except asyncio.CancelledError:
            self.refund()
            raise
