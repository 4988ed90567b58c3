"""The Redis engine on Redis Cluster: routing by slot, batches across nodes, redirections,
scripts lost, pub/sub across nodes, and a node going away.

The conformance suite runs on the session's three-node cluster too (`redis-cluster` in
tests/conftest.py); these check how the link copes with what only a cluster does. Tests
that kill a node use a cluster of their own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.crc import key_slot

from conveyor.domain.queues import QueueConfig
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import TaskResult, TaskSpec
from conveyor.engines import create_engine
from conveyor.engines.redis import RedisEngine
from conveyor.engines.redis.client import Op
from conveyor.engines.redis.cluster import ClusterLink, parse_url, slot_of
from conveyor.errors import EngineUnavailable, InvalidInput
from conveyor.service.tasks import TaskService
from tests._cluster import Cluster, running_cluster
from tests.conftest import REDIS_URL, redis_cluster, redis_cluster_url, require_server
from tests.engines._redis_faults import reply_lost_once

OK = TaskResult(status_code=200, body={"ok": True})
QUEUES = [f"q{i}" for i in range(12)]  # enough names to land on every node


@pytest.fixture
def cluster() -> Cluster:
    return redis_cluster()


async def _open(url: str) -> RedisEngine:
    engine = create_engine(url)
    assert isinstance(engine, RedisEngine)
    await engine.open()
    return engine


@pytest.fixture
async def engine(cluster: Cluster) -> AsyncIterator[RedisEngine]:
    engine = await _open(redis_cluster_url())
    yield engine
    await engine.close()


def _link(engine: RedisEngine) -> ClusterLink:
    link = engine._p.link
    assert isinstance(link, ClusterLink)
    return link


def _owner(link: ClusterLink, slot: int) -> int:
    """The port of the node the link sends `slot` to."""
    node = link._slots[slot]
    assert node is not None
    return int(node.address.rpartition(":")[2])


def _base(engine: RedisEngine, queue: str) -> str:
    return engine._keys.queue(queue)


def _queue_on(engine: RedisEngine, cluster: Cluster, port: int, avoid: bool = False) -> str:
    """A queue name whose keys live on the node at `port` (or, with `avoid`, elsewhere)."""
    for i in range(1000):
        name = f"n{i}"
        if (cluster.node_of(_base(engine, name)) == port) != avoid:
            return name
    raise AssertionError(f"no queue name lands {'off' if avoid else 'on'} node {port}")


# ---- the URL ----
def test_the_cluster_url_names_seeds_and_shares_options() -> None:
    seeds, kwargs = parse_url("redis+cluster://:secret@10.0.0.1:7000,[::1]:7001,h3/?client_name=x")
    assert seeds == [("10.0.0.1", 7000), ("::1", 7001), ("h3", 6379)]
    assert kwargs["password"] == "secret"
    assert kwargs["client_name"] == "x"
    with pytest.raises(InvalidInput, match="database 0 only"):
        create_engine("redis+cluster://127.0.0.1:7000/3")
    with pytest.raises(InvalidInput, match="at least one node"):
        create_engine("redis+cluster:///")
    with pytest.raises(InvalidInput, match=r"redis\+cluster://"):
        create_engine("rediscluster://127.0.0.1:7000")


def test_a_command_routes_by_its_first_key_and_a_script_by_its_keys_1() -> None:
    assert slot_of(("put", ("p:{q:a}:", "x"))) == key_slot(b"q:a")
    assert slot_of((None, ("HGET", "p:{q:a}:meta", "paused"))) == key_slot(b"q:a")
    assert slot_of((None, ("HGET", "p:taskq", "id"))) == key_slot(b"p:taskq")
    assert slot_of((None, ("PING",))) is None
    assert slot_of((None, ("SCRIPT", "LOAD", "return 1"))) is None


# ---- routing ----
async def test_queues_spread_over_the_nodes_and_every_verb_finds_its_node(
    engine: RedisEngine, cluster: Cluster
) -> None:
    service = TaskService(engine)
    for name in QUEUES:
        await service.register_queue(QueueConfig(name=name))
    put = await service.put_many([TaskSpec(queue=name, data=name) for name in QUEUES])
    holders = {cluster.node_of(_base(engine, name)) for name in QUEUES}
    assert len(holders) >= 2, holders
    stored = {port: keys for port, keys in cluster.keys(f"{engine._keys.prefix}:*").items()}
    assert sum(bool(keys) for keys in stored.values()) >= 2, stored
    # every key of a queue is on the node its slot says
    for port, keys in stored.items():
        for key in keys:
            assert cluster.node_of(key.decode()) == port, key
    taken = await service.take(QUEUES, size=len(QUEUES))
    assert sorted(t.task_id for t in taken) == sorted(put)
    for task in taken:
        await service.complete(task.task_id, task.lease_id or "", OK)
    for task_id in put:
        assert (await engine.get_task(task_id)).status is TaskStatus.SUCCEEDED
    assert [q.name for q in await engine.list_queues()] == sorted(QUEUES)
    assert await engine.ready()


async def test_a_batch_across_nodes_answers_in_its_own_order(
    engine: RedisEngine, cluster: Cluster
) -> None:
    link = _link(engine)
    names = [f"b{i}" for i in range(12)]
    batch = link.batch()
    for i, name in enumerate(names):
        batch.call("SET", f"{_base(engine, name)}x", i)
        batch.call("GET", f"{_base(engine, name)}x")
        batch.call("HGET", f"{_base(engine, name)}meta", "nothing")
    batch.call("LPUSH", f"{_base(engine, names[0])}x", 1)  # an error reply, in its place
    replies = await batch.run()
    assert replies[:-1] == [r for i in range(12) for r in (b"OK", str(i).encode(), None)]
    assert "WRONGTYPE" in str(replies[-1])
    nodes = {cluster.node_of(f"{_base(engine, name)}x") for name in names}
    assert len(nodes) >= 2


async def test_a_put_across_queues_on_several_nodes(engine: RedisEngine, cluster: Cluster) -> None:
    service = TaskService(engine)
    ports = cluster.ports
    names = [_queue_on(engine, cluster, port) for port in ports]
    for name in names:
        await service.register_queue(QueueConfig(name=name))
    specs = [TaskSpec(queue=name, task_id=f"id-{name}") for name in names]
    put = await service.put_many(specs)
    assert [(await engine.get_task(task_id)).queue for task_id in put] == names
    assert await service.put_many(specs) == put  # client-supplied ids: idempotent
    assert len(await service.take(names, size=10)) == len(names)


# ---- redirections ----
async def test_a_slot_moved_to_another_node_is_followed(
    engine: RedisEngine, cluster: Cluster
) -> None:
    service = TaskService(engine)
    name = _queue_on(engine, cluster, cluster.ports[0])
    await service.register_queue(QueueConfig(name=name))
    first = await service.put(TaskSpec(queue=name))
    slot = key_slot(_base(engine, name).encode())
    link = _link(engine)
    epoch = link._epoch
    cluster.move_slot(slot, cluster.ports[1])
    try:
        # the link still sends to the old node, which answers MOVED
        assert _owner(link, slot) == cluster.ports[0]
        second = await service.put(TaskSpec(queue=name))
        assert link.redirected["MOVED"] > 0
        assert link._epoch > epoch  # the map was read again
        assert _owner(link, slot) == cluster.ports[1]
        taken = await service.take([name], size=5)
        assert {t.task_id for t in taken} == {first.task_id, second.task_id}
        for task in taken:
            await service.complete(task.task_id, task.lease_id or "", OK)
        await engine.sweep()
        assert await engine.obliterate_queue(name) == 2  # SCAN on the node now holding it
        assert not any(keys for keys in cluster.keys(f"{_base(engine, name)}*").values())
    finally:
        cluster.move_slot(slot, cluster.ports[0])


async def test_a_stale_map_is_corrected_by_moved(engine: RedisEngine, cluster: Cluster) -> None:
    service = TaskService(engine)
    name = _queue_on(engine, cluster, cluster.ports[0])
    slot = key_slot(_base(engine, name).encode())
    link = _link(engine)
    wrong = next(n for n in link._masters if not n.address.endswith(f":{cluster.ports[0]}"))
    link._slots[slot] = wrong  # as if the map were read before a resharding
    put = await service.put(TaskSpec(queue=name))
    assert link.redirected["MOVED"] > 0
    assert link._slots[slot] is not wrong
    assert (await engine.get_task(put.task_id)).queue == name


async def test_a_script_waits_while_its_slot_migrates(
    engine: RedisEngine, cluster: Cluster
) -> None:
    service = TaskService(engine)
    name = _queue_on(engine, cluster, cluster.ports[0])
    await service.register_queue(QueueConfig(name=name))
    first = await service.put(TaskSpec(queue=name))
    slot = key_slot(_base(engine, name).encode())
    link = _link(engine)
    # keys moved, slot still migrating: the source answers ASK to every script, whose
    # KEYS[1] is no key; run on the target, a script could see half a queue
    cluster.move_slot(slot, cluster.ports[2], finish=False)
    finished = False
    try:
        put = asyncio.create_task(service.put(TaskSpec(queue=name)))
        await asyncio.sleep(0.3)
        assert not put.done()  # waiting for the migration to end
        assert link.redirected["ASK"] > 0
        cluster.finish_move(slot, cluster.ports[2])
        finished = True
        second = await put  # MOVED to the new owner, then run there
        assert link.redirected["MOVED"] > 0
        assert _owner(link, slot) == cluster.ports[2]
        taken = await service.take([name], size=5)
        assert {t.task_id for t in taken} == {first.task_id, second.task_id}
        for task in taken:
            done = await service.complete(task.task_id, task.lease_id or "", OK)
            assert done.status is TaskStatus.SUCCEEDED
    finally:
        if not finished:
            cluster.finish_move(slot, cluster.ports[2])
        cluster.move_slot(slot, cluster.ports[0])


async def test_a_slot_that_only_starts_migrating_keeps_its_scripts_on_the_source(
    engine: RedisEngine, cluster: Cluster
) -> None:
    service = TaskService(engine)
    name = _queue_on(engine, cluster, cluster.ports[0])
    await service.register_queue(QueueConfig(name=name))
    await service.put(TaskSpec(queue=name))
    (task,) = await service.take([name])
    slot = key_slot(_base(engine, name).encode())
    source, target = cluster.ports[0], cluster.ports[1]
    with cluster.client(source) as src, cluster.client(target) as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.node_id(source))
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.node_id(target))
    try:
        complete = asyncio.create_task(service.complete(task.task_id, task.lease_id or "", OK))
        await asyncio.sleep(0.3)
        assert not complete.done()  # not run on the target, where no key of the queue is
    finally:  # the resharding is called off: the slot stays on the source
        with cluster.client(source) as src, cluster.client(target) as dst:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
            src.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
    assert (await complete).status is TaskStatus.SUCCEEDED
    assert not any(cluster.keys(f"{_base(engine, name)}*")[target] or [])


async def test_scripts_are_loaded_again_on_the_node_that_lost_them(
    engine: RedisEngine, cluster: Cluster
) -> None:
    service = TaskService(engine)
    names = [_queue_on(engine, cluster, port) for port in cluster.ports]
    await service.put_many([TaskSpec(queue=name) for name in names])
    await _link(engine).call("SCRIPT", "FLUSH")  # every master, as restarted ones would be
    await service.put_many([TaskSpec(queue=name) for name in names])
    assert len(await service.take(names, size=10)) == 2 * len(names)
    with cluster.client(cluster.ports[1]) as client:
        client.execute_command("SCRIPT", "FLUSH")  # one master only
    await engine.sweep()
    assert (await engine.queue_stats(names[1])).levels[0].counts[TaskStatus.RUNNING] == 2


# ---- pub/sub ----
async def test_a_put_on_another_node_wakes_a_watcher(engine: RedisEngine, cluster: Cluster) -> None:
    subscribed = engine._p.subscriber._conn.port
    name = _queue_on(engine, cluster, int(subscribed), avoid=True)
    other = await _open(cluster.url(engine._keys.prefix))  # another server, same store
    try:
        await TaskService(other).register_queue(QueueConfig(name=name))
        async with engine.watch([name]) as watch:
            put = await TaskService(other).put(TaskSpec(queue=name))  # PUBLISH on another node
            assert await watch.wait(5.0)
        async with engine.watch_task(put.task_id) as watch:
            (task,) = await TaskService(other).take([name])
            await TaskService(other).complete(task.task_id, task.lease_id or "", OK)
            assert await watch.wait(5.0)
    finally:
        await other.close()


# ---- a node goes away (a cluster of this module's own; the test that kills comes last) ----
@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("own-cluster")) as cluster:
        yield cluster


async def test_open_finds_the_cluster_from_any_seed_that_answers(own_cluster: Cluster) -> None:
    dead = own_cluster.url("seeds").replace("redis+cluster://", "redis+cluster://127.0.0.1:1,")
    engine = await _open(dead)
    try:
        await TaskService(engine).put(TaskSpec(queue="q"))
        assert await engine.ready()
    finally:
        await engine.close()


async def test_a_lost_node_fails_its_verbs_and_pub_sub_moves_to_another(
    own_cluster: Cluster,
) -> None:
    cluster = own_cluster
    engine = await _open(cluster.url("lost"))
    try:
        service = TaskService(engine)
        subscribed = int(engine._p.subscriber._conn.port)
        alive = _queue_on(engine, cluster, subscribed, avoid=True)
        doomed = _queue_on(engine, cluster, subscribed)
        await service.put_many([TaskSpec(queue=alive), TaskSpec(queue=doomed)])
        async with engine.watch([alive]) as watch:
            cluster.kill(subscribed)
            # the subscriber reconnects elsewhere and wakes every watch once
            assert await watch.wait(5.0)
            assert int(engine._p.subscriber._conn.port) != subscribed
            # the other nodes serve their queues until the cluster marks the node failed
            (task,) = await service.take([alive])
            await service.complete(task.task_id, task.lease_id or "", OK)
            started = time.monotonic()
            with pytest.raises(EngineUnavailable):
                await service.take([doomed])
            assert time.monotonic() - started < 15
            assert not await engine.ready()
            # a message published on a node still up reaches the moved subscription
            live = next(p for p in cluster.ports if p != subscribed)
            with cluster.client(live) as client:
                client.publish(f"lost:w:{alive}", "")
            assert await watch.wait(5.0)
    finally:
        await engine.close()


async def test_open_fails_clearly_when_no_node_answers() -> None:
    engine = create_engine("redis+cluster://127.0.0.1:1/?socket_connect_timeout=0.2")
    started = asyncio.get_running_loop().time()
    with pytest.raises(EngineUnavailable, match="Redis cannot be reached"):
        await engine.open()
    assert asyncio.get_running_loop().time() - started < 10
    assert not await engine.ready()


async def test_a_server_without_cluster_mode_is_refused_clearly() -> None:
    require_server("Redis", REDIS_URL)
    parts = urlsplit(REDIS_URL)
    engine = create_engine(f"redis+cluster://{parts.hostname}:{parts.port or 6379}/")
    with pytest.raises(EngineUnavailable, match="is no Redis Cluster"):
        await engine.open()


async def test_a_take_whose_reply_is_lost_is_not_sent_again_on_a_cluster(
    engine: RedisEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="q", max_attempts=1))
    for _ in range(2):
        await service.put(TaskSpec(queue="q"))
    reply_lost_once(monkeypatch, "take")
    with pytest.raises(EngineUnavailable, match="may or may not"):
        await service.take(["q"], size=1)
    monkeypatch.undo()
    stats = await engine.queue_stats("q")
    assert (stats.total(TaskStatus.RUNNING), stats.total(TaskStatus.QUEUED)) == (1, 1)


async def test_a_put_writes_the_task_index_before_the_tasks(
    engine: RedisEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the index lives on some node, the queue maybe on another: sent in one batch, the two
    # parts would run in either order, and a task could be taken before its id is found
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="q"))
    await service.put(TaskSpec(queue="q"))  # the queue's settings are cached by now
    link = _link(engine)
    sent: list[list[str]] = []
    original = link.send

    async def send(ops: Sequence[Op]) -> list[Any]:
        sent.append([name or str(args[0]) for name, args in ops])
        return await original(ops)

    monkeypatch.setattr(link, "send", send)
    await service.put(TaskSpec(queue="q"))
    assert sent == [["HSET"], ["put"]]
