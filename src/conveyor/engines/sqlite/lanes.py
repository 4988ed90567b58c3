"""The LaneSource that take strategies read, inside the writer's transaction."""

from __future__ import annotations

from conveyor.domain.queues import Lane
from conveyor.domain.states import TaskStatus
from conveyor.domain.strategies import Candidate
from conveyor.engines.sqlite import queries as q
from conveyor.engines.sqlite.writer import Tx


class Lanes:
    """The LaneSource a strategy reads, inside the writer's transaction."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx
        self._conn = tx.conn

    def has_queued(self, lane: Lane) -> bool:
        return self._tx.count((lane.queue, lane.level, TaskStatus.QUEUED)) > 0

    def oldest(self, lane: Lane, limit: int, group: str | None = None) -> list[Candidate]:
        if group is None:
            rows = self._conn.execute(q.OLDEST, (lane.queue, lane.level, limit))
        else:
            rows = self._conn.execute(q.OLDEST_IN_GROUP, (lane.queue, lane.level, group, limit))
        return [Candidate(seq, task_id, lane, grp) for seq, task_id, grp in rows]

    def next_group(self, lane: Lane, after: str | None) -> str | None:
        if after is None:
            row = self._conn.execute(q.FIRST_GROUP, (lane.queue, lane.level)).fetchone()
        else:
            row = self._conn.execute(q.NEXT_GROUP, (lane.queue, lane.level, after)).fetchone()
        group: str | None = row[0]
        return group

    def has_running(self, queue: str) -> bool:
        return self._conn.execute(q.ANY_RUNNING, (queue,)).fetchone() is not None
