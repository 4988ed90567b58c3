"""Group commit on the event loop's thread, over the one connection that writes.

Every write is a function of a `Tx`, queued with `run`. The first write queued in a loop
iteration schedules a flush; the flush runs everything queued by then in one transaction
(each function inside its own savepoint, so one that raises changes nothing while the
others commit), commits once, and only then resolves the callers' futures and delivers
wake-ups. Concurrent callers so share one commit.

Why not a writer thread: every sqlite3 call releases the GIL, and a writer thread then
waits up to a switch interval to get it back from a busy event loop; measured on two
cores, that hand-off cost more than the SQLite work itself (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

from conveyor.domain.states import TaskStatus
from conveyor.errors import EngineUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
CountKey = tuple[str, int, TaskStatus]

MAX_BATCH = 512
CHECKPOINT_EVERY_S = 0.5


class Tx:
    """What a write sees: the connection, and the bookkeeping it must keep."""

    def __init__(self, conn: sqlite3.Connection, writer: Writer) -> None:
        self.conn = conn
        self.writer = writer
        self.delta: defaultdict[CountKey, int] = defaultdict(int)
        self.work: set[str] = set()
        self.due: list[float] = []
        self.changed: list[str] = []

    def moved(
        self, queue: str, level: int, old: TaskStatus | None, new: TaskStatus | None, n: int = 1
    ) -> None:
        """Record `n` tasks entering `new` from `old` (None: created or deleted)."""
        if old is not None:
            self.delta[(queue, level, old)] -= n
        if new is not None:
            self.delta[(queue, level, new)] += n
            if new is TaskStatus.QUEUED:
                self.work.add(queue)

    def count(self, key: CountKey) -> int:
        """Tasks in a state as this transaction sees them, without a query."""
        writer = self.writer
        return writer.counts.get(key, 0) + writer.pending.get(key, 0) + self.delta.get(key, 0)


Op = Callable[[Tx], Any]
Delivery = Callable[[set[str], list[float], list[str]], None]


class Writer:
    """Owns the connection; batches the writes queued in one loop iteration."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        flush_counts: Callable[[sqlite3.Connection, dict[CountKey, int]], None],
        deliver: Delivery,
        checkpoint: Callable[[], None],
        counts: dict[CountKey, int],
    ) -> None:
        self.conn = conn
        self._flush_counts = flush_counts
        self._deliver = deliver
        self._checkpoint = checkpoint
        self._queued: list[tuple[Op, asyncio.Future[Any]]] = []
        self._scheduled = False
        self._closed = False
        self._last_checkpoint = time.monotonic()
        # committed counts per (queue, level, status), and this batch's not yet committed
        self.counts = counts
        self.pending: defaultdict[CountKey, int] = defaultdict(int)

    def run(self, op: Callable[[Tx], T]) -> asyncio.Future[T]:
        """Queue `op` for the next transaction; the future resolves once it committed."""
        if self._closed:
            raise EngineUnavailable("the SQLite engine is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queued.append((op, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def close(self) -> None:
        """Commit what is queued, then refuse further writes."""
        if self._queued:
            self._flush()
        self._closed = True

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._queued = self._queued[:MAX_BATCH], self._queued[MAX_BATCH:]
        if self._queued:  # let the loop breathe between large batches
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        if batch:
            self._commit(batch)
        now = time.monotonic()
        if now - self._last_checkpoint >= CHECKPOINT_EVERY_S:
            self._last_checkpoint = now
            self._checkpoint()

    def _commit(self, batch: list[tuple[Op, asyncio.Future[Any]]]) -> None:
        conn = self.conn
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        work: set[str] = set()
        due: list[float] = []
        changed: list[str] = []
        pending = self.pending
        pending.clear()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, future in batch:
                tx = Tx(conn, self)
                conn.execute("SAVEPOINT op")
                try:
                    value = op(tx)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((future, None, exc))
                    continue
                conn.execute("RELEASE op")
                for key, change in tx.delta.items():
                    if change:
                        pending[key] += change
                work |= tx.work
                due.extend(tx.due)
                changed.extend(tx.changed)
                outcomes.append((future, value, None))
            self._flush_counts(conn, {k: v for k, v in pending.items() if v})
            conn.execute("COMMIT")
        except Exception as exc:
            log.exception("SQLite transaction failed; %d writes refused", len(batch))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            pending.clear()
            failure = EngineUnavailable(f"the SQLite store refused a write: {exc}")
            outcomes = [(future, None, failure) for _, future in batch]
            work, due, changed = set(), [], []
        counts = self.counts
        for key, change in pending.items():
            total = counts.get(key, 0) + change
            if total:
                counts[key] = total
            else:
                counts.pop(key, None)
        pending.clear()
        for future, value, error in outcomes:
            if future.cancelled():
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
        self._deliver(work, due, changed)
