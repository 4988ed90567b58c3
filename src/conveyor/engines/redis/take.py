"""Taking tasks in Redis: one TAKE script where the choice is plain, else the domain's
strategies choose and a script claims.

Most takes name one queue, and then fifo, active_passive, round_robin (over one source)
and sequential all choose the same way: the oldest queued tasks of the queue's lanes, lane
after lane in a fixed order (sequential: one, and none while the queue runs a task). TAKE
does exactly that in one round trip, as the strategies (conveyor.domain.strategies) would
over the same state; tests/conformance holds both paths to the same answers.

Otherwise the strategies read a `LaneSource` synchronously, so a take first reads what they
may ask into a `Snapshot` (one SNAPSHOT script per queue, in one round trip): each listed
lane's queued count and oldest `size` tasks, and each queue's running count. `select` runs
over the snapshot. What the snapshot could not answer exactly (the fair strategy's groups,
which depend on where its rotation stands) is recorded as a miss, read, and `select` runs
again from the same rotation. Then CLAIM leases the chosen tasks, each only if it is still
queued (another server may have taken it meanwhile); a take that got fewer than it chose
tries again for the rest.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

from conveyor.domain.ids import new_lease_ids
from conveyor.domain.queues import Lane, Source
from conveyor.domain.strategies import Candidate, Rotation, Strategy, select
from conveyor.domain.tasks import Task
from conveyor.engines.engine import TakeRequest
from conveyor.engines.redis.client import Arg, Link
from conveyor.engines.redis.codec import row_task
from conveyor.engines.redis.keys import Keys

ROUNDS = 50  # claims per take while other takers keep winning the chosen tasks
REFINES = 8  # snapshot reads per choice (the fair strategy needs a few)
MIN_SPARE, MAX_SPARE = 2, 32  # extra candidates a one-queue fifo take may fall back on


class Spare:
    """How many spare candidates to choose: doubled when a take lost tasks to other takers,
    lowered by one after a take that lost none (about as many as takers race here)."""

    def __init__(self) -> None:
        self.count = MIN_SPARE

    def lost(self) -> None:
        self.count = min(self.count * 2, MAX_SPARE)

    def won(self) -> None:
        self.count = max(self.count - 1, MIN_SPARE)


_UNKNOWN, _PAUSED, _OPEN = 0, 1, 2


class _Window:
    """A run of a lane's groups in name order: the first `len(groups)` above `after`."""

    def __init__(self, after: str | None, groups: list[str], complete: bool) -> None:
        self.after = after
        self.groups = groups
        self.complete = complete  # no group above the last one listed

    def next_group(self, after: str | None) -> tuple[bool, str | None]:
        """(known, answer): the smallest group above `after`, if this window can tell."""
        if self.after is not None and (after is None or after < self.after):
            return False, None
        index = 0 if after is None else bisect.bisect_right(self.groups, after)
        if index < len(self.groups):
            return True, self.groups[index]
        return self.complete, None


class Snapshot:
    """The LaneSource a strategy reads: lanes as read just before, and what it missed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queues: dict[str, int] = {}  # name -> _UNKNOWN, _PAUSED or _OPEN
        self.running: dict[str, int] = {}
        self.counts: dict[Lane, int] = {}
        self.lanes: dict[Lane, list[Candidate]] = {}
        self.windows: dict[Lane, list[_Window]] = {}
        self.groups: dict[tuple[Lane, str], list[Candidate]] = {}
        self.missed_groups: set[tuple[Lane, str | None]] = set()
        self.missed_oldest: set[tuple[Lane, str]] = set()

    # ---- LaneSource ----
    def has_queued(self, lane: Lane) -> bool:
        return self.counts.get(lane, 0) > 0

    def oldest(self, lane: Lane, limit: int, group: str | None = None) -> list[Candidate]:
        if group is None:
            return self.lanes.get(lane, [])[:limit]
        found = self.groups.get((lane, group))
        if found is None:
            self.missed_oldest.add((lane, group))
            return []
        return found[:limit]

    def next_group(self, lane: Lane, after: str | None) -> str | None:
        for window in self.windows.get(lane, ()):
            known, group = window.next_group(after)
            if known:
                return group
        self.missed_groups.add((lane, after))
        return None

    def has_running(self, queue: str) -> bool:
        return self.running.get(queue, 0) > 0

    # ---- filling ----
    @property
    def missed(self) -> bool:
        return bool(self.missed_groups or self.missed_oldest)

    def read(self, queue: str, reply: list[Any]) -> None:
        """Take in one queue's SNAPSHOT reply."""
        self.queues[queue] = state = int(reply[0])
        if state != _OPEN:
            return
        self.running[queue] = int(reply[1])
        for level, count, flat in reply[2:]:
            lane = Lane(queue, int(level))
            self.counts[lane] = int(count)
            self.lanes[lane] = _candidates(flat, lane, "")

    async def refine(self, link: Link, keys: Keys) -> None:
        """Read what the last `select` missed."""
        batch = link.batch()
        asks_groups = sorted(self.missed_groups, key=repr)
        asks_oldest = sorted(self.missed_oldest)
        self.missed_groups.clear()
        self.missed_oldest.clear()
        limit = max(self.limit, 1)
        for lane, after in asks_groups:
            start = b"-" if after is None else b"(" + after.encode()
            key = f"{keys.queue(lane.queue)}g:{lane.level}"
            batch.call("ZRANGEBYLEX", key, start, b"+", "LIMIT", 0, limit)
        for lane, group in asks_oldest:
            key = f"{keys.queue(lane.queue)}rg:{lane.level}:{group}"
            batch.call("ZRANGE", key, 0, limit - 1, "WITHSCORES")
        replies = await batch.run()
        for (lane, after), reply in zip(asks_groups, replies, strict=False):
            groups = [g.decode() for g in reply]
            self.windows.setdefault(lane, []).append(_Window(after, groups, len(groups) < limit))
        for (lane, group), flat in zip(asks_oldest, replies[len(asks_groups) :], strict=True):
            self.groups[(lane, group)] = _candidates(flat, lane, group)


def _candidates(flat: list[bytes], lane: Lane, group: str) -> list[Candidate]:
    """ZRANGE ... WITHSCORES pairs (id, seq) as candidates; a seq is a whole number."""
    make = Candidate._make
    return [
        make((int(seq), task_id.decode(), lane, group))
        for task_id, seq in zip(flat[::2], flat[1::2], strict=True)
    ]


async def snapshot(link: Link, keys: Keys, sources: Sequence[Source], size: int) -> Snapshot:
    """Read every listed queue's lanes, for a take of `size`."""
    levels: dict[str, dict[int, None]] = {}
    for source in sources:
        levels.setdefault(source.queue, {}).update(dict.fromkeys(source.levels))
    found = Snapshot(size)
    batch = link.batch()
    for queue, wanted in levels.items():
        batch.script("snapshot", keys.queue(queue), keys.prefix, size, *wanted)
    for queue, reply in zip(levels, await batch.run(), strict=True):
        if isinstance(reply, Exception):
            raise reply
        found.read(queue, reply)
    return found


async def choose(
    link: Link,
    keys: Keys,
    request: TakeRequest,
    size: int,
    rotation: Rotation,
) -> list[Candidate]:
    """The tasks the request's strategy picks now (not yet claimed)."""
    found = await snapshot(link, keys, request.sources, size)
    sources = [s for s in request.sources if found.queues.get(s.queue) == _OPEN]
    saved = (dict(rotation.next_source), dict(rotation.last_group))
    for _ in range(REFINES):
        chosen = select(request.strategy, sources, size, found, rotation)
        if not found.missed:
            return chosen
        rotation.next_source, rotation.last_group = dict(saved[0]), dict(saved[1])
        await found.refine(link, keys)
    return select(request.strategy, sources, size, found, rotation)


async def claim(
    link: Link,
    keys: Keys,
    chosen: Sequence[Candidate],
    request: TakeRequest,
    now: float,
    most: int,
) -> list[Task]:
    """Lease the chosen tasks still queued, in order, up to `most` per queue; the ones
    leased, in the order chosen."""
    by_queue: dict[str, list[Arg]] = {}
    for candidate in chosen:
        by_queue.setdefault(candidate.lane.queue, []).append(candidate.task_id)
    batch = link.batch()
    for queue, ids in by_queue.items():
        count = min(most, len(ids))
        batch.script("claim", keys.queue(queue), *_lease_args(keys, request, now, count), *ids)
    taken: dict[str, Task] = {}
    for queue, reply in zip(by_queue, await batch.run(), strict=True):
        if isinstance(reply, Exception):
            raise reply
        for row in reply:
            task = row_task(queue, row)
            taken[task.task_id] = task
    return [taken[c.task_id] for c in chosen if c.task_id in taken]


def _lease_args(keys: Keys, request: TakeRequest, now: float, count: int) -> list[Arg]:
    """The arguments CLAIM and TAKE share (scripts._LEASE) for leasing up to `count`."""
    return [
        keys.prefix,
        now,
        now + request.lease_s,
        request.lease_s,
        request.worker_id,
        "1" if request.strategy is Strategy.SEQUENTIAL else "0",
        count,
        new_lease_ids(count),
    ]


def lanes_in_order(request: TakeRequest) -> list[int] | None:
    """The levels whose oldest tasks the request's strategy takes, lane after lane, when
    it names one queue and chooses that plainly (see the module's docstring); else None."""
    sources = request.sources
    if not sources or any(s.queue != sources[0].queue for s in sources):
        return None
    strategy = request.strategy
    if strategy in (Strategy.FIFO, Strategy.ROUND_ROBIN) and len(sources) > 1:
        return None  # fifo merges the sources' heads by age; round_robin alternates them
    if strategy is Strategy.FAIR:
        return None  # groups in turn, from where the rotation stands
    return list(dict.fromkeys(level for s in sources for level in s.levels))


async def take_lanes(
    link: Link, keys: Keys, request: TakeRequest, levels: list[int], now: float
) -> list[Task]:
    """Lease the oldest queued tasks of one queue's `levels`, lane after lane (TAKE)."""
    queue = request.sources[0].queue
    most = 1 if request.strategy is Strategy.SEQUENTIAL else request.size
    reply = await link.run(
        "take", keys.queue(queue), *_lease_args(keys, request, now, most), *levels
    )
    return [row_task(queue, row) for row in reply]


async def take(
    link: Link,
    keys: Keys,
    request: TakeRequest,
    rotation: Rotation,
    now: float,
    spares: Spare,
) -> list[Task]:
    """Lease up to `request.size` tasks by the request's strategy."""
    levels = lanes_in_order(request)
    if levels is not None:
        return await take_lanes(link, keys, request, levels, now)
    tasks: list[Task] = []
    for _ in range(ROUNDS):
        size = request.size - len(tasks)
        spare = spares.count if _sparing(request) else 0
        chosen = await choose(link, keys, request, size + spare, rotation)
        if not chosen:
            break
        most = size if spare else len(chosen)
        claimed = await claim(link, keys, chosen, request, now, most)
        tasks.extend(claimed)
        # every task chosen was claimed (or as many as asked): none was lost to others
        if len(claimed) == min(len(chosen), most):
            spares.won()
            break
        spares.lost()
        if len(tasks) >= request.size:
            break
    return tasks


def _sparing(request: TakeRequest) -> bool:
    """Whether to choose spare candidates, so that losing a few to other takers costs no
    second round trip: only where choosing more changes nothing about the first ones (fifo
    and active_passive keep no rotation, and their order extends) and where one script
    claims them all (one queue; such takes mostly go by TAKE)."""
    one_queue = len({s.queue for s in request.sources}) == 1
    return one_queue and request.strategy in (Strategy.FIFO, Strategy.ACTIVE_PASSIVE)
