"""Wake-ups across processes: one pub/sub connection per engine, fanned out to local waiters.

Scripts PUBLISH when work arrives in a queue (`P:w:NAME`), when a task ends or gets events
(`P:t:ID`) and when a callback falls due (`P:cb`). A process subscribes to a channel while
at least one local watch needs it. `watch` returns only once Redis has confirmed the
SUBSCRIBE, so a watch registered before a put cannot miss that put's message.

If the connection drops, the listener reconnects with backoff, subscribes again to every
channel still wanted and wakes every watch: a message may have been missed meanwhile, and a
spurious wake-up costs a waiter one look. A connection that silently stops carrying
anything (a host gone without a reset) is found by a PING every HEALTH_S: with nothing
heard for STALE_AFTER_S it is dropped, which starts the same reconnection.

On Redis Cluster a PUBLISH reaches the subscribers of every node (the cluster bus carries
it), so one connection to any node hears every channel. The link names the nodes it knows
(`Link.nodes`); a connection that cannot be made moves on to the next, so a subscriber
whose node went away settles on another.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio.connection import Connection
from redis.exceptions import RedisError

from conveyor.engines.notifier import Watch
from conveyor.errors import EngineUnavailable

log = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT_S = 10.0
RECONNECT_CAP_S = 1.0
HEALTH_S = 5.0  # a PING this often on a quiet connection
STALE_AFTER_S = 3 * HEALTH_S  # nothing heard for this long: the connection is dead
CONNECT_TIMEOUT_S = 5.0  # connecting includes a handshake, which a dead host never answers


class Subscriber:
    """Owns the subscription connection and its listener task (`start`, then `close`)."""

    def __init__(
        self,
        nodes: Callable[[], Sequence[dict[str, Any]]],
        always: Sequence[bytes],
        on_always: Callable[[bytes], None],
    ) -> None:
        self._nodes = nodes  # connection settings of the servers to try, best first
        self._conn = _connection(nodes()[0])
        self._always = set(always)
        self._on_always = on_always
        self._wanted: dict[bytes, set[Watch]] = {}
        self._pending: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._lock = asyncio.Lock()  # one writer on the connection at a time
        self._connected = False
        self._task: asyncio.Task[None] | None = None
        self._health: asyncio.Task[None] | None = None
        self._heard_at = 0.0  # loop time of the last reply read

    async def start(self) -> None:
        """Connect and subscribe to the channels always listened to."""
        try:
            await self._connect()
        except (RedisError, OSError) as exc:
            raise EngineUnavailable(f"Redis pub/sub cannot be reached: {exc}") from exc
        self._heard_at = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._listen(), name="conveyor-redis-subscriber")
        self._health = asyncio.create_task(self._check_health(), name="conveyor-redis-ping")

    async def close(self) -> None:
        if self._health is not None:
            self._health.cancel()
            await asyncio.wait([self._health])
            self._health = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # it ends cancelled; its exception is not ours
            self._task = None
        for futures in self._pending.values():
            for future in futures:
                future.cancel()
        self._pending.clear()
        self._connected = False
        await self._conn.disconnect()

    @asynccontextmanager
    async def watch(self, channels: Sequence[bytes]) -> AsyncIterator[Watch]:
        """A watch on `channels`, subscribed to before it is handed out."""
        watch = Watch()
        fresh: list[bytes] = []
        waits: list[asyncio.Future[None]] = []
        for channel in dict.fromkeys(channels):
            watchers = self._wanted.get(channel)
            if watchers is None:
                self._wanted[channel] = {watch}
                fresh.append(channel)
            else:
                watchers.add(watch)
                pending = self._pending.get(channel)
                if pending:  # subscribed by another watch, not confirmed yet: wait for it too
                    waits.append(pending[-1])
        try:
            if fresh:
                waits.extend(await self._subscribe(fresh))
            if waits:
                try:
                    await asyncio.wait_for(
                        asyncio.gather(*(asyncio.shield(w) for w in waits)), SUBSCRIBE_TIMEOUT_S
                    )
                except TimeoutError:
                    raise EngineUnavailable(
                        f"Redis did not confirm a subscription within {SUBSCRIBE_TIMEOUT_S:g} s"
                    ) from None
            yield watch
        finally:
            gone: list[bytes] = []
            for channel in dict.fromkeys(channels):
                watchers = self._wanted.get(channel)
                if watchers is not None:
                    watchers.discard(watch)
                    if not watchers:
                        del self._wanted[channel]
                        gone.append(channel)
            if gone:
                await self._send("UNSUBSCRIBE", gone)

    async def _subscribe(self, channels: list[bytes]) -> list[asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        futures = []
        async with self._lock:
            for channel in channels:
                future: asyncio.Future[None] = loop.create_future()
                self._pending.setdefault(channel, deque()).append(future)
                futures.append(future)
            if self._connected:
                await self._write("SUBSCRIBE", channels)
            # else: the listener subscribes to every wanted channel when it reconnects
        return futures

    async def _send(self, command: str, channels: list[bytes]) -> None:
        async with self._lock:
            if self._connected:
                await self._write(command, channels)

    async def _write(self, command: str, channels: list[bytes]) -> None:
        try:
            await self._conn.send_command(command, *channels, check_health=False)
        except (RedisError, OSError) as exc:
            # the listener sees the same failure, reconnects and subscribes again
            log.debug("pub/sub %s failed: %s", command, exc)

    async def _connect(self) -> None:
        async with self._lock:
            await self._reach()
            channels = [*self._always, *self._wanted]
            # a SUBSCRIBE sent before the connection dropped will never be confirmed: only
            # the one sent now will, once per channel
            for channel, futures in list(self._pending.items()):
                if channel in self._wanted and futures:
                    self._pending[channel] = deque([futures.popleft()])
                    for stale in futures:
                        self._pending[channel][0].add_done_callback(_settle_with(stale))
                else:
                    for future in futures:
                        if not future.done():
                            future.set_result(None)
                    del self._pending[channel]
            await self._conn.send_command("SUBSCRIBE", *channels, check_health=False)
            self._connected = True

    async def _reach(self) -> None:
        """Connect to the current node or, failing that, to each other one in turn."""
        try:
            await asyncio.wait_for(self._conn.connect(), CONNECT_TIMEOUT_S)  # type: ignore[no-untyped-call]
            return
        except (RedisError, OSError) as exc:
            failure: RedisError | OSError = exc
        current = (self._conn.host, self._conn.port)
        for kwargs in self._nodes():
            if (kwargs.get("host"), kwargs.get("port")) == current:
                continue
            conn = _connection(kwargs)
            try:
                await asyncio.wait_for(conn.connect(), CONNECT_TIMEOUT_S)  # type: ignore[no-untyped-call]
            except (RedisError, OSError) as exc:
                failure = exc
                await conn.disconnect()
                continue
            self._conn = conn
            log.info("Redis pub/sub moved to %s:%s", conn.host, conn.port)
            return
        raise failure

    async def _listen(self) -> None:
        delay_s = 0.02
        while True:
            try:
                reply = await self._conn.read_response()
            except Exception as exc:  # lost, or unreadable: start afresh either way
                self._connected = False
                log.warning("Redis pub/sub connection lost (%s); reconnecting", exc)
                await self._conn.disconnect()
                while True:
                    await asyncio.sleep(delay_s)
                    try:
                        await self._connect()
                        break
                    except (RedisError, OSError) as again:
                        delay_s = min(delay_s * 2, RECONNECT_CAP_S)
                        log.debug("Redis pub/sub reconnect failed: %s", again)
                delay_s = 0.02
                self._heard_at = asyncio.get_running_loop().time()
                self._wake_all()
                continue
            self._heard_at = asyncio.get_running_loop().time()
            self._dispatch(reply)

    async def _check_health(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(HEALTH_S)
            if not self._connected:
                continue  # the listener is reconnecting
            if loop.time() - self._heard_at > STALE_AFTER_S:
                log.warning("Redis pub/sub heard nothing for %g s; reconnecting", STALE_AFTER_S)
                self._heard_at = loop.time()
                await self._conn.disconnect()  # the listener's read fails and it reconnects
                continue
            await self._send("PING", [])  # answered ["pong", ""] while subscribed

    def _dispatch(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 3:
            return
        kind, channel = reply[0], reply[1]
        if kind == b"message":
            if channel in self._always:
                self._on_always(channel)
            for watch in self._wanted.get(channel, ()):
                watch.wake()
        elif kind == b"subscribe":
            futures = self._pending.get(channel)
            if futures:
                future = futures.popleft()
                if not futures:
                    del self._pending[channel]
                if not future.done():
                    future.set_result(None)

    def _wake_all(self) -> None:
        for channel in self._always:
            self._on_always(channel)
        for watchers in self._wanted.values():
            for watch in watchers:
                watch.wake()


def _connection(connection_kwargs: dict[str, Any]) -> Connection:
    kwargs = dict(connection_kwargs)
    connection_class: type[Connection] = kwargs.pop("connection_class", Connection)
    kwargs["socket_timeout"] = None  # a subscriber waits for messages as long as it takes
    kwargs.pop("retry", None)
    kwargs["protocol"] = 2  # messages as replies to read, not RESP3 pushes
    return connection_class(**kwargs)


def _settle_with(future: asyncio.Future[None]) -> Callable[[asyncio.Future[None]], None]:
    def settle(_: asyncio.Future[None]) -> None:
        if not future.done():
            future.set_result(None)

    return settle
