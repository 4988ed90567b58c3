"""One writer thread per SQLite file, with group commit.

Every write is a function of a `Tx` queued to the writer. The thread takes everything
queued, runs it in one transaction (each function inside its own savepoint, so one that
raises changes nothing while the others commit), commits once, and only then resolves the
callers' futures and delivers wake-ups. Concurrent callers so share one fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
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

    def moved(self, queue: str, level: int, old: TaskStatus | None, new: TaskStatus | None) -> None:
        """Record a task entering `new` from `old` (None: created or deleted)."""
        if old is not None:
            self.delta[(queue, level, old)] -= 1
        if new is not None:
            self.delta[(queue, level, new)] += 1
            if new is TaskStatus.QUEUED:
                self.work.add(queue)

    def count(self, key: CountKey) -> int:
        """Tasks in a state as this transaction sees them, without a query."""
        return (
            self.writer.counts.get(key, 0)
            + self.writer.pending.get(key, 0)
            + self.delta.get(key, 0)
        )


Op = Callable[[Tx], Any]
Delivery = Callable[[set[str], list[float]], None]


class Writer:
    """Owns the write connection and the thread that uses it."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        load_counts: Callable[[sqlite3.Connection], dict[CountKey, int]],
        flush_counts: Callable[[sqlite3.Connection, dict[CountKey, int]], None],
        deliver: Delivery,
        checkpoint: Callable[[], None],
    ) -> None:
        self._connect = connect
        self._load_counts = load_counts
        self._flush_counts = flush_counts
        self._deliver = deliver
        self._checkpoint = checkpoint
        self._inbox: queue.SimpleQueue[tuple[Op, asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        # committed counts per (queue, level, status), and this batch's not yet committed
        self.counts: dict[CountKey, int] = {}
        self.pending: defaultdict[CountKey, int] = defaultdict(int)
        # state only the writer thread touches, kept between transactions
        self.state: dict[str, Any] = {}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._run, name="conveyor-sqlite-writer", daemon=True
        )
        self._thread.start()
        await asyncio.to_thread(self._started.wait)
        if self._start_error is not None:
            raise EngineUnavailable(f"cannot open the SQLite store: {self._start_error}")

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._inbox.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    async def run(self, op: Callable[[Tx], T]) -> T:
        """Run `op` in the next transaction; return its value once committed."""
        if self._thread is None or self._loop is None:
            raise EngineUnavailable("the SQLite engine is not open")
        future: asyncio.Future[T] = self._loop.create_future()
        self._inbox.put((op, future))
        return await future

    def _run(self) -> None:
        try:
            conn = self._connect()
            self.counts = self._load_counts(conn)
        except BaseException as exc:
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        last_checkpoint = time.monotonic()
        try:
            while True:
                first = self._inbox.get()
                if first is None:
                    break
                batch = [first]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        item = self._inbox.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                self._commit(conn, batch)
                now = time.monotonic()
                if now - last_checkpoint >= CHECKPOINT_EVERY_S:
                    last_checkpoint = now
                    self._checkpoint()
                if stop:
                    break
        finally:
            conn.close()

    def _commit(
        self, conn: sqlite3.Connection, batch: list[tuple[Op, asyncio.Future[Any]]]
    ) -> None:
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        work: set[str] = set()
        due: list[float] = []
        self.pending.clear()
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
                        self.pending[key] += change
                work |= tx.work
                due.extend(tx.due)
                outcomes.append((future, value, None))
            self._flush_counts(conn, {k: v for k, v in self.pending.items() if v})
            conn.execute("COMMIT")
        except Exception as exc:
            log.exception("SQLite transaction failed; %d writes refused", len(batch))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self.pending.clear()
            error = EngineUnavailable(f"the SQLite store refused a write: {exc}")
            self._settle([(future, None, error) for _, future in batch], set(), [])
            return
        for key, change in self.pending.items():
            total = self.counts.get(key, 0) + change
            if total:
                self.counts[key] = total
            else:
                self.counts.pop(key, None)
        self.pending.clear()
        self._settle(outcomes, work, due)

    def _settle(
        self,
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]],
        work: set[str],
        due: list[float],
    ) -> None:
        assert self._loop is not None
        # a closed loop raises RuntimeError: then nobody is waiting any more
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_resolve, outcomes, work, due, self._deliver)


def _resolve(
    outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]],
    work: set[str],
    due: list[float],
    deliver: Delivery,
) -> None:
    for future, value, error in outcomes:
        if future.cancelled():
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
    deliver(work, due)
