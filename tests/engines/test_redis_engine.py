"""The Redis engine's internals: scripts reloaded, the key layout, reconnecting, no KEYS.

The conformance suite checks what the engine does; these check how it does it on Redis.
They talk to the test Redis server (CONVEYOR_TEST_REDIS), each under a prefix of its own.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from conveyor.domain.events import EventSpec
from conveyor.domain.queues import QueueConfig
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import TaskError, TaskResult, TaskSpec
from conveyor.engines import create_engine
from conveyor.engines.engine import Record
from conveyor.engines.redis import RedisEngine
from conveyor.engines.redis import subscriber as subscriber_module
from conveyor.engines.redis.client import replayable
from conveyor.engines.redis.keys import hash_tag
from conveyor.engines.redis.subscriber import Subscriber
from conveyor.errors import EngineUnavailable
from conveyor.service.tasks import TaskService
from tests.conftest import REDIS_URL, redis_url
from tests.engines._redis_faults import reply_lost_once

OK = TaskResult(status_code=200, body={"ok": True})
SOURCE = Path(__file__).parents[2] / "src" / "conveyor" / "engines" / "redis"
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


@pytest.fixture
async def engine() -> AsyncIterator[RedisEngine]:
    url = redis_url() + f"&client_name=conveyor-{secrets.token_hex(4)}"
    engine = create_engine(url)
    assert isinstance(engine, RedisEngine)
    await engine.open()
    yield engine
    await engine.close()


def _prefix(engine: RedisEngine) -> str:
    return engine._keys.prefix


class Monitor:
    """MONITOR on a connection of its own: every command Redis runs, as lists of strings."""

    def __init__(self) -> None:
        self._raw: list[bytes] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Monitor:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", 6379)
        self._writer.write(b"*1\r\n$7\r\nMONITOR\r\n")
        await self._writer.drain()
        assert await self._reader.readuntil(b"\r\n") == b"+OK\r\n"
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        # other clients' traffic shows too: read in chunks, parse lines only when asked
        pending = b""
        while True:
            chunk = await self._reader.read(1 << 16)
            if not chunk:
                return
            *lines, pending = (pending + chunk).split(b"\r\n")
            self._raw.extend(lines)

    @property
    def lines(self) -> list[tuple[str, list[str]]]:
        """(source, [command, args...]) per command seen: `lua` for a script's commands."""
        parsed = []
        for raw in self._raw:
            line = raw.decode(errors="replace")
            if "[" not in line:
                continue
            source = line[line.index("[") + 1 : line.index("]")].split(" ", 1)[-1]
            parsed.append((source, [_unquote(t) for t in _QUOTED.findall(line)]))
        return parsed

    async def __aexit__(self, *_: object) -> None:
        await asyncio.sleep(0.2)  # let the last lines arrive
        assert self._task is not None
        self._task.cancel()
        await asyncio.wait([self._task])
        self._writer.close()
        await self._writer.wait_closed()

    def scripts(self, prefix: str) -> list[tuple[list[str], list[list[str]]]]:
        """Each EVALSHA on a key under `prefix`, with the commands it ran."""
        found: list[tuple[list[str], list[list[str]]]] = []
        current: list[list[str]] | None = None
        for source, words in self.lines:
            if not words:
                continue
            if source == "lua":
                if current is not None:
                    current.append(words)
                continue
            current = None
            if words and words[0].upper() == "EVALSHA" and words[3].startswith(prefix + ":"):
                current = []
                found.append((words, current))
        return found


def _unquote(token: str) -> str:
    return re.sub(r"\\(x[0-9a-f]{2}|.)", lambda m: _escape(m.group(1)), token)


def _escape(code: str) -> str:
    if code.startswith("x") and len(code) == 3:
        return chr(int(code[1:], 16))
    return {"n": "\n", "r": "\r", "t": "\t"}.get(code, code)


NO_KEYS = {"TIME", "PUBLISH"}
ALL_KEYS = {"DEL", "EXISTS", "UNLINK"}


def _keys_of(command: list[str]) -> list[str]:
    """The keys a command (as the engine's scripts use them) touches."""
    name = command[0].upper()
    if name in NO_KEYS:
        return []
    if name in ALL_KEYS:
        return command[1:]
    return command[1:2]


async def _workload(engine: RedisEngine) -> None:
    """Every kind of script: put, take, complete, fail, heartbeat, cancel, requeue, events,
    sweep, batches, callbacks, records, listing, stats."""
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="a", max_attempts=1))
    await service.put_many(
        [TaskSpec(queue="a", data=i, group=f"g{i % 2}", batch_id="b1") for i in range(4)]
    )
    await service.put(TaskSpec(queue="b", callback_url="https://example.com/hook"))
    await service.put(TaskSpec(queue="b", task_id="mine", delay_s=0.01, timeout_s=0.02))
    first, second, third = await service.take(["a"], size=3)
    await service.append_events(first.task_id, first.lease_id or "", [EventSpec(data=1)])
    await engine.list_events(first.task_id)
    await engine.heartbeat(first.task_id, first.lease_id or "")
    await service.complete(first.task_id, first.lease_id or "", OK)
    await service.fail(second.task_id, second.lease_id or "", TaskError(message="no"))
    await service.requeue(second.task_id)
    await service.cancel(third.task_id)
    await service.take(["a", "b"], strategy="fair", size=5)
    await engine.cancel_batch("b1")
    await engine.batch_counts("b1")
    await engine.batch_tasks("b1")
    await asyncio.sleep(0.05)
    await engine.sweep()
    await engine.claim_callbacks(10, 5.0)
    await engine.list_tasks("a")
    await engine.queue_stats("a")
    record = await engine.put_record(Record("batch", "r1", "p", 1.0, b"{}", active=True))
    await engine.replace_record(record, 1)
    await engine.list_records("batch", "p")
    await engine.delete_record("batch", "r1")
    await engine.obliterate_queue("b", force=True)


async def test_every_key_a_script_touches_shares_its_hash_tag(engine: RedisEngine) -> None:
    async with Monitor() as monitor:
        await _workload(engine)
    scripts = monitor.scripts(_prefix(engine))
    assert len(scripts) > 20
    for call, commands in scripts:
        tag = hash_tag(call[3])  # KEYS[1]: a queue's or a record kind's base, or the index
        assert tag.startswith(("q:", "r:")) or call[3] == f"{_prefix(engine)}:taskq", call[3]
        for command in commands:
            for key in _keys_of(command):
                assert hash_tag(key) == tag, f"{command} in a script on {call[3]}"


async def test_every_key_is_a_queues_a_record_kinds_or_one_of_three(
    engine: RedisEngine,
) -> None:
    await _workload(engine)
    prefix = _prefix(engine)
    globals_ = {f"{prefix}:queues", f"{prefix}:taskq", f"{prefix}:batchq"}
    keys = [k.decode() for k in await engine._p.link.call("KEYS", f"{prefix}:*")]
    assert keys
    for key in keys:
        assert key in globals_ or hash_tag(key).startswith(("q:", "r:")), key


async def test_hot_verbs_use_no_keys_or_scan(engine: RedisEngine) -> None:
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="q"))
    async with Monitor() as monitor:
        await service.put_many([TaskSpec(queue="q") for _ in range(3)])
        for task in await service.take(["q"], size=3):
            await service.complete(task.task_id, task.lease_id or "", OK)
        await engine.sweep()
    # MONITOR shows every client of the server: keep the commands on this engine's keys
    prefix = _prefix(engine)
    commands = {
        words[0].upper() for _, words in monitor.lines if words and any(prefix in w for w in words)
    }
    assert "EVALSHA" in commands
    assert not commands & {"KEYS", "SCAN"}, commands


def test_the_source_never_sends_keys() -> None:
    for path in SOURCE.glob("*.py"):
        text = path.read_text()
        # KEYS[1] in Lua is the script's key array; the command would be a string
        assert not re.search(r"""['"]KEYS['"]""", text), path


async def test_scripts_are_loaded_again_after_script_flush(engine: RedisEngine) -> None:
    service = TaskService(engine)
    await service.put(TaskSpec(queue="q"))
    await engine._p.link.call("SCRIPT", "FLUSH")  # as a restarted server would have them
    put = await service.put(TaskSpec(queue="q"))
    (task, *_) = await service.take(["q"], size=2)
    done = await service.complete(task.task_id, task.lease_id or "", OK)
    assert done.status is TaskStatus.SUCCEEDED
    assert (await engine.get_task(put.task_id)).status in (TaskStatus.QUEUED, TaskStatus.RUNNING)
    # and in a pipeline of several scripts (a sweep over queues, a put across queues)
    await engine._p.link.call("SCRIPT", "FLUSH")
    await service.put(TaskSpec(queue="other"))
    await engine.sweep()
    assert [t.queue for t in await service.take(["q", "other"], size=5)] == ["other"]


async def _client_ids(name: str) -> list[str]:
    admin = Redis.from_url(REDIS_URL)
    try:
        return [c["id"] for c in await admin.client_list() if c.get("name") == name]
    finally:
        await admin.aclose()


async def _kill(client_id: str) -> None:
    admin = Redis.from_url(REDIS_URL)
    try:
        await admin.client_kill_filter(_id=client_id)
    finally:
        await admin.aclose()


async def test_verbs_and_wake_ups_carry_on_after_the_connections_are_killed(
    engine: RedisEngine,
) -> None:
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="q"))
    await service.put(TaskSpec(queue="q"))
    name = engine._p.link.nodes()[0]["client_name"]
    async with engine.watch(["q"]) as watch:
        ids = await _client_ids(name)
        assert len(ids) >= 2  # a pooled connection and the subscriber
        for client_id in ids:
            await _kill(client_id)
        # a command on a killed pooled connection is sent again on a new one
        assert len(await service.take(["q"])) == 1
        await asyncio.sleep(0.3)  # the subscriber reconnects; it wakes every watch once
        await watch.wait(0.5)
        await service.put(TaskSpec(queue="q"))  # heard through the new subscription
        assert await watch.wait(2.0)
    assert len(await _client_ids(name)) >= 2


async def test_open_fails_clearly_when_redis_is_unreachable() -> None:
    engine = create_engine("redis://127.0.0.1:1/0?socket_connect_timeout=0.2")
    with pytest.raises(EngineUnavailable, match="Redis cannot be reached"):
        await engine.open()
    assert not await engine.ready()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _start_redis(port: int) -> asyncio.subprocess.Process:
    """A private redis-server that keeps nothing, as the test machine's does."""
    server = await asyncio.create_subprocess_exec(
        *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
        *("--save", "", "--appendonly", "no"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return server
    server.kill()
    await server.wait()
    raise AssertionError("redis-server did not start")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
async def test_the_engine_carries_on_after_redis_restarts() -> None:
    port = _free_port()
    server = await _start_redis(port)
    engine = create_engine(f"redis://127.0.0.1:{port}/0")
    try:
        await engine.open()
        service = TaskService(engine)
        await service.put(TaskSpec(queue="q"))
        async with engine.watch(["q"]) as watch:
            server.terminate()
            await server.wait()
            server = await _start_redis(port)  # nothing persisted: an empty server
            await service.register_queue(QueueConfig(name="q"))  # connections and scripts anew
            await asyncio.sleep(0.5)  # the subscriber reconnects and wakes every watch once
            await watch.wait(0.5)
            put = await service.put(TaskSpec(queue="q"))
            assert await watch.wait(2.0)
        (task,) = await service.take(["q"])
        assert task.task_id == put.task_id
        assert await engine.ready()
    finally:
        await engine.close()
        server.terminate()
        await server.wait()


async def test_a_take_whose_reply_is_lost_is_not_sent_again(
    engine: RedisEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="q", max_attempts=1))
    for _ in range(2):
        await service.put(TaskSpec(queue="q"))
    dropped = reply_lost_once(monkeypatch, "take")
    # sending it again would lease a second task: the first one's lease went to nobody
    with pytest.raises(EngineUnavailable, match="may or may not"):
        await service.take(["q"], size=1)
    monkeypatch.undo()
    assert len(dropped) == 1
    stats = await engine.queue_stats("q")
    assert (stats.total(TaskStatus.RUNNING), stats.total(TaskStatus.QUEUED)) == (1, 1)


async def test_a_complete_whose_reply_is_lost_is_not_answered_lease_lost(
    engine: RedisEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = TaskService(engine)
    await service.put(TaskSpec(queue="q"))
    (task,) = await service.take(["q"])
    reply_lost_once(monkeypatch, "settle")
    # sent again, the complete would find its own result and answer 409 (lease lost)
    with pytest.raises(EngineUnavailable, match="may or may not"):
        await service.complete(task.task_id, task.lease_id or "", OK)
    monkeypatch.undo()
    stored = await engine.get_task(task.task_id)
    assert stored.status is TaskStatus.SUCCEEDED
    assert stored.result == OK


async def test_a_read_whose_reply_is_lost_is_sent_again(
    engine: RedisEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = TaskService(engine)
    await service.put(TaskSpec(queue="q"))
    dropped = reply_lost_once(monkeypatch, "stats")
    stats = await engine.queue_stats("q")
    assert dropped
    assert stats.total(TaskStatus.QUEUED) == 1


def test_only_what_changes_nothing_is_replayable() -> None:
    assert replayable([("snapshot", ("k",)), (None, ("HGET", "k", "f")), (None, (b"zrange", "k"))])
    assert not replayable([("snapshot", ("k",)), ("take", ("k",))])
    assert not replayable([(None, ("HSET", "k", "f", "v"))])


class _Proxy:
    """A TCP relay to the test Redis whose connections can go silent (a host gone without
    a reset): `silence()` makes the connections open now drop every byte."""

    def __init__(self) -> None:
        self.connections = 0
        self._silenced: list[list[bool]] = []
        self._writers: list[asyncio.StreamWriter] = []

    def silence(self) -> None:
        for flag in self._silenced:
            flag[0] = True

    async def __aenter__(self) -> _Proxy:
        target = urlsplit(REDIS_URL)
        self._target = (target.hostname or "127.0.0.1", target.port or 6379)
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.sleep(0.05)  # the relays see their streams end

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        silent = [False]
        self._silenced.append(silent)
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._writers += [writer, upstream_writer]

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                if not silent[0]:  # silent: bytes vanish, nothing is closed
                    sink.write(data)
            sink.close()

        await asyncio.gather(
            pump(reader, upstream_writer), pump(upstream_reader, writer), return_exceptions=True
        )


async def test_a_pub_sub_connection_gone_silent_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(subscriber_module, "HEALTH_S", 0.05)
    monkeypatch.setattr(subscriber_module, "STALE_AFTER_S", 0.3)
    async with _Proxy() as proxy:
        node = {"host": "127.0.0.1", "port": proxy.port}
        subscriber = Subscriber(lambda: [node], [b"always"], lambda _: None)
        await subscriber.start()
        try:
            async with subscriber.watch([b"channel"]) as watch:
                assert proxy.connections == 1
                proxy.silence()  # a message published now would never arrive
                # the PINGs go unanswered: the connection is dropped and made again, and
                # every watch woken, since it may have missed a message
                assert await watch.wait(5.0)
                assert proxy.connections == 2
        finally:
            await subscriber.close()
