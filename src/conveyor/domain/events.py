"""Task events: what a worker reports while a task runs (progress, stream chunks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from conveyor.domain.tasks import encode_json
from conveyor.errors import InvalidInput

MAX_EVENTS_PER_APPEND = 1_000
MAX_EVENT_NAME = 64


class EventSpec(msgspec.Struct, frozen=True, kw_only=True):
    """An event as a worker sends it; `data` is any JSON."""

    event: str = "message"
    data: Any = None


class NewEvent(msgspec.Struct, frozen=True):
    """A checked event, ready to store."""

    event: str
    data_json: bytes


class TaskEvent(msgspec.Struct, frozen=True):
    """A stored event; `event_id` counts from 1 within its task."""

    event_id: int
    event: str
    data: Any
    created_at: float


def build_events(specs: Sequence[EventSpec]) -> list[NewEvent]:
    """Check a worker's events; raise InvalidInput naming the bad one."""
    if not 1 <= len(specs) <= MAX_EVENTS_PER_APPEND:
        raise InvalidInput(
            f"send 1 to {MAX_EVENTS_PER_APPEND} events at a time, got {len(specs)}",
            param="events",
        )
    built: list[NewEvent] = []
    for index, spec in enumerate(specs):
        name = spec.event
        # SSE frames end at a newline: a name with one would forge a frame
        if (
            not isinstance(name, str)
            or not 1 <= len(name) <= MAX_EVENT_NAME
            or not name.isprintable()
        ):
            raise InvalidInput(
                f"events[{index}].event must be 1-{MAX_EVENT_NAME} printable characters,"
                f" got {name!r:.80}",
                param=f"events[{index}].event",
            )
        built.append(NewEvent(name, encode_json(spec.data, f"events[{index}].data")))
    return built
