"""One engine transaction: its connection, and the bookkeeping written with its COMMIT.

A verb runs its statements on `Tx.conn` between BEGIN and COMMIT and records what it did
(`moved` tasks between states, queues that got work, tasks that changed, times that fall
due). The COMMIT goes out as one simple-protocol round trip with the counter upsert and
the NOTIFY that tell every server, so bookkeeping costs no round trip of its own.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from conveyor.domain.states import TaskStatus
from conveyor.engines.postgres import queries as q
from conveyor.engines.postgres.queries import SLOTS, STATUS_CODES

CountKey = tuple[str, int, int]  # queue, level, status code

# A NOTIFY payload is at most 8000 bytes; task ids are split over several notices.
MAX_PAYLOAD = 7_000


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

    def commit_sql(self, channel: str, origin: str) -> str:
        """The counter upserts, the notices and COMMIT, as one simple query.

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
        for payload in notices(origin, self.work, self.changed, self.due):
            parts.append(f"SELECT pg_notify({literal(channel)}, {literal(payload)})")
        parts.append("COMMIT")
        return ";\n".join(parts)


# ---- notices: what one server tells the others, one line per kind ----
#   <origin>            the sending engine (its own notices it has delivered already)
#   w <queue> ...       queues that got work
#   t <task_id> ...     tasks that ended or have new events
#   d <unix time>       the earliest time something falls due


def notices(origin: str, work: Iterable[str], changed: list[str], due: list[float]) -> list[str]:
    """The payloads that carry a transaction's news (none when there is none)."""
    head = [origin]
    if work:
        head.append("w " + " ".join(sorted(work)))
    if due:
        head.append(f"d {min(due)!r}")
    payloads: list[str] = []
    line = "t"
    size = sum(len(part) + 1 for part in head)
    for task_id in changed:
        if size + len(line) + len(task_id) + 1 > MAX_PAYLOAD:
            payloads.append("\n".join([*head, line]))
            head, line = [origin], "t"
            size = len(origin) + 1
        line += " " + task_id
    if line != "t":
        head.append(line)
    if len(head) > 1:
        payloads.append("\n".join(head))
    return payloads


class Notice:
    """One payload read back."""

    __slots__ = ("changed", "due", "origin", "work")

    def __init__(self, payload: str) -> None:
        lines = payload.split("\n")
        self.origin = lines[0]
        self.work: list[str] = []
        self.changed: list[str] = []
        self.due: float | None = None
        for line in lines[1:]:
            kind, _, rest = line.partition(" ")
            if kind == "w":
                self.work = rest.split(" ")
            elif kind == "t":
                self.changed = rest.split(" ")
            elif kind == "d":
                self.due = float(rest)
