"""A link to Redis Cluster: each command and script goes to the master owning its key's slot.

Every key of a queue shares one hash tag and every script touches the keys of one tag
(keys.py), so each command and each script names one slot: a script's KEYS[1], a
command's first key. The link keeps the cluster's slot map (CLUSTER SLOTS, asked of any
node it knows) and one shared, automatically pipelined connection (multiplex.py) per
master. A batch is split by node, the parts go out at once, and the replies come back in
the batch's order.

What the cluster answers instead of a reply:
- MOVED: the slot lives elsewhere for good (a resharding or a failover). The slot is
  repointed, the map read again, and the command resent; nothing ran.
- ASK: the slot is migrating and this key is already on the target. ASKING and the command
  go to the named node together; the map stays as it is.
- TRYAGAIN, CLUSTERDOWN, or a slot no master serves: retried with backoff.
- NOSCRIPT: a master without the scripts (new, failed over, restarted). Loaded there, resent.
A lost connection is retried with the same backoff as on one node, after reading the map
again (the node may have failed over); after about 4 s the verb raises EngineUnavailable.

A command without a key sent by `call` (PING, SCRIPT LOAD, SCRIPT FLUSH...) goes to every
master and answers the first master's reply; in a batch it goes to one master.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from conveyor.engines.redis import scripts
from conveyor.engines.redis.client import (
    BACKOFF_S,
    LOST,
    RETRIES,
    SETTINGS,
    Arg,
    Link,
    Op,
    check_loaded,
    outcome_unknown,
    pack,
    pack_op,
    prefix_pattern,
    replayable,
    unavailable,
)
from conveyor.engines.redis.multiplex import Late, Multiplexer, ReplyLost
from conveyor.errors import EngineUnavailable, InvalidInput

SLOTS = 16384
SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_PORT = 6379
# commands with no key: sent to every master by `call`
KEYLESS = frozenset({"PING", "SCRIPT", "INFO", "TIME", "CLUSTER", "CONFIG", "DBSIZE", "FLUSHALL"})
_ASKING = pack(("ASKING",))
_CLUSTER_SLOTS = pack(("CLUSTER", "SLOTS"))
_CLUSTER_INFO = pack(("CLUSTER", "INFO"))


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in SCHEMES


def parse_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The seed nodes of `redis+cluster://[user:password@]host:port[,host:port...]/?options`
    and the connection settings every node shares (redis-py's, from the options)."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    seeds = [_address(text, url) for text in hosts.split(",") if text.strip()]
    if not seeds:
        raise InvalidInput(f"name at least one node of the cluster; got {url!r}", param="engine")
    if parts.path.strip("/") not in ("", "0"):
        raise InvalidInput(
            f"Redis Cluster has database 0 only; got {parts.path!r} in {url!r}", param="engine"
        )
    host, port = seeds[0]
    netloc = f"{userinfo}@" if userinfo else ""
    netloc += f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    scheme = parts.scheme.removesuffix("+cluster")
    node_url = urlunsplit((scheme, netloc, "/0", parts.query, ""))
    pool = BlockingConnectionPool.from_url(node_url, **SETTINGS)
    return seeds, pool.connection_kwargs | {"connection_class": pool.connection_class}


def _address(text: str, url: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    try:
        port = int(port_text) if port_text else DEFAULT_PORT
    except ValueError:
        raise InvalidInput(f"bad node address {text!r} in {url!r}", param="engine") from None
    return host, port


def slot_of(op: Op) -> int | None:
    """The slot an op's key hashes to (a script's KEYS[1], a command's first key), or None
    for a command without a key."""
    name, args = op
    if name is not None:
        key = args[0]
    else:
        if len(args) < 2:
            return None
        command = args[0]
        text = command.decode() if isinstance(command, bytes) else str(command)
        if text.upper() in KEYLESS:
            return None
        key = args[1]
    if isinstance(key, str):
        return key_slot(key.encode())
    if isinstance(key, bytes):
        return key_slot(key)
    return key_slot(str(key).encode())


class _Node:
    """One master (or a seed): its address and its shared connection."""

    __slots__ = ("address", "host", "kwargs", "mux")

    def __init__(self, host: str, port: int, kwargs: dict[str, Any]) -> None:
        self.host = host
        self.address = f"{host}:{port}"
        self.kwargs = kwargs | {"host": host, "port": port}
        self.mux = Multiplexer(self.kwargs)


class ClusterLink(Link):
    """A link to a Redis Cluster, from any of its nodes (the seeds of the URL)."""

    ordered = False

    def __init__(self, url: str) -> None:
        self.url = url
        seeds, self._kwargs = parse_url(url)
        self._nodes: dict[str, _Node] = {}
        self._seeds = [self._node(host, port) for host, port in seeds]
        self._slots: list[_Node | None] = [None] * SLOTS
        self._masters: list[_Node] = []
        self._epoch = 0  # counts the maps read
        self._stale = True  # the map is to be read before the next routing
        self._refreshing = asyncio.Lock()
        self.redirected = {"MOVED": 0, "ASK": 0}  # how often the cluster sent a command on

    # ---- the Link interface ----
    async def open(self) -> None:
        await self.call("PING")
        await self.load_scripts()

    async def load_scripts(self) -> None:
        """Load every script on every master."""
        ops = [(None, ("SCRIPT", "LOAD", source)) for source in scripts.ALL.values()]
        with unavailable():
            for loaded in await self._broadcast(ops):
                check_loaded(loaded)

    async def close(self) -> None:
        for node in self._nodes.values():
            await node.mux.close()

    async def ready(self) -> bool:
        """Every master answers, and says the cluster is ok. A master that does not is
        looked for again in a fresh slot map first: an idle server (one a load balancer
        stopped sending to) would otherwise never see the failover that replaced it."""
        if await self._all_ok():
            return True
        self._stale = True
        try:
            await self._refresh()
        except (*LOST, EngineUnavailable):
            return False
        return await self._all_ok()

    async def _all_ok(self) -> bool:
        masters = self._masters
        if not masters:
            return False
        replies = await asyncio.gather(
            *(n.mux.exchange(_CLUSTER_INFO, 1) for n in masters), return_exceptions=True
        )
        return all(
            not isinstance(reply, BaseException)
            and isinstance(reply[0], bytes)
            and b"cluster_state:ok" in reply[0]
            for reply in replies
        )

    def nodes(self) -> list[dict[str, Any]]:
        known = {node.address: node for node in (*self._masters, *self._seeds)}
        return [node.kwargs for node in known.values()]

    async def call(self, *args: Arg) -> Any:
        op: Op = (None, args)
        if slot_of(op) is None:
            with unavailable():
                replies = [reply for (reply,) in await self._broadcast([op])]
            reply = next((r for r in replies if isinstance(r, ResponseError)), replies[0])
        else:
            (reply,) = await self.send((op,))
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def send(self, ops: Sequence[Op]) -> list[Any]:
        if not ops:
            return []
        try:
            return await self._send(ops)
        except LOST as exc:
            raise EngineUnavailable(f"Redis cannot be reached: {exc}") from exc

    async def scan(self, base: str, cursor: int, count: int) -> tuple[int, list[bytes]]:
        # SCAN names no key: it goes where `base`'s slot lives, as a key under it would
        scan: Op = (None, ("SCAN", cursor, "MATCH", prefix_pattern(base), "COUNT", count))
        with unavailable():
            (reply,) = await self._send([scan], [key_slot(base.encode())])
        if isinstance(reply, ResponseError):
            raise reply
        next_cursor, found = reply
        return int(next_cursor), list(found)

    # ---- routing ----
    async def _send(self, ops: Sequence[Op], slots: list[int | None] | None = None) -> list[Any]:
        """Each op's reply, each sent to the master of its slot (`slots`: the ops' own)."""
        if slots is None:
            slots = [slot_of(op) for op in ops]
        replies: list[Any] = [None] * len(ops)
        todo = list(range(len(ops)))
        asking: dict[int, _Node] = {}
        failure: Exception = EngineUnavailable("Redis Cluster kept redirecting the command")
        wait = False
        for attempt in range(RETRIES + 1):
            if wait:
                await asyncio.sleep(BACKOFF_S[attempt - 1])
                wait = False
            if self._stale:
                try:
                    await self._refresh()
                except LOST as exc:
                    failure, wait = exc, True
                    continue
            groups: dict[_Node, list[int]] = {}
            retry: list[int] = []
            for index in todo:
                node = asking.get(index) or self._route(slots[index])
                if node is None:  # no master serves the slot: the cluster is down or changing
                    failure = EngineUnavailable(f"no Redis Cluster node serves slot {slots[index]}")
                    retry.append(index)
                    self._stale = wait = True
                else:
                    groups.setdefault(node, []).append(index)
            parts = list(groups.items())
            results: list[list[Any] | BaseException]
            if len(parts) == 1:  # the usual case: one queue's keys, one node
                node, indexes = parts[0]
                try:
                    results = [await self._deliver(node, ops, indexes, asking)]
                except LOST as exc:
                    results = [exc]
            else:
                results = await asyncio.gather(
                    *(self._deliver(node, ops, indexes, asking) for node, indexes in parts),
                    return_exceptions=True,
                )
            for (node, indexes), result in zip(parts, results, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, LOST):
                        raise result
                    if isinstance(result, ReplyLost) and not replayable([ops[i] for i in indexes]):
                        raise outcome_unknown(result)
                    failure = result
                    retry.extend(indexes)
                    self._stale = wait = True
                    continue
                for index, reply in zip(indexes, result, strict=True):
                    asking.pop(index, None)
                    if not isinstance(reply, ResponseError):
                        replies[index] = reply
                        continue
                    text = str(reply)
                    if text.startswith("MOVED "):
                        self.redirected["MOVED"] += 1
                        _, slot, address = text.split(" ", 2)
                        self._slots[int(slot)] = self._node_at(address, node)
                        self._stale = True  # most likely a resharding or failover: re-read
                    elif text.startswith("ASK ") and ops[index][0] is not None:
                        # A script's KEYS[1] is its queue's key base, never a key itself:
                        # the source answers ASK from the moment the slot starts migrating,
                        # and on the target the script would see only the keys moved so
                        # far. It waits for the migration to end (then MOVED, or the slot
                        # stays where it was): a resharding pauses the queues it moves.
                        self.redirected["ASK"] += 1
                        failure = EngineUnavailable(
                            f"the slot of {ops[index][1][0]!r} is being migrated"
                        )
                        wait = True
                    elif text.startswith("ASK "):
                        self.redirected["ASK"] += 1
                        asking[index] = self._node_at(text.split(" ", 2)[2], node)
                    elif text.startswith(("TRYAGAIN", "CLUSTERDOWN")):
                        failure = EngineUnavailable(f"Redis Cluster answered {text}")
                        wait = True
                    elif isinstance(reply, NoScriptError):  # nothing ran: load it, resend
                        name = ops[index][0]
                        assert name is not None
                        try:
                            await self._load(node, name)
                        except LOST as exc:
                            failure = exc
                            self._stale = wait = True
                    else:
                        replies[index] = reply
                        continue
                    retry.append(index)
            if not retry:
                return replies
            todo = sorted(retry)
        raise failure

    def _route(self, slot: int | None) -> _Node | None:
        if slot is None:
            return self._masters[0] if self._masters else None
        return self._slots[slot]

    async def _deliver(
        self, node: _Node, ops: Sequence[Op], indexes: list[int], asking: dict[int, _Node]
    ) -> list[Any]:
        """The ops at `indexes` on `node` in one exchange: their replies, in order."""
        if not asking:
            packed = b"".join([pack_op(*ops[i]) for i in indexes])
            return await self._exchange(node, packed, len(indexes))
        chunks: list[bytes] = []
        for index in indexes:
            if index in asking:
                chunks.append(_ASKING)  # applies to the next command on this connection
            chunks.append(pack_op(*ops[index]))
        replies = await self._exchange(node, b"".join(chunks), len(chunks))
        out: list[Any] = []
        position = 0
        for index in indexes:
            if index in asking:
                position += 1  # ASKING's OK
            out.append(replies[position])
            position += 1
        return out

    async def _exchange(self, node: _Node, packed: bytes, count: int) -> list[Any]:
        try:
            return await node.mux.exchange(packed, count)
        except Late:
            # a node that stopped answering (its multiplexer gave the connection up)
            raise EngineUnavailable(f"Redis node {node.address} did not answer in time") from None

    async def _load(self, node: _Node, name: str) -> None:
        (sha,) = await self._exchange(node, pack(("SCRIPT", "LOAD", scripts.ALL[name])), 1)
        if isinstance(sha, ResponseError):
            raise sha

    async def _broadcast(self, ops: Sequence[Op]) -> list[list[Any]]:
        """`ops` on every master at once: each master's replies (errors as values)."""
        packed = b"".join([pack_op(*op) for op in ops])
        failure: Exception = EngineUnavailable("Redis Cluster has no master")
        for attempt in range(RETRIES + 1):
            if attempt:
                await asyncio.sleep(BACKOFF_S[attempt - 1])
            try:
                if self._stale or not self._masters:
                    await self._refresh()
                masters = list(self._masters)
                if masters:
                    return list(
                        await asyncio.gather(
                            *(self._exchange(node, packed, len(ops)) for node in masters)
                        )
                    )
            except LOST as exc:
                failure = exc
                self._stale = True
        raise failure

    # ---- the slot map ----
    def _node(self, host: str, port: int) -> _Node:
        address = f"{host}:{port}"
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = _Node(host, port, self._kwargs)
        return node

    def _node_at(self, address: str, asked: _Node) -> _Node:
        """The node at `host:port` from a redirection (an empty host: the asked node's)."""
        host, _, port = address.strip().rpartition(":")
        return self._node(host or asked.host, int(port))

    async def _refresh(self) -> None:
        """Read the slot map from the first node that answers (masters known, then seeds)."""
        epoch = self._epoch
        async with self._refreshing:
            if self._epoch != epoch:  # read while this caller waited
                return
            self._stale = False  # a redirection seen from now on asks for another read
            failure: Exception = RedisConnectionError("no Redis Cluster node could be reached")
            candidates = {node.address: node for node in (*self._masters, *self._seeds)}
            for node in candidates.values():
                try:
                    (reply,) = await self._exchange(node, _CLUSTER_SLOTS, 1)
                except LOST as exc:
                    failure = exc
                    continue
                if isinstance(reply, ResponseError):
                    failure = EngineUnavailable(f"{node.address} is no Redis Cluster: {reply}")
                    continue
                await self._apply(reply, node)
                return
            self._stale = True
            raise failure

    async def _apply(self, reply: list[Any], asked: _Node) -> None:
        slots: list[_Node | None] = [None] * SLOTS
        masters: dict[str, _Node] = {}
        for entry in reply:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            host = master[0].decode() if isinstance(master[0], bytes) else ""
            node = self._node(host if host not in ("", "?") else asked.host, int(master[1]))
            masters[node.address] = node
            slots[start : end + 1] = [node] * (end + 1 - start)
        gone = [n for n in self._masters if n.address not in masters]
        self._slots = slots
        self._masters = sorted(masters.values(), key=lambda n: n.address)
        self._epoch += 1
        for node in gone:  # no longer a master: its connection has nothing more to carry
            await node.mux.close()
