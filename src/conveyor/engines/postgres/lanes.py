"""The LaneSource that take strategies read: lanes read ahead, inside the take's transaction.

The strategies (domain/strategies.py) ask their questions synchronously, and a question to
PostgreSQL is a round trip; so `Lanes` reads first, in a few statements, what the request's
strategy is going to ask (each source's oldest tasks, the groups of a fair lane, which
queues run a task), locking the candidate rows FOR UPDATE SKIP LOCKED so that concurrent
takers never choose the same task. A question it cannot answer raises `Missing`; `choose`
then reads that too and runs the strategy again (the strategies are deterministic, and the
rotation they advanced is put back first). With the reads below that does not happen for
any of the five strategies; it is the safety net that keeps the strategies the only place
where the choice is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.domain.queues import Lane, Source
from conveyor.domain.strategies import Candidate, Rotation, Strategy, select
from conveyor.engines.postgres import queries as q

MAX_PASSES = 64


class Missing(Exception):
    """A strategy asked what was not read: ("lane", lane), ("groups", lane, after),
    ("group", lane, group) or ("running", queue)."""

    def __init__(self, *ask: Any) -> None:
        super().__init__(ask)
        self.ask = ask


def after_group(group: str | None) -> str:
    """The lower bound (>=) that stands for "groups above `group`" (all, for None).

    No text holds chr(0), so the smallest text above g is g || chr(1).
    """
    return "" if group is None else group + "\x01"


class Lanes:
    """A LaneSource over what has been read so far in this transaction."""

    def __init__(self, conn: Any, size: int) -> None:
        self._conn = conn
        self._size = size
        # lane -> (its unlocked queued tasks, oldest first; True if that is all of them)
        self._ready: dict[Lane, tuple[list[Candidate], bool]] = {}
        self._with_work: dict[Lane, bool] = {}
        # lane -> {after: (the groups above `after`, in order; True if no more follow)}
        self._groups: dict[Lane, dict[str | None, tuple[list[str], bool]]] = {}
        self._in_group: dict[tuple[Lane, str], list[Candidate]] = {}
        self._running: dict[str, bool] = {}

    # ---- LaneSource ----
    def has_queued(self, lane: Lane) -> bool:
        ready = self._ready.get(lane)
        if ready is not None:
            return bool(ready[0])
        work = self._with_work.get(lane)
        if work is None:
            raise Missing("lane", lane)
        return work

    def oldest(self, lane: Lane, limit: int, group: str | None = None) -> list[Candidate]:
        if group is not None:
            found = self._in_group.get((lane, group))
            if found is None:
                raise Missing("group", lane, group)
            return found[:limit]
        ready = self._ready.get(lane)
        if ready is None:
            raise Missing("lane", lane)
        # A lane read short of `limit` but not to its end was cut by its source's limit:
        # the take is full before the strategy could use more from it.
        return ready[0][:limit]

    def next_group(self, lane: Lane, after: str | None) -> str | None:
        walks = self._groups.get(lane, {})
        walk = walks.get(after)
        if walk is not None:
            groups, complete = walk
            if groups:
                return groups[0]
            if complete:
                return None
        elif after is not None:
            for groups, complete in walks.values():
                if after in groups:
                    position = groups.index(after) + 1
                    if position < len(groups):
                        return groups[position]
                    if complete:
                        return None
        raise Missing("groups", lane, after)

    def has_running(self, queue: str) -> bool:
        running = self._running.get(queue)
        if running is None:
            raise Missing("running", queue)
        return running

    # ---- reading ahead ----
    async def read_sources(self, sources: Sequence[Source], per_source: int) -> None:
        """Up to `per_source` of each source's oldest tasks, its lanes in order, locked."""
        if not sources or per_source <= 0:
            return
        queues: list[str] = []
        los: list[int] = []
        his: list[int] = []
        levels: list[int] = []
        for source in sources:
            queues.append(source.queue)
            los.append(len(levels) + 1)
            levels.extend(source.levels)
            his.append(len(levels))
        rows = await self._conn.fetch(q.OLDEST_BY_SOURCE, queues, los, his, levels, per_source)
        found: dict[Lane, list[Candidate]] = {}
        counts = [0] * len(sources)
        for index, level, seq, task_id, group in rows:
            lane = Lane(queues[index - 1], level)
            found.setdefault(lane, []).append(Candidate(seq, task_id, lane, group))
            counts[index - 1] += 1
        for source, count in zip(sources, counts, strict=True):
            full = count >= per_source
            lanes = source.lanes()
            last = max((i for i, lane in enumerate(lanes) if lane in found), default=-1)
            for i, lane in enumerate(lanes):
                if full and i > last:
                    break  # the source's limit stopped the read before this lane
                candidates = sorted(found.get(lane, []))
                self._ready[lane] = (candidates, not (full and i == last))

    async def read_work(self, lanes: Sequence[Lane]) -> list[Lane]:
        """Which of `lanes` have queued tasks (in queues that are not paused)."""
        rows = await self._conn.fetch(
            q.LANES_WITH_WORK, [lane.queue for lane in lanes], [lane.level for lane in lanes]
        )
        busy = {lanes[i - 1] for (i,) in rows}
        for lane in lanes:
            self._with_work[lane] = lane in busy
        return [lane for lane in lanes if lane in busy]

    async def read_groups(self, walks: Sequence[tuple[Lane, str | None]]) -> None:
        """For each (lane, after): the lane's groups above `after`, up to one more than the
        take's size (a fair take asks for the group after the last one it visits)."""
        if not walks:
            return
        rows = await self._conn.fetch(
            q.GROUPS_FROM,
            [lane.queue for lane, _ in walks],
            [lane.level for lane, _ in walks],
            [after_group(after) for _, after in walks],
            self._size + 1,
        )
        found: list[list[str]] = [[] for _ in walks]
        for i, group in rows:
            found[i - 1].append(group)
        for (lane, after), groups in zip(walks, found, strict=True):
            self._groups.setdefault(lane, {})[after] = (groups, len(groups) <= self._size)

    async def read_in_groups(self, pairs: Sequence[tuple[Lane, str]]) -> int:
        """Up to the take's size of each (lane, group)'s oldest tasks, locked; how many."""
        pairs = [pair for pair in pairs if pair not in self._in_group]
        if not pairs:
            return 0
        rows = await self._conn.fetch(
            q.OLDEST_BY_GROUP,
            [lane.queue for lane, _ in pairs],
            [lane.level for lane, _ in pairs],
            [group for _, group in pairs],
            self._size,
        )
        for pair in pairs:
            self._in_group[pair] = []
        for i, seq, task_id in rows:
            lane, group = pairs[i - 1]
            self._in_group[(lane, group)].append(Candidate(seq, task_id, lane, group))
        for pair in pairs:
            self._in_group[pair].sort()
        return len(rows)

    async def read_running(self, queues: Sequence[str]) -> None:
        """Which of `queues` have a running task (after the sequential lock is held)."""
        rows = await self._conn.fetch(q.QUEUES_RUNNING, list(queues))
        running = {name for (name,) in rows}
        for name in queues:
            self._running[name] = name in running

    def fair_groups(self, lane: Lane, last: str | None, size: int) -> list[str]:
        """The groups a fair take visits in `lane`, walked as strategies._fair_lane does."""
        groups: list[str] = []
        try:
            group = self.next_group(lane, last)
            while group is not None and len(groups) < size:
                groups.append(group)
                group = self.next_group(lane, group)
            if last is not None:
                group = self.next_group(lane, None)
                while group is not None and group <= last and len(groups) < size:
                    groups.append(group)
                    group = self.next_group(lane, group)
        except Missing:
            pass  # the strategy's own walk will ask, and be answered then
        return groups

    async def read_missing(self, missing: Missing) -> None:
        """Read what a strategy asked for and was not read."""
        kind, *args = missing.ask
        if kind == "lane":
            (lane,) = args
            await self.read_sources([Source(lane.queue, (lane.level,))], self._size)
        elif kind == "groups":
            await self.read_groups([(args[0], args[1])])
        elif kind == "group":
            await self.read_in_groups([(args[0], args[1])])
        else:
            await self.read_running([args[0]])


async def choose(
    conn: Any,
    strategy: Strategy,
    sources: Sequence[Source],
    size: int,
    rotation: Rotation,
) -> list[Candidate]:
    """The candidates `strategy` picks, read ahead and locked in this transaction."""
    lanes = Lanes(conn, size)
    if strategy is Strategy.SEQUENTIAL:
        names = sorted({s.queue for s in sources})
        await conn.fetch(q.LOCK_QUEUES_FOR_SEQUENTIAL, names)
        await lanes.read_running(names)
        idle = [s for s in sources if not lanes.has_running(s.queue)]
        await lanes.read_sources(idle, 1)
    elif strategy is Strategy.FAIR:
        await _read_fair(lanes, sources, size, rotation)
    else:
        await lanes.read_sources(sources, size)
    for _ in range(MAX_PASSES):
        saved = _snapshot(rotation, sources)
        try:
            return select(strategy, sources, size, lanes, rotation)
        except Missing as missing:
            _restore(rotation, saved)
            await lanes.read_missing(missing)
    raise RuntimeError(f"the {strategy} strategy kept asking for more than was read")


async def _read_fair(
    lanes: Lanes, sources: Sequence[Source], size: int, rotation: Rotation
) -> None:
    busy = await lanes.read_work([lane for s in sources for lane in s.lanes()])
    walks: list[tuple[Lane, str | None]] = []
    for lane in busy:
        walks.append((lane, None))
        last = rotation.last_group.get(lane)
        if last is not None:
            walks.append((lane, last))
    await lanes.read_groups(walks)
    found = 0
    for lane in busy:  # in list order, until they hold enough candidates for the take
        if found >= size:
            break
        groups = lanes.fair_groups(lane, rotation.last_group.get(lane), size)
        found += await lanes.read_in_groups([(lane, group) for group in groups])


def _snapshot(rotation: Rotation, sources: Sequence[Source]) -> tuple[Any, ...]:
    key = tuple(sources)
    lanes = [lane for s in sources for lane in s.lanes()]
    return (
        key,
        rotation.next_source.get(key),
        {lane: rotation.last_group.get(lane) for lane in lanes},
    )


def _restore(rotation: Rotation, saved: tuple[Any, ...]) -> None:
    key, next_source, last_groups = saved
    if next_source is None:
        rotation.next_source.pop(key, None)
    else:
        rotation.next_source[key] = next_source
    for lane, group in last_groups.items():
        if group is None:
            rotation.last_group.pop(lane, None)
        else:
            rotation.last_group[lane] = group
