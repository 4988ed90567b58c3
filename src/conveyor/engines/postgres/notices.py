"""Telling the other servers: notices on the schema's NOTIFY channel, sent after COMMIT.

Why not NOTIFY inside the verb's transaction: PostgreSQL serializes every transaction
that notifies on one lock, held until its commit record is on disk, so notifying verbs
could not commit faster than one disk flush each, across the whole cluster. Here a verb
commits without notifying, hands its news to this process's waiters at once and to the
`NoticeSender`, whose task sends what gathered meanwhile in one short transaction that
does not wait for the disk (a notice is not worth a flush: a lost one only delays a
waiter, and waiters look again every few seconds in any case: listener.py).

A payload, one line per kind:
    <origin>            the sending engine (the listener drops its own engine's notices)
    w <queue> ...       queues that got work
    t <task_id> ...     tasks that ended or have new events
    d <unix time>       the earliest time something falls due
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from conveyor.engines.postgres.tx import literal

log = logging.getLogger(__name__)

MAX_PAYLOAD = 7_000  # PostgreSQL takes up to 8000 bytes; task ids are split over several
MAX_PENDING_TASKS = 100_000  # past this many task ids waiting to be told, tell fewer


def notices(
    origin: str, work: Iterable[str], changed: Sequence[str], due: float | None
) -> list[str]:
    """The payloads that carry some news (none when there is none)."""
    head = [origin]
    if work:
        head.append("w " + " ".join(sorted(work)))
    if due is not None:
        head.append(f"d {due!r}")
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


Send = Callable[[str], Awaitable[Any]]


class NoticeSender:
    """Gathers the news of committed transactions and NOTIFYs it from one owned task."""

    def __init__(self, send: Send, channel: str, origin: str) -> None:
        self._send = send  # runs a simple query on some connection
        self._channel = channel
        self._origin = origin
        self._work: set[str] = set()
        self._changed: dict[str, None] = {}  # ordered, without repeats
        self._due: float | None = None
        self._wanted = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def add(self, work: Iterable[str], changed: Iterable[str], due: float | None) -> None:
        """News to tell the other servers (sent soon, with whatever else comes meanwhile)."""
        self._work.update(work)
        if len(self._changed) < MAX_PENDING_TASKS:
            self._changed.update(dict.fromkeys(changed))
        if due is not None and (self._due is None or due < self._due):
            self._due = due
        if self._work or self._changed or self._due is not None:
            self._wanted.set()

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="conveyor-postgres-notices")

    async def stop(self) -> None:
        """Send what is pending, then end the task."""
        self._stopping = True
        self._wanted.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            payloads = notices(self._origin, self._work, list(self._changed), self._due)
            self._work, self._changed, self._due = set(), {}, None
            if payloads:
                try:
                    await self._send(self.sql(payloads))
                except Exception as exc:
                    # the waiters elsewhere look again on their own within seconds
                    log.warning("could not NOTIFY other servers (%s); they will poll", exc)
            if self._stopping and not self._wanted.is_set():
                return

    def sql(self, payloads: Sequence[str]) -> str:
        """One transaction that sends `payloads` and commits without waiting for the disk."""
        channel = literal(self._channel)
        calls = ", ".join(f"pg_notify({channel}, {literal(p)})" for p in payloads)
        return f"BEGIN; SET LOCAL synchronous_commit TO off; SELECT {calls}; COMMIT"
