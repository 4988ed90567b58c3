"""The Redis connection: one pool, retries across restarts, and scripts called by SHA.

Scripts are loaded once when the engine opens (SCRIPT LOAD) and called with EVALSHA; a
server that lost them (restarted, failed over, or told SCRIPT FLUSH) answers NOSCRIPT, and
the script is loaded again and the call repeated: a NOSCRIPT call ran nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from conveyor.engines.redis import scripts
from conveyor.errors import EngineUnavailable

Arg = str | bytes | int | float

RETRIES = 8  # with the backoff below: about 4 s of a restarting server before giving up
DEFAULT_MAX_CONNECTIONS = 64


def sha1(source: str) -> str:
    """The SHA Redis names a script by."""
    return hashlib.sha1(source.encode()).hexdigest()


SHAS = {name: sha1(source) for name, source in scripts.ALL.items()}


@contextmanager
def unavailable() -> Iterator[None]:
    """Turn a lost connection into EngineUnavailable (the HTTP layer's 503), and keep a
    cancellation that redis-py let slip.

    redis-py writes each command under `asyncio.wait_for`, which on Python 3.11 drops a
    cancel that arrives as the write completes; the command then runs to its end and the
    caller would go on as if never cancelled. A cancel still pending afterwards is raised.
    """
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise EngineUnavailable(f"Redis cannot be reached: {exc}") from exc
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Link:
    """The engine's way to Redis: commands, scripts and pipelines of both."""

    def __init__(self, url: str, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self.url = url
        retry = Retry(ExponentialBackoff(cap=1.0, base=0.02), RETRIES)
        self.pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=30,
            retry=retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            socket_keepalive=True,
            socket_timeout=30,  # a script over 10,000 tasks takes well under a second
            socket_connect_timeout=5,
            health_check_interval=30,
            protocol=2,  # the replies (and pub/sub messages) this engine reads: RESP2's
        )
        self.redis = Redis(connection_pool=self.pool)

    async def open(self) -> None:
        """Check the server answers and load every script."""
        with unavailable():
            await self.redis.ping()
            await self.load_scripts()

    async def load_scripts(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for source in scripts.ALL.values():
            pipe.script_load(source)
        loaded = await pipe.execute()
        assert list(map(_text, loaded)) == list(SHAS.values()), "Redis named a script otherwise"

    async def close(self) -> None:
        await self.redis.aclose()
        await self.pool.aclose()

    async def call(self, *args: Arg) -> Any:
        """One command."""
        with unavailable():
            return await self.redis.execute_command(*args)  # type: ignore[no-untyped-call]

    async def run(self, name: str, key: str, *args: Arg) -> Any:
        """One script on the keys under `key` (its KEYS[1])."""
        with unavailable():
            try:
                return await self.redis.evalsha(SHAS[name], 1, key, *args)
            except NoScriptError:
                await self.redis.script_load(scripts.ALL[name])
                return await self.redis.evalsha(SHAS[name], 1, key, *args)

    def batch(self) -> Batch:
        return Batch(self)


class Batch:
    """Commands and scripts sent in one round trip (not a transaction: each is atomic alone).

    `run` answers each one's reply or the ResponseError it raised, in order.
    """

    def __init__(self, link: Link) -> None:
        self._link = link
        self._ops: list[tuple[str | None, tuple[Arg, ...]]] = []

    def __len__(self) -> int:
        return len(self._ops)

    def call(self, *args: Arg) -> int:
        self._ops.append((None, args))
        return len(self._ops) - 1

    def script(self, name: str, key: str, *args: Arg) -> int:
        self._ops.append((name, (key, *args)))
        return len(self._ops) - 1

    async def run(self) -> list[Any]:
        if not self._ops:
            return []
        redis = self._link.redis
        with unavailable():
            pipe = redis.pipeline(transaction=False)
            for name, args in self._ops:
                if name is None:
                    pipe.execute_command(*args)
                else:
                    pipe.evalsha(SHAS[name], 1, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            for index, reply in enumerate(replies):
                if isinstance(reply, NoScriptError):  # nothing ran: load it and run it again
                    name, args = self._ops[index]
                    assert name is not None
                    await redis.script_load(scripts.ALL[name])
                    try:
                        replies[index] = await redis.evalsha(SHAS[name], 1, *args)
                    except RedisError as exc:
                        if isinstance(exc, RedisConnectionError | RedisTimeoutError):
                            raise
                        replies[index] = exc
        return replies


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
