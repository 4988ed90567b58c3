"""One Redis connection shared by every caller of an engine, with automatic pipelining.

Callers hand in packed commands and await their replies. Whatever is handed in during one
event-loop iteration goes out in one write, and one read may bring back replies for many
callers; replies come back in order, so each caller takes the next `count` of them. None of
the engine's commands block on the server, so sharing is safe. A caller cancelled while
its commands are out only stops waiting: its replies are read and dropped, and the
connection stays in step.

Writes are held back while WRITES_OUT of them await their replies, and what gathers
meanwhile goes out in one write when one is answered: fewer, larger writes on both sides
(a write to a local socket costs about as much as the server's work on a small command).

One watchdog per connection, not a timer per request: when the oldest reply still awaited
is REPLY_TIMEOUT_S late, its callers get `Late` and the connection is given up (the others
out on it get a ConnectionError, as for any lost connection: nothing of theirs is known to
have run late).

redis-py's Connection opens the connection (TLS, AUTH, SELECT, CLIENT SETNAME from the
URL; `connection_class` in the settings picks redis-py's class, SSLConnection for TLS); from then on this module writes and reads its streams with a hiredis Reader.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import hiredis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

log = logging.getLogger(__name__)

READ_SIZE = 1 << 16
REPLY_TIMEOUT_S = 30.0  # a script over 10,000 tasks takes well under a second
WRITES_OUT = 2


class Late(TimeoutError):
    """Redis did not answer in time (the connection was given up)."""


class ReplyLost(RedisConnectionError):
    """The connection was lost after the commands were written: whether Redis ran them is
    unknown, so only a command that changes nothing may be sent again."""


def _error(message: str) -> ResponseError:
    """An error reply as redis-py would raise it (NOSCRIPT typed, a generic ERR stripped)."""
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message.removeprefix("ERR "))


class _Request:
    __slots__ = ("count", "deadline", "future", "last", "replies")

    def __init__(self, count: int, future: asyncio.Future[list[Any]]) -> None:
        self.count = count
        self.future = future
        self.replies: list[Any] = []
        self.deadline = 0.0  # set when written
        self.last = False  # the last request of its write


class Multiplexer:
    """The shared connection; opened on first use and again after it is lost."""

    def __init__(
        self, connection_kwargs: dict[str, Any], reply_timeout_s: float = REPLY_TIMEOUT_S
    ) -> None:
        kwargs = dict(connection_kwargs)
        # the class from the URL's scheme (rediss: SSLConnection), else a plain connection
        self._connection_class: type[Connection] = kwargs.pop("connection_class", Connection)
        kwargs.pop("retry", None)
        kwargs["socket_timeout"] = None  # replies may wait behind a long script
        self._kwargs = kwargs
        self._conn: Connection | None = None
        self._dead: list[Connection] = []  # lost connections, to disconnect properly
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._outbox: list[bytes] = []
        self._queued: list[_Request] = []
        self._inflight: deque[_Request] = deque()
        self._flush_scheduled = False
        self._writes_out = 0  # writes not answered in full yet
        self._reply_timeout_s = reply_timeout_s
        self._watchdog: asyncio.TimerHandle | None = None

    async def exchange(self, packed: bytes, count: int) -> list[Any]:
        """Send `packed` (`count` commands); their replies, errors included as values.

        Raises Late if Redis did not answer in time, ConnectionError if the connection was
        lost."""
        if self._writer is None:
            await self._connect()
            # redis-py's connect may drop a cancel that arrives as it completes (wait_for on
            # Python 3.11): one still pending is raised here
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
        request = _Request(count, asyncio.get_running_loop().create_future())
        self._outbox.append(packed)
        self._queued.append(request)
        if not self._flush_scheduled and self._writes_out < WRITES_OUT:
            self._flush_scheduled = True
            request.future.get_loop().call_soon(self._flush)
        return await request.future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._queued:
            return
        if self._writer is None:
            self._fail_queued(RedisConnectionError("the Redis connection was lost"))
            return
        if self._writes_out >= WRITES_OUT:
            return  # the reader writes them when a write is answered
        outbox, queued = self._outbox, self._queued
        self._outbox, self._queued = [], []
        loop = queued[0].future.get_loop()
        deadline = loop.time() + self._reply_timeout_s
        for request in queued:
            request.deadline = deadline
        queued[-1].last = True
        self._inflight.extend(queued)
        self._writes_out += 1
        if self._watchdog is None:
            self._watchdog = loop.call_at(deadline, self._watch)
        try:
            self._writer.write(b"".join(outbox))
        except (OSError, RuntimeError) as exc:
            self._lost(RedisConnectionError(f"writing to Redis failed: {exc}"))

    def _watch(self) -> None:
        """The watchdog: give the connection up if the oldest reply awaited is late."""
        self._watchdog = None
        if not self._inflight:
            return
        loop = self._inflight[0].future.get_loop()
        now = loop.time()
        if self._inflight[0].deadline > now:
            self._watchdog = loop.call_at(self._inflight[0].deadline, self._watch)
            return
        late = []
        while self._inflight and self._inflight[0].deadline <= now:
            late.append(self._inflight.popleft())
        _fail(late, Late("Redis did not answer in time"))
        self._lost(RedisConnectionError("Redis did not answer in time"))

    async def _connect(self) -> None:
        async with self._lock:
            if self._writer is not None:
                return
            await self._bury()
            conn = self._connection_class(**self._kwargs)
            await conn.connect()  # type: ignore[no-untyped-call]
            reader, writer = conn._reader, conn._writer
            assert reader is not None
            assert writer is not None
            self._conn, self._writer = conn, writer
            self._reader_task = asyncio.create_task(
                self._read(reader, writer), name="conveyor-redis-reader"
            )

    async def _read(self, stream: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader(replyError=_error)
        try:
            while True:
                data = await stream.read(READ_SIZE)
                if not data:
                    raise RedisConnectionError("Redis closed the connection")
                parser.feed(data)
                inflight = self._inflight
                while (reply := parser.gets()) is not False:
                    request = inflight[0]
                    replies = request.replies
                    replies.append(reply)
                    if len(replies) == request.count:
                        inflight.popleft()
                        if not request.future.done():
                            request.future.set_result(replies)
                        if request.last:
                            self._writes_out -= 1
                if self._queued and not self._flush_scheduled:
                    self._flush()
        except asyncio.CancelledError:
            if self._writer is writer:
                self._lost(RedisConnectionError("the Redis connection was closed"))
            raise
        except Exception as exc:
            if not isinstance(exc, RedisConnectionError | OSError):
                log.exception("reading from Redis failed")
            if self._writer is writer:  # not a connection already replaced
                self._lost(RedisConnectionError(str(exc) or "reading from Redis failed"))

    def reset(self, reason: str) -> None:
        """Give up on the connection (its replies are late): the next exchange reconnects."""
        self._lost(RedisConnectionError(reason))

    def _lost(self, error: RedisConnectionError) -> None:
        """Fail everything out or queued; the next exchange connects afresh."""
        conn, writer, self._writer, self._conn = self._conn, self._writer, None, None
        if writer is not None:
            writer.close()
        if conn is not None:
            self._dead.append(conn)
        inflight = list(self._inflight)
        self._inflight.clear()
        self._writes_out = 0
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        # written (or being written): Redis may have run them
        _fail(inflight, ReplyLost(f"{error} (after the commands were sent)"))
        self._fail_queued(error)  # held back, never written: they are tried again

    def _fail_queued(self, error: Exception) -> None:
        queued, self._queued, self._outbox = self._queued, [], []
        _fail(queued, error)

    async def close(self) -> None:
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        self._lost(RedisConnectionError("the engine was closed"))
        await self._bury()

    async def _bury(self) -> None:
        dead, self._dead = self._dead, []
        for conn in dead:
            await conn.disconnect(nowait=True)


def _fail(requests: list[_Request], error: Exception) -> None:
    for request in requests:
        if not request.future.done():
            request.future.set_exception(error)
