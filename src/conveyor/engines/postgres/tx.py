"""One engine transaction: its connection, and the bookkeeping written with its COMMIT.

A verb runs its statements on `Tx.conn` between BEGIN and COMMIT and records what it did
(`moved` tasks between states, queues that got work, tasks that changed, times that fall
due). The COMMIT goes out as one simple-protocol round trip with the counter upserts, so
the counts cost no round trip of their own; the news goes to this process's waiters and,
through notices.py, to the other servers once the COMMIT is done.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from conveyor.domain.states import TaskStatus
from conveyor.engines.postgres import queries as q
from conveyor.engines.postgres.queries import SLOTS, STATUS_CODES

CountKey = tuple[str, int, int]  # queue, level, status code


def literal(text: str) -> str:
    """`text` as an SQL string literal (standard_conforming_strings is on: see engine.py)."""
    return "'" + text.replace("'", "''") + "'"


class Tx:
    """What a write sees: the connection, and the bookkeeping it must keep."""

    __slots__ = ("batches", "changed", "conn", "delta", "due", "local_due", "work")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.delta: defaultdict[CountKey, int] = defaultdict(int)
        self.work: set[str] = set()  # queues that got queued tasks
        self.due: list[float] = []  # times something falls due, for every server's sweeper
        self.local_due: list[float] = []  # the same, for this server's sweeper only
        self.changed: list[str] = []  # tasks that ended or have new events
        # batch id -> changes to [total, completed, failed, not_run]
        self.batches: dict[str, list[int]] = {}

    def moved(
        self, queue: str, level: int, old: TaskStatus | None, new: TaskStatus | None, n: int = 1
    ) -> None:
        """Record `n` tasks entering `new` from `old` (None: created or deleted)."""
        if old is not None:
            self.delta[(queue, level, STATUS_CODES[old])] -= n
        if new is not None:
            self.delta[(queue, level, STATUS_CODES[new])] += n
            if new is TaskStatus.QUEUED:
                self.work.add(queue)

    def batch_moved(
        self, batch_id: str, before: int | None, after: int | None, total: int = 0
    ) -> None:
        """Record a batch task moving between counts columns (1 completed, 2 failed,
        3 not run; None while unfinished), and `total` tasks added (or, negative, removed)."""
        if before == after and not total:
            return
        change = self.batches.setdefault(batch_id, [0, 0, 0, 0])
        change[0] += total
        if before is not None:
            change[before] -= 1
        if after is not None:
            change[after] += 1

    def commit_sql(self) -> str:
        """The counter upserts and COMMIT, as one simple query.

        Counter rows are written in key order, counts before batch counts, so two
        transactions never wait on each other's counter rows in a cycle.
        """
        parts: list[str] = []
        slot = random.randrange(SLOTS)
        changes = sorted((key, n) for key, n in self.delta.items() if n)
        if changes:
            values = ", ".join(
                f"({literal(queue)}, {level}, {status}, {slot}, {n})"
                for (queue, level, status), n in changes
            )
            parts.append(q.UPSERT_COUNTS.format(values=values))
        batched = sorted((b, c) for b, c in self.batches.items() if any(c))
        if batched:
            values = ", ".join(
                f"({literal(batch_id)}, {slot}, {total}, {completed}, {failed}, {not_run})"
                for batch_id, (total, completed, failed, not_run) in batched
            )
            parts.append(q.UPSERT_BATCH_COUNTS.format(values=values))
        parts.append("COMMIT")
        return ";\n".join(parts)
