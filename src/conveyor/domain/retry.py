"""Retry policy: how many attempts a task gets and how long it waits between them."""

from __future__ import annotations

import random
from enum import StrEnum

import msgspec

from conveyor.errors import InvalidInput

MAX_BACKOFF_S = 7 * 86_400.0


class BackoffKind(StrEnum):
    FIXED = "fixed"
    EXPONENTIAL = "exponential"


class Backoff(msgspec.Struct, frozen=True, kw_only=True):
    """Delay before retry n: `base_s` (fixed) or `base_s * 2**(n-1)` capped at `cap_s`.

    `jitter` in [0, 1] takes up to that fraction off each delay at random, so that tasks
    failing together do not retry together.
    """

    kind: BackoffKind = BackoffKind.EXPONENTIAL
    base_s: float = 1.0
    cap_s: float = 300.0
    jitter: float = 0.1

    def validated(self) -> Backoff:
        """Return self, or raise InvalidInput naming the field to fix."""
        if not 0 <= self.base_s <= MAX_BACKOFF_S:
            raise InvalidInput(
                f"backoff base_s must be between 0 and {MAX_BACKOFF_S:g} seconds, got {self.base_s}",
                param="backoff.base_s",
            )
        if not self.base_s <= self.cap_s <= MAX_BACKOFF_S:
            raise InvalidInput(
                f"backoff cap_s must be between base_s ({self.base_s:g}) and {MAX_BACKOFF_S:g}"
                f" seconds, got {self.cap_s}",
                param="backoff.cap_s",
            )
        if not 0 <= self.jitter <= 1:
            raise InvalidInput(
                f"backoff jitter must be between 0 and 1, got {self.jitter}",
                param="backoff.jitter",
            )
        return self

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the retry that follows failed attempt number `attempt`."""
        if self.kind is BackoffKind.FIXED:
            delay = self.base_s
        else:
            delay = min(self.cap_s, self.base_s * 2.0 ** min(max(attempt - 1, 0), 62))
        if self.jitter:
            delay *= 1.0 - self.jitter * (rng or random).random()
        return delay
