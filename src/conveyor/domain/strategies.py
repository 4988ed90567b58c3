"""Take strategies: which queued tasks a take hands out, decided over a `LaneSource`.

Every in-process engine answers the same few questions about its lanes (oldest queued
tasks, groups with queued tasks, whether a queue has a running task) and this module turns
the answers into a choice, so the strategies are written once. The engine calls `select`
inside its atomic section and then claims what it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import NamedTuple, Protocol

from conveyor.domain.queues import Lane, Source
from conveyor.errors import InvalidInput


class Strategy(StrEnum):
    FIFO = "fifo"
    ACTIVE_PASSIVE = "active_passive"
    ROUND_ROBIN = "round_robin"
    SEQUENTIAL = "sequential"
    FAIR = "fair"


def parse_strategy(value: object) -> Strategy:
    """Return the Strategy named by `value`, else raise InvalidInput listing the choices."""
    try:
        return Strategy(str(value))
    except ValueError:
        raise InvalidInput(
            f"strategy must be one of {', '.join(Strategy)}, got {value!r}", param="strategy"
        ) from None


class Candidate(NamedTuple):
    """A queued task as a strategy sees it. `seq` orders tasks by when they were put."""

    seq: int
    task_id: str
    lane: Lane
    group: str


class LaneSource(Protocol):
    """What a strategy may ask of the engine's stored state, inside one atomic section."""

    def has_queued(self, lane: Lane) -> bool:
        """True if `lane` has at least one queued task."""
        ...

    def oldest(self, lane: Lane, limit: int, group: str | None = None) -> list[Candidate]:
        """Up to `limit` queued tasks of `lane` (of `group` only, if given), oldest first."""
        ...

    def next_group(self, lane: Lane, after: str | None) -> str | None:
        """The smallest group above `after` (any, if None) with a queued task in `lane`."""
        ...

    def has_running(self, queue: str) -> bool:
        """True if `queue` has a running task at any level."""
        ...


MAX_ROTATIONS = 10_000


class Rotation:
    """Where round_robin and fair left off, kept by the engine between takes.

    Bounded: past MAX_ROTATIONS remembered lists or lanes it starts afresh, which costs at
    most one out-of-turn pick per list.
    """

    def __init__(self) -> None:
        self.next_source: dict[tuple[Source, ...], int] = {}
        self.last_group: dict[Lane, str] = {}

    def trim(self) -> None:
        """Forget everything once either table grows past its bound."""
        if len(self.next_source) > MAX_ROTATIONS:
            self.next_source.clear()
        if len(self.last_group) > MAX_ROTATIONS:
            self.last_group.clear()


class _Buffers:
    """Reads each lane (or lane and group) at most once per take and hands out its tasks."""

    def __init__(self, source: LaneSource, size: int) -> None:
        self._source = source
        self._size = size
        self._buffers: dict[tuple[Lane, str | None], list[Candidate]] = {}
        self._positions: dict[tuple[Lane, str | None], int] = {}
        self._lanes: dict[Source, tuple[Lane, ...]] = {}

    def peek(self, lane: Lane, group: str | None = None) -> Candidate | None:
        key = (lane, group)
        buffer = self._buffers.get(key)
        if buffer is None:
            has = self._source.has_queued(lane) if group is None else True
            buffer = self._source.oldest(lane, self._size, group) if has else []
            self._buffers[key] = buffer
            self._positions[key] = 0
        position = self._positions[key]
        return buffer[position] if position < len(buffer) else None

    def pop(self, lane: Lane, group: str | None = None) -> Candidate:
        candidate = self.peek(lane, group)
        assert candidate is not None
        self._positions[(lane, group)] += 1
        return candidate

    def pop_many(self, lane: Lane, limit: int) -> list[Candidate]:
        """Up to `limit` of the lane's next tasks, at once."""
        if self.peek(lane) is None:
            return []
        key = (lane, None)
        position = self._positions[key]
        taken = self._buffers[key][position : position + limit]
        self._positions[key] = position + len(taken)
        return taken

    def lanes(self, source: Source) -> tuple[Lane, ...]:
        lanes = self._lanes.get(source)
        if lanes is None:
            lanes = self._lanes[source] = source.lanes()
        return lanes

    def head(self, source: Source) -> Candidate | None:
        """The next task of a source: the oldest of its most urgent non-empty level."""
        for lane in self.lanes(source):
            candidate = self.peek(lane)
            if candidate is not None:
                return candidate
        return None


def select(
    strategy: Strategy,
    sources: Sequence[Source],
    size: int,
    source: LaneSource,
    rotation: Rotation,
) -> list[Candidate]:
    """Choose up to `size` queued tasks from `sources` as `strategy` defines."""
    if size <= 0 or not sources:
        return []
    rotation.trim()
    buffers = _Buffers(source, size)
    if strategy is Strategy.FIFO:
        return _fifo(sources, size, buffers)
    if strategy is Strategy.ACTIVE_PASSIVE:
        return _active_passive(sources, size, buffers)
    if strategy is Strategy.ROUND_ROBIN:
        return _round_robin(sources, size, buffers, rotation)
    if strategy is Strategy.SEQUENTIAL:
        return _sequential(sources, size, buffers, source)
    return _fair(sources, size, source, rotation)


def in_list_order(strategy: Strategy, sources: Sequence[Source]) -> bool:
    """True when `strategy` chooses from `sources` as active_passive does: their lanes in
    list order, oldest first within a lane, until the take is full.

    fifo and round_robin do so over one source (its levels, most urgent first), so an
    engine may answer all three with one ordered read instead of asking `select`.
    """
    if strategy is Strategy.ACTIVE_PASSIVE:
        return True
    return len(sources) == 1 and strategy in (Strategy.FIFO, Strategy.ROUND_ROBIN)


def _fifo(sources: Sequence[Source], size: int, buffers: _Buffers) -> list[Candidate]:
    """Oldest first across the listed sources; each source offers its most urgent level."""
    if len(sources) == 1:  # one source: its levels in order, which active_passive does in slices
        return _active_passive(sources, size, buffers)
    chosen: list[Candidate] = []
    while len(chosen) < size:
        heads = [head for s in sources if (head := buffers.head(s)) is not None]
        if not heads:
            break
        oldest = min(heads)
        chosen.append(buffers.pop(oldest.lane))
    return chosen


def _active_passive(sources: Sequence[Source], size: int, buffers: _Buffers) -> list[Candidate]:
    """Strictly in list order: the first source until it is empty, then the next."""
    chosen: list[Candidate] = []
    for s in sources:
        for lane in buffers.lanes(s):
            chosen.extend(buffers.pop_many(lane, size - len(chosen)))
            if len(chosen) == size:
                return chosen
    return chosen


def _round_robin(
    sources: Sequence[Source], size: int, buffers: _Buffers, rotation: Rotation
) -> list[Candidate]:
    """One from each source in turn, continuing where the previous take stopped."""
    key = tuple(sources)
    start = rotation.next_source.get(key, 0) % len(sources)
    chosen: list[Candidate] = []
    index = start
    idle = 0  # sources in a row that had nothing
    while len(chosen) < size and idle < len(sources):
        head = buffers.head(sources[index])
        if head is None:
            idle += 1
        else:
            idle = 0
            chosen.append(buffers.pop(head.lane))
            rotation.next_source[key] = (index + 1) % len(sources)
        index = (index + 1) % len(sources)
    return chosen


def _sequential(
    sources: Sequence[Source], size: int, buffers: _Buffers, source: LaneSource
) -> list[Candidate]:
    """At most one running task per queue: a queue with one running gives nothing."""
    chosen: list[Candidate] = []
    served: set[str] = set()
    for s in sources:
        if len(chosen) == size:
            break
        if s.queue in served or source.has_running(s.queue):
            continue
        head = buffers.head(s)
        if head is not None:
            chosen.append(buffers.pop(head.lane))
            served.add(s.queue)
    return chosen


def _fair(
    sources: Sequence[Source], size: int, source: LaneSource, rotation: Rotation
) -> list[Candidate]:
    """Within each lane, one task per group in turn; lanes in list order, most urgent first."""
    chosen: list[Candidate] = []
    for s in sources:
        for lane in s.lanes():
            if len(chosen) == size:
                return chosen
            if source.has_queued(lane):
                chosen.extend(_fair_lane(lane, size - len(chosen), source, rotation))
    return chosen


def _fair_lane(lane: Lane, size: int, source: LaneSource, rotation: Rotation) -> list[Candidate]:
    # The groups in rotation order, starting after the group served last, at most `size`.
    last = rotation.last_group.get(lane)
    groups: list[str] = []
    group = source.next_group(lane, last)
    while group is not None and len(groups) < size:
        groups.append(group)
        group = source.next_group(lane, group)
    if last is not None:
        group = source.next_group(lane, None)
        while group is not None and group <= last and len(groups) < size:
            groups.append(group)
            group = source.next_group(lane, group)
    buffers = {g: source.oldest(lane, size, g) for g in groups}
    chosen: list[Candidate] = []
    depth = 0
    while len(chosen) < size:
        took = False
        for g in groups:
            if depth < len(buffers[g]) and len(chosen) < size:
                chosen.append(buffers[g][depth])
                rotation.last_group[lane] = g
                took = True
        if not took:
            break
        depth += 1
    return chosen
