"""Wake-ups across servers: one LISTEN connection per engine, fanned out to local waiters.

The news of committed transactions (work in a queue, a task that ended or has events,
something falling due) is NOTIFYed on the schema's channel (notices.py). The `Listener`
holds one connection LISTENing on it, owned by one task that reconnects when the
connection is lost. Notices are handed to a LocalNotifier, which wakes the watches of this
process; the engine also hands its own transactions' news to it directly after COMMIT
(without the round trip through the server), and the listener drops its own notices.

A notice can be lost: while the connection is down, or when a server dies between a
COMMIT and its notice. So after every reconnect the listener wakes every registered watch
and the sweeper, and a watch never sleeps longer than RECHECK_S before it says "look
again": a waiter finds what it missed within seconds, never at its full timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

from conveyor.domain.clock import Clock
from conveyor.engines.engine import WorkWatch
from conveyor.engines.notifier import LocalNotifier
from conveyor.engines.postgres.notices import Notice

log = logging.getLogger(__name__)

HEALTH_CHECK_S = 15.0  # how often an idle listening connection is asked whether it lives
RECHECK_S = 2.0  # the longest a watch waits before its waiter looks again anyway
STOP_GRACE_S = 2.0
RECONNECT_S = (0.05, 0.2, 0.5, 1.0, 2.0)  # waits between attempts, the last one repeating

Connect = Callable[[], Awaitable[Any]]


class Listener:
    """Owns the LISTEN connection and its task; fans notices out to this process's waiters."""

    def __init__(self, connect: Connect, channel: str, origin: str, clock: Clock) -> None:
        self._connect = connect
        self._channel = channel
        self._origin = origin
        self._clock = clock
        self.local = LocalNotifier()
        self._queues: Counter[str] = Counter()  # watched queues, to wake after a gap
        self._tasks: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None  # the listening connection, while there is one
        self.reconnects = 0

    async def start(self) -> None:
        """Connect and LISTEN (raises what connecting raises), then keep listening in a task."""
        conn = await self._listen()
        self._stop.clear()
        self._task = asyncio.create_task(self._run(conn), name="conveyor-postgres-listener")

    async def stop(self) -> None:
        """Stop listening and close the connection; returns once the task has ended.

        The task ends at once unless it is connecting to a server that does not answer;
        after STOP_GRACE_S it is cancelled (connecting can take CONNECT_TIMEOUT_S).
        """
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=STOP_GRACE_S)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif (exc := task.exception()) is not None:
            log.error("the LISTEN task ended with an error", exc_info=exc)

    async def _listen(self) -> Any:
        conn = await self._connect()
        try:
            self._lost.clear()
            conn.add_termination_listener(lambda _conn: self._lost.set())
            await conn.add_listener(self._channel, self._on_notice)
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def _run(self, conn: Any) -> None:
        try:
            await self._listen_until_stopped(conn)
        finally:
            if self._conn is not None:
                await self._close(self._conn)

    async def _listen_until_stopped(self, conn: Any) -> None:
        failures = 0
        self._conn = conn
        while not self._stop.is_set():
            if conn is None:
                try:
                    conn = self._conn = await self._listen()
                except Exception as exc:
                    delay = RECONNECT_S[min(failures, len(RECONNECT_S) - 1)]
                    failures += 1
                    log.warning("LISTEN connection failed (%s); retrying in %.2fs", exc, delay)
                    await self._pause(delay)
                    continue
                failures = 0
                self.reconnects += 1
                self._wake_everyone()  # notices sent while no one listened are lost
            try:
                await self._watch(conn)
            except Exception as exc:
                log.warning("LISTEN connection lost (%s); reconnecting", exc)
            await self._close(conn)
            conn = self._conn = None

    async def _watch(self, conn: Any) -> None:
        """Return when the connection is lost or the listener stops; check it when idle."""
        while not self._stop.is_set() and not self._lost.is_set():
            stop = asyncio.ensure_future(self._stop.wait())
            lost = asyncio.ensure_future(self._lost.wait())
            try:
                await asyncio.wait(
                    {stop, lost}, timeout=HEALTH_CHECK_S, return_when="FIRST_COMPLETED"
                )
            finally:
                stop.cancel()
                lost.cancel()
            if not self._stop.is_set() and not self._lost.is_set():
                await asyncio.wait_for(conn.fetchval("SELECT 1"), HEALTH_CHECK_S)

    async def _pause(self, delay_s: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), delay_s)
        except TimeoutError:
            return

    async def _close(self, conn: Any) -> None:
        try:
            await asyncio.wait_for(conn.close(), 2.0)
        except (Exception, TimeoutError):
            conn.terminate()

    def _on_notice(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            notice = Notice(payload)
        except ValueError:
            log.warning("ignoring a notice that is not Conveyor's: %.80r", payload)
            return
        if notice.origin == self._origin:
            return  # delivered at commit already
        self.deliver(notice.work, notice.changed, notice.due)

    def deliver(self, work: Collection[str], changed: Collection[str], due: float | None) -> None:
        """Wake this process's waiters for news (the engine's own, or another server's)."""
        if changed:
            self.local.tasks_changed(changed)
        if work:
            self.local.work_arrived(work)
        if due is not None:
            self.local.due(due)

    def _wake_everyone(self) -> None:
        self.local.tasks_changed(list(self._tasks))
        self.local.work_arrived(list(self._queues))
        self.local.due(self._clock())

    @asynccontextmanager
    async def watch(self, queues: Sequence[str]) -> AsyncIterator[WorkWatch]:
        """A LocalNotifier watch on `queues`, remembered so that a reconnect can wake it."""
        names = set(queues)
        self._queues.update(names)
        try:
            async with self.local.watch(queues) as watch:
                yield _Rechecked(watch)
        finally:
            self._queues.subtract(names)
            for name in names:
                if self._queues[name] <= 0:
                    del self._queues[name]

    @asynccontextmanager
    async def watch_task(self, task_id: str) -> AsyncIterator[WorkWatch]:
        """A LocalNotifier watch on one task, remembered so that a reconnect can wake it."""
        self._tasks[task_id] += 1
        try:
            async with self.local.watch_task(task_id) as watch:
                yield _Rechecked(watch)
        finally:
            self._tasks[task_id] -= 1
            if self._tasks[task_id] <= 0:
                del self._tasks[task_id]


class _Rechecked:
    """A watch that answers "look again" at least every RECHECK_S (see the module doc)."""

    __slots__ = ("_watch",)

    def __init__(self, watch: WorkWatch) -> None:
        self._watch = watch

    async def wait(self, timeout_s: float) -> bool:
        if timeout_s <= RECHECK_S:
            return await self._watch.wait(timeout_s)
        await self._watch.wait(RECHECK_S)
        return True
