"""Queues: register, list, stats per level, pause and resume, obliterate, retention."""

from __future__ import annotations

import pytest

from conveyor.domain.clock import ManualClock
from conveyor.domain.queues import DEFAULT_MAX_ATTEMPTS, QueueConfig, QueueUpdate
from conveyor.domain.retry import Backoff
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import TaskSpec
from conveyor.engines import Engine
from conveyor.errors import Conflict, InvalidInput, NotFound
from conveyor.service.tasks import TaskService
from tests.conformance._support import (
    BOOM,
    FIXED_10S,
    OK,
    collect,
    counts_by_level,
    lease_of,
    put_n,
    take_one,
)

Q, S, R = TaskStatus.QUEUED, TaskStatus.SCHEDULED, TaskStatus.RUNNING

# ---- register, get, list ----


async def test_register_stores_the_config(clocked_engine: Engine, clock: ManualClock) -> None:
    config = QueueConfig(
        name="mail",
        max_level=3,
        lease_s=12.5,
        max_attempts=7,
        backoff=FIXED_10S,
        retention_s=3600,
    )
    stored = await clocked_engine.register_queue(config)
    assert stored.created_at == clock.now
    assert stored == QueueConfig(
        name="mail",
        max_level=3,
        lease_s=12.5,
        max_attempts=7,
        backoff=FIXED_10S,
        retention_s=3600,
        created_at=clock.now,
    )
    assert await clocked_engine.get_queue("mail") == stored


async def test_register_with_defaults(clocked_engine: Engine, clock: ManualClock) -> None:
    stored = await clocked_engine.register_queue(QueueConfig(name="plain"))
    assert stored.max_attempts == DEFAULT_MAX_ATTEMPTS
    assert stored.backoff == Backoff()
    assert stored.paused is False
    assert await clocked_engine.get_queue("plain") == stored


async def test_register_again_replaces_defaults_keeping_created_at(
    clocked_engine: Engine, clock: ManualClock
) -> None:
    first = await clocked_engine.register_queue(QueueConfig(name="q", lease_s=10))
    clock.advance(100)
    kept = await clocked_engine.register_queue(QueueConfig(name="q", lease_s=99), replace=False)
    assert kept == first
    replaced = await clocked_engine.register_queue(QueueConfig(name="q", lease_s=20))
    assert replaced.lease_s == 20
    assert replaced.created_at == first.created_at
    assert await clocked_engine.get_queue("q") == replaced


async def test_list_queues_by_name(clocked_engine: Engine) -> None:
    assert await clocked_engine.list_queues() == []
    for name in ("beta", "alpha", "gamma"):
        await clocked_engine.register_queue(QueueConfig(name=name))
    listed = await clocked_engine.list_queues()
    assert [q.name for q in listed] == ["alpha", "beta", "gamma"]
    assert listed[0] == await clocked_engine.get_queue("alpha")


async def test_unknown_queue_is_not_found(clocked_engine: Engine) -> None:
    with pytest.raises(NotFound):
        await clocked_engine.get_queue("nope")
    with pytest.raises(NotFound):
        await clocked_engine.queue_stats("nope")
    with pytest.raises(NotFound):
        await clocked_engine.update_queue("nope", QueueUpdate(paused=True))
    with pytest.raises(NotFound):
        await clocked_engine.obliterate_queue("nope")


async def test_queue_defaults_apply_to_new_tasks(service: TaskService, clock: ManualClock) -> None:
    await service.register_queue(QueueConfig(name="q", max_attempts=5, lease_s=40))
    first = await service.put(TaskSpec(queue="q"))
    assert first.max_attempts == 5
    assert (await take_one(service, ["q"])).lease_expires_at == clock.now + 40
    await service.update_queue("q", QueueUpdate(max_attempts=2, lease_s=15))
    second = await service.put(TaskSpec(queue="q"))
    assert second.max_attempts == 2
    assert (await take_one(service, ["q"])).lease_expires_at == clock.now + 15
    assert (await service.get_task(first.task_id)).max_attempts == 5


# ---- update: pause and resume ----


async def test_pause_and_resume(service: TaskService, clocked_engine: Engine) -> None:
    await service.register_queue(QueueConfig(name="q", lease_s=33))
    ids = await put_n(service, "q", 3)
    paused = await clocked_engine.update_queue("q", QueueUpdate(paused=True))
    assert paused.paused is True
    assert paused.lease_s == 33
    assert (await clocked_engine.get_queue("q")).paused is True
    assert await service.take(["q"], size=3) == []
    for strategy in ("fifo", "active_passive", "round_robin", "sequential", "fair"):
        assert await service.take(["q"], strategy=strategy) == []
    assert (await clocked_engine.queue_stats("q")).total(Q) == 3

    resumed = await clocked_engine.update_queue("q", QueueUpdate(paused=False))
    assert resumed.paused is False
    assert (await clocked_engine.get_queue("q")).paused is False
    assert [t.task_id for t in await service.take(["q"], size=3)] == ids


async def test_update_with_bad_values_is_refused(clocked_engine: Engine) -> None:
    before = await clocked_engine.register_queue(QueueConfig(name="q"))
    with pytest.raises(InvalidInput):
        await clocked_engine.update_queue("q", QueueUpdate(lease_s=-1))
    with pytest.raises(InvalidInput):
        await clocked_engine.update_queue("q", QueueUpdate(max_attempts=0))
    assert await clocked_engine.get_queue("q") == before


# ---- stats ----


async def test_stats_count_per_level_and_status(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    await service.register_queue(QueueConfig(name="q", max_level=3))
    await put_n(service, "q", 2, level=0)
    clock.advance(5)
    await service.put(TaskSpec(queue="q", level=3))
    await service.put(TaskSpec(queue="q", level=1, delay_s=60))
    await take_one(service, ["q:0"])
    await put_n(service, "other", 4)  # another queue's tasks are not counted

    stats = await clocked_engine.queue_stats("q")
    assert stats.queue == await clocked_engine.get_queue("q")
    assert counts_by_level(stats) == {0: {Q: 1, R: 1}, 1: {S: 1}, 3: {Q: 1}}
    assert [level.level for level in stats.levels] == sorted(lv.level for lv in stats.levels)
    assert (stats.total(Q), stats.total(R), stats.total(S)) == (2, 1, 1)
    ages = {level.level: level.oldest_queued_age_s for level in stats.levels}
    assert ages[0] == 5.0
    assert ages[3] == 0.0
    assert ages.get(1) is None

    clock.advance(2)
    ages = {
        lv.level: lv.oldest_queued_age_s for lv in (await clocked_engine.queue_stats("q")).levels
    }
    assert (ages[0], ages[3]) == (7.0, 2.0)


async def test_stats_follow_every_ending(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    await service.register_queue(QueueConfig(name="q", backoff=FIXED_10S))
    ids = await put_n(service, "q", 6, timeout_s=100)
    taken = await service.take(["q"], size=3)
    await service.complete(taken[0].task_id, lease_of(taken[0]), OK)
    await service.fail(taken[1].task_id, lease_of(taken[1]), BOOM, retry=False)
    await service.fail(taken[2].task_id, lease_of(taken[2]), BOOM)  # backs off
    await service.cancel(ids[3])
    stats = await clocked_engine.queue_stats("q")
    expected = {
        TaskStatus.SUCCEEDED: 1,
        TaskStatus.FAILED: 1,
        TaskStatus.SCHEDULED: 1,
        TaskStatus.CANCELLED: 1,
        TaskStatus.QUEUED: 2,
    }
    assert counts_by_level(stats) == {0: expected}
    clock.advance(101)
    await clocked_engine.sweep()
    stats = await clocked_engine.queue_stats("q")
    expected = {
        TaskStatus.SUCCEEDED: 1,
        TaskStatus.FAILED: 1,
        TaskStatus.CANCELLED: 1,
        TaskStatus.EXPIRED: 3,
    }
    assert counts_by_level(stats) == {0: expected}


async def test_stats_of_an_empty_queue(clocked_engine: Engine) -> None:
    await clocked_engine.register_queue(QueueConfig(name="q"))
    stats = await clocked_engine.queue_stats("q")
    assert counts_by_level(stats) == {}
    assert all(level.oldest_queued_age_s is None for level in stats.levels)


# ---- obliterate ----


async def test_obliterate_deletes_the_queue_and_its_tasks(
    service: TaskService, clocked_engine: Engine
) -> None:
    ids = await put_n(service, "doomed", 3)
    await service.put(TaskSpec(queue="doomed", delay_s=60))
    keep = await put_n(service, "kept", 2)
    assert await service.obliterate_queue("doomed") == 4
    with pytest.raises(NotFound):
        await clocked_engine.get_queue("doomed")
    for task_id in ids:
        with pytest.raises(NotFound):
            await clocked_engine.get_task(task_id)
    assert [q.name for q in await clocked_engine.list_queues()] == ["kept"]
    assert [t.task_id for t in await collect(clocked_engine, "kept")] == keep
    assert await service.take(["doomed"]) == []
    # the name can be used again, from scratch
    again = await service.put(TaskSpec(queue="doomed"))
    assert [t.task_id for t in await collect(clocked_engine, "doomed")] == [again.task_id]


async def test_obliterate_with_running_tasks_needs_force(
    service: TaskService, clocked_engine: Engine
) -> None:
    ids = await put_n(service, "q", 3)
    running = await take_one(service, ["q"])
    before = await clocked_engine.queue_stats("q")
    with pytest.raises(Conflict):
        await clocked_engine.obliterate_queue("q")
    assert await clocked_engine.queue_stats("q") == before
    assert [t.task_id for t in await collect(clocked_engine, "q")] == ids

    assert await clocked_engine.obliterate_queue("q", force=True) == 3
    with pytest.raises(NotFound):
        await clocked_engine.get_queue("q")
    with pytest.raises(NotFound):
        await clocked_engine.complete(running.task_id, lease_of(running), OK)


async def test_obliterate_an_empty_queue(clocked_engine: Engine) -> None:
    await clocked_engine.register_queue(QueueConfig(name="q"))
    assert await clocked_engine.obliterate_queue("q") == 0
    assert await clocked_engine.list_queues() == []


# ---- retention ----


async def test_retention_deletes_finished_tasks(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    await service.register_queue(QueueConfig(name="q", retention_s=60))
    done, dead, cancelled, waiting = await put_n(service, "q", 4)
    taken = await service.take(["q"], size=2)
    await service.complete(done, lease_of(taken[0]), OK)
    await service.fail(dead, lease_of(taken[1]), BOOM, retry=False)
    await service.cancel(cancelled)
    late = await service.put(TaskSpec(queue="q", timeout_s=10))
    clock.advance(10.5)  # `late` expires now, 10.5 s after the others finished
    assert (await clocked_engine.sweep()).purged == 0

    clock.advance(50)
    assert (await clocked_engine.sweep()).purged == 3
    for task_id in (done, dead, cancelled):
        with pytest.raises(NotFound):
            await clocked_engine.get_task(task_id)
    assert (await clocked_engine.get_task(late.task_id)).status is TaskStatus.EXPIRED
    assert (await clocked_engine.get_task(waiting)).status is TaskStatus.QUEUED

    clock.advance(11)
    assert (await clocked_engine.sweep()).purged == 1
    assert [t.task_id for t in await collect(clocked_engine, "q")] == [waiting]
    assert counts_by_level(await clocked_engine.queue_stats("q")) == {0: {Q: 1}}


async def test_retention_counts_from_when_the_task_finished(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    await service.register_queue(QueueConfig(name="q", retention_s=60))
    task = await service.put(TaskSpec(queue="q"))
    clock.advance(100)  # old, but not finished
    assert (await clocked_engine.sweep()).purged == 0
    taken = await take_one(service, ["q"], lease_s=1000)
    clock.advance(100)
    await service.complete(task.task_id, lease_of(taken), OK)
    clock.advance(59)
    assert (await clocked_engine.sweep()).purged == 0
    assert (await clocked_engine.get_task(task.task_id)).status is TaskStatus.SUCCEEDED
    clock.advance(2)
    assert (await clocked_engine.sweep()).purged == 1


async def test_retention_is_per_queue(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    await service.register_queue(QueueConfig(name="short", retention_s=10))
    await service.register_queue(QueueConfig(name="long", retention_s=1000))
    brief = await service.put(TaskSpec(queue="short"))
    lasting = await service.put(TaskSpec(queue="long"))
    await service.cancel(brief.task_id)
    await service.cancel(lasting.task_id)
    clock.advance(11)
    assert (await clocked_engine.sweep()).purged == 1
    with pytest.raises(NotFound):
        await clocked_engine.get_task(brief.task_id)
    assert (await clocked_engine.get_task(lasting.task_id)).status is TaskStatus.CANCELLED
