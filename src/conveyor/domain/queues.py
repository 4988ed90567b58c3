"""Queues: names, levels, their defaults, and how a worker's list of queues is read."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import msgspec

from conveyor.domain.retry import Backoff
from conveyor.errors import InvalidInput

QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
DEFAULT_MAX_LEVEL = 9
MAX_LEVEL_LIMIT = 99
DEFAULT_LEASE_S = 60.0
MAX_LEASE_S = 86_400.0
DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPTS_LIMIT = 1_000
DEFAULT_RETENTION_S = 7 * 86_400.0
MAX_RETENTION_S = 366 * 86_400.0


def validate_queue_name(name: object, param: str = "queue") -> str:
    """Return `name` if it is a valid queue name, else raise InvalidInput."""
    if not isinstance(name, str) or not QUEUE_NAME.fullmatch(name):
        raise InvalidInput(
            f"queue name must be 1-64 characters of letters, digits, '_' or '-', got {name!r}",
            param=param,
        )
    return name


def validate_level(level: object, max_level: int, param: str = "level") -> int:
    """Return `level` if it is an int in 0..max_level, else raise InvalidInput."""
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= max_level:
        raise InvalidInput(
            f"level must be an integer from 0 to {max_level}, got {level!r}", param=param
        )
    return level


def validate_seconds(
    value: object, *, param: str, low: float, high: float, low_inclusive: bool = False
) -> float:
    """Return `value` as float seconds if finite and in range, else raise InvalidInput."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{param} must be a number of seconds, got {value!r}", param=param)
    seconds = float(value)
    too_low = seconds < low if low_inclusive else seconds <= low
    if too_low or seconds > high:
        bound = "at least" if low_inclusive else "more than"
        raise InvalidInput(
            f"{param} must be {bound} {low:g} and at most {high:g} seconds, got {value!r}",
            param=param,
        )
    return seconds


def validate_max_attempts(value: object, param: str = "max_attempts") -> int:
    """Return `value` if it is an int in 1..MAX_ATTEMPTS_LIMIT, else raise InvalidInput."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 1 <= value <= MAX_ATTEMPTS_LIMIT
    ):
        raise InvalidInput(
            f"{param} must be an integer from 1 to {MAX_ATTEMPTS_LIMIT}, got {value!r}",
            param=param,
        )
    return value


class QueueConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A queue and the defaults its tasks inherit."""

    name: str
    max_level: int = DEFAULT_MAX_LEVEL
    lease_s: float = DEFAULT_LEASE_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff: Backoff = Backoff()
    retention_s: float = DEFAULT_RETENTION_S
    paused: bool = False
    created_at: float = 0.0

    def validated(self) -> QueueConfig:
        """Return self, or raise InvalidInput naming the field to fix."""
        validate_queue_name(self.name, "name")
        if (
            isinstance(self.max_level, bool)
            or not isinstance(self.max_level, int)
            or not 0 <= self.max_level <= MAX_LEVEL_LIMIT
        ):
            raise InvalidInput(
                f"max_level must be an integer from 0 to {MAX_LEVEL_LIMIT}, got {self.max_level!r}",
                param="max_level",
            )
        validate_seconds(self.lease_s, param="lease_s", low=0, high=MAX_LEASE_S)
        validate_max_attempts(self.max_attempts)
        self.backoff.validated()
        validate_seconds(self.retention_s, param="retention_s", low=0, high=MAX_RETENTION_S)
        return self


class QueueUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """A change to a queue's defaults or paused flag; None leaves a field as it is."""

    paused: bool | None = None
    max_level: int | None = None
    lease_s: float | None = None
    max_attempts: int | None = None
    backoff: Backoff | None = None
    retention_s: float | None = None

    def apply(self, config: QueueConfig) -> QueueConfig:
        """The config with this update applied, validated."""
        changes = {
            field: value
            for field in self.__struct_fields__
            if (value := getattr(self, field)) is not None
        }
        return msgspec.structs.replace(config, **changes).validated()


class Lane(NamedTuple):
    """One level of one queue: where tasks wait, addressed as `name:level`."""

    queue: str
    level: int

    def __str__(self) -> str:
        return f"{self.queue}:{self.level}"


class Source(NamedTuple):
    """One entry of a worker's queue list: a queue's levels, most urgent first."""

    queue: str
    levels: tuple[int, ...]

    def lanes(self) -> tuple[Lane, ...]:
        return tuple(Lane(self.queue, level) for level in self.levels)


def parse_address(text: object) -> tuple[str, int | None]:
    """Split `name:level` or a bare `name` (all levels) into its parts."""
    if not isinstance(text, str):
        raise InvalidInput(f"a queue address must be a string, got {text!r}", param="queues")
    name, sep, level_text = text.partition(":")
    validate_queue_name(name, "queues")
    if not sep:
        return name, None
    # isdigit alone admits '²' and other digits int() refuses or reads differently
    if not (level_text.isascii() and level_text.isdigit()):
        raise InvalidInput(
            f"queue address {text!r:.80} must be 'name' or 'name:level' with a level of"
            " digits 0-9, as in 'mail:1'",
            param="queues",
        )
    if len(level_text) > 9:  # int() of thousands of digits raises; no level is that long
        raise InvalidInput(
            f"queue address {text!r:.80} has a level above {MAX_LEVEL_LIMIT}", param="queues"
        )
    return name, int(level_text)


def resolve_sources(
    addresses: Sequence[str], max_levels: Mapping[str, int], default_max_level: int
) -> list[Source]:
    """Read a worker's queue list: each address becomes a Source; repeated lanes are dropped.

    A queue not in `max_levels` (not registered yet) is read with `default_max_level`.
    """
    if not addresses:
        raise InvalidInput("name at least one queue to take from", param="queues")
    seen: set[Lane] = set()
    sources: list[Source] = []
    for address in addresses:
        name, level = parse_address(address)
        max_level = max_levels.get(name, default_max_level)
        if level is None:
            levels: Iterable[int] = range(max_level + 1)
        else:
            levels = (validate_level(level, max_level, "queues"),)
        fresh = tuple(lv for lv in levels if Lane(name, lv) not in seen)
        seen.update(Lane(name, lv) for lv in fresh)
        if fresh:
            sources.append(Source(name, fresh))
    return sources
