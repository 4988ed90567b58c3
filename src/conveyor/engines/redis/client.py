"""The Redis connection: one pool, retries across restarts, and scripts called by SHA.

Scripts are loaded once when the engine opens (SCRIPT LOAD) and called with EVALSHA; a
server that lost them (restarted, failed over, or told SCRIPT FLUSH) answers NOSCRIPT, and
the script is loaded again and the call repeated: a NOSCRIPT call ran nothing.

Commands take a lean path: arguments packed here into one buffer and sent on one shared,
automatically pipelined connection (multiplex.py). redis-py's own command path (encoders,
response callbacks, retry and observability hooks) costs several times the round trip
itself, and the hot verbs are one or two round trips each. When the connection fails, the
exchange is tried again on a fresh one (a restarted server included) for up to RETRIES
times, with backoff.

`NodeLink` talks to one server; `cluster.ClusterLink` to a Redis Cluster through the same
`Link` interface, so the engine's modules do not know which they have.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import hiredis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conveyor.engines.redis import scripts
from conveyor.engines.redis.multiplex import Late, Multiplexer, ReplyLost
from conveyor.errors import EngineUnavailable

Arg = str | bytes | int | float
Op = tuple[str | None, tuple[Arg, ...]]  # (script name or None for a command, its arguments)

RETRIES = 8  # with the backoff below: about 4 s of a restarting server before giving up
BACKOFF_S = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0)
DEFAULT_MAX_CONNECTIONS = 64
LOST = (RedisConnectionError, RedisTimeoutError, OSError)

# What may be sent again after its reply was lost: scripts and commands that change
# nothing. Anything else may have run, and running it twice would lease tasks nobody
# holds or answer a stored result with a lost lease; it fails with EngineUnavailable.
READ_ONLY_SCRIPTS = frozenset({"snapshot", "list", "stats", "record_page", "batch_to_cancel"})
READ_ONLY_COMMANDS = frozenset(
    {
        b"PING", b"SCRIPT", b"CLUSTER", b"INFO", b"SCAN", b"EXISTS", b"TYPE",
        b"GET", b"MGET", b"HGET", b"HMGET", b"HGETALL", b"HEXISTS", b"HLEN", b"HKEYS",
        b"ZRANGE", b"ZRANGEBYSCORE", b"ZREVRANGE", b"ZRANGEBYLEX", b"ZSCORE", b"ZCARD",
        b"ZCOUNT", b"ZRANK", b"ZMSCORE", b"LRANGE", b"LLEN", b"SMEMBERS", b"SCARD",
        b"SISMEMBER",
    }
)  # fmt: skip


def replayable(ops: Sequence[Op]) -> bool:
    """Whether `ops` change nothing, so that they may be sent again after a lost reply."""
    for name, args in ops:
        if name is not None:
            if name not in READ_ONLY_SCRIPTS:
                return False
        else:
            command = args[0]
            word = command.encode() if isinstance(command, str) else command
            if not isinstance(word, bytes) or word.upper() not in READ_ONLY_COMMANDS:
                return False
    return True


def outcome_unknown(exc: Exception) -> EngineUnavailable:
    """The error for a change whose reply was lost (it may or may not have been made)."""
    return EngineUnavailable(
        f"the connection to Redis was lost before it answered; the change may or may not"
        f" have been made: {exc}"
    )


SETTINGS: dict[str, Any] = {
    "timeout": 30,
    "socket_keepalive": True,
    "socket_timeout": 30,  # a script over 10,000 tasks takes well under a second
    "socket_connect_timeout": 5,
    "protocol": 2,  # the replies (and pub/sub messages) this engine reads: RESP2's
}


def sha1(source: str) -> str:
    """The SHA Redis names a script by."""
    return hashlib.sha1(source.encode()).hexdigest()


SHAS = {name: sha1(source) for name, source in scripts.ALL.items()}


def pack(args: Sequence[Arg]) -> bytes:
    """One command in the Redis protocol (hiredis's packer, in C). Floats go as their
    shortest repr, which reads back as the same double."""
    packed: bytes = hiredis.pack_command(tuple(args))  # type: ignore[arg-type]
    return packed


def pack_op(name: str | None, args: tuple[Arg, ...]) -> bytes:
    """A batch's entry packed: a command, or script `name` by EVALSHA (args[0] is KEYS[1])."""
    if name is None:
        return pack(args)
    return pack(("EVALSHA", SHAS[name], 1, *args))


def prefix_pattern(base: str) -> str:
    """The SCAN MATCH pattern of every key starting with `base`."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in base) + "*"


def check_loaded(loaded: list[Any]) -> None:
    """The replies to SCRIPT LOAD of every script, in order, name the SHAs expected."""
    if any(isinstance(sha, Exception) for sha in loaded):
        raise next(sha for sha in loaded if isinstance(sha, Exception))
    assert [s.decode() for s in loaded] == list(SHAS.values()), "Redis named a script otherwise"


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
    except LOST as exc:
        raise EngineUnavailable(f"Redis cannot be reached: {exc}") from exc
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Link:
    """The engine's way to Redis: commands, scripts and batches of both.

    Two kinds: `NodeLink` (one server) and `cluster.ClusterLink` (a Redis Cluster, each
    command and script sent to the node owning its key's slot).
    """

    # Whether a batch's commands run in the order given. One server runs a pipeline in
    # order; a cluster sends each node its part at once, so parts may run in any order.
    ordered = True

    async def open(self) -> None:
        """Check the server answers and load every script."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def ready(self) -> bool:
        """Whether Redis answers now (no retries: a readiness probe's question)."""
        raise NotImplementedError

    def nodes(self) -> list[dict[str, Any]]:
        """Connection settings (redis-py's, and `connection_class`) of the servers a pub/sub
        connection may use, best first."""
        raise NotImplementedError

    async def call(self, *args: Arg) -> Any:
        """One command. Raises its ResponseError."""
        raise NotImplementedError

    async def scan(self, base: str, cursor: int, count: int) -> tuple[int, list[bytes]]:
        """One SCAN step over the keys that start with `base` (all share its hash tag)."""
        next_cursor, found = await self.call(
            "SCAN", cursor, "MATCH", prefix_pattern(base), "COUNT", count
        )
        return int(next_cursor), list(found)

    async def send(self, ops: Sequence[Op]) -> list[Any]:
        """A batch's commands and scripts at once: each one's reply or ResponseError."""
        raise NotImplementedError

    async def run(self, name: str, key: str, *args: Arg) -> Any:
        """One script on the keys under `key` (its KEYS[1]). Raises its ResponseError."""
        (reply,) = await self.send(((name, (key, *args)),))
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def batch(self) -> Batch:
        return Batch(self)


class NodeLink(Link):
    """A link to one Redis server: one shared, automatically pipelined connection."""

    def __init__(self, url: str, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self.url = url
        self.pool = BlockingConnectionPool.from_url(
            url, max_connections=max_connections, **SETTINGS
        )
        self.redis = Redis(connection_pool=self.pool)
        # the class too: rediss:// makes it redis-py's SSLConnection
        self.settings = self.pool.connection_kwargs | {
            "connection_class": self.pool.connection_class
        }
        self.mux = Multiplexer(self.settings)

    async def open(self) -> None:
        await self.call("PING")
        await self.load_scripts()

    async def load_scripts(self) -> None:
        batch = self.batch()
        for source in scripts.ALL.values():
            batch.call("SCRIPT", "LOAD", source)
        check_loaded(await batch.run())

    async def close(self) -> None:
        await self.mux.close()
        await self.redis.aclose()
        await self.pool.aclose()

    async def ready(self) -> bool:
        return bool(await self.redis.ping())

    def nodes(self) -> list[dict[str, Any]]:
        return [self.settings]

    async def exchange(self, commands: bytes, count: int, ops: Sequence[Op]) -> list[Any]:
        """Send packed commands at once; their `count` replies (a ResponseError is a reply).

        A connection that fails is opened again and the commands sent again, unless they
        were written already and `ops` (what `commands` packs) change something: then whether
        they ran is unknown, and that is EngineUnavailable at once. The multiplexer's
        watchdog gives up a connection on which a reply is REPLY_TIMEOUT_S late (Late, not
        tried again: the commands may have run)."""
        for attempt in range(RETRIES + 1):
            try:
                return await self.mux.exchange(commands, count)
            except Late as exc:
                raise EngineUnavailable(f"Redis cannot be reached: {exc}") from exc
            except ReplyLost as exc:
                if not replayable(ops):  # asked only on this rare path
                    raise outcome_unknown(exc) from exc
                if attempt == RETRIES:
                    raise EngineUnavailable(f"Redis cannot be reached: {exc}") from exc
            except LOST as exc:
                if attempt == RETRIES:
                    raise EngineUnavailable(f"Redis cannot be reached: {exc}") from exc
            await asyncio.sleep(BACKOFF_S[attempt])
        raise AssertionError("unreachable")

    async def call(self, *args: Arg) -> Any:
        (reply,) = await self.exchange(pack(args), 1, ((None, args),))
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def send(self, ops: Sequence[Op]) -> list[Any]:
        if not ops:
            return []
        packed = b"".join([pack_op(name, args) for name, args in ops])
        replies = await self.exchange(packed, len(ops), ops)
        for index, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):  # nothing ran: load it and run it again
                name, args = ops[index]
                assert name is not None
                await self.call("SCRIPT", "LOAD", scripts.ALL[name])
                (replies[index],) = await self.exchange(pack_op(name, args), 1, (ops[index],))
        return replies


class Batch:
    """Commands and scripts sent in one round trip (not a transaction: each is atomic alone).

    `run` answers each one's reply or the ResponseError it raised, in order.
    """

    def __init__(self, link: Link) -> None:
        self._link = link
        self._ops: list[Op] = []

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
        return await self._link.send(self._ops)
