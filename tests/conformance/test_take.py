"""Taking tasks: the lease a take hands out, paused queues, and the five strategies."""

from __future__ import annotations

import pytest

from conveyor.domain.clock import ManualClock
from conveyor.domain.queues import QueueConfig, QueueUpdate
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import TaskSpec
from conveyor.engines import Engine
from conveyor.errors import InvalidInput
from conveyor.service.tasks import TaskService
from tests.conformance._support import BOOM, OK, lease_of, put_n, take_one

# ---- the lease ----


async def test_take_leases_up_to_size(service: TaskService, clock: ManualClock) -> None:
    ids = await put_n(service, "q", 5)
    taken = await service.take(["q"], size=3, lease_s=30, worker_id="w-1")
    assert [t.task_id for t in taken] == ids[:3]
    assert len({lease_of(t) for t in taken}) == 3
    for task in taken:
        assert task.status is TaskStatus.RUNNING
        assert task.worker_id == "w-1"
        assert task.lease_expires_at == clock.now + 30
        assert task.started_at == clock.now
        assert task.attempts == 1
        assert await service.get_task(task.task_id) == task
    rest = await service.take(["q"], size=10)
    assert [t.task_id for t in rest] == ids[3:]
    assert await service.take(["q"], size=10) == []


async def test_take_from_nothing_gives_nothing(service: TaskService) -> None:
    assert await service.take(["empty"]) == []
    await service.register_queue(QueueConfig(name="empty"))
    assert await service.take(["empty", "empty:0"], size=5) == []


async def test_take_uses_the_queue_lease_by_default(
    service: TaskService, clock: ManualClock
) -> None:
    await service.register_queue(QueueConfig(name="q", lease_s=45))
    await service.put(TaskSpec(queue="q"))
    task = await take_one(service, ["q"])
    assert task.lease_expires_at == clock.now + 45


async def test_each_take_counts_an_attempt(service: TaskService) -> None:
    await service.register_queue(QueueConfig(name="q", max_attempts=5))
    task = await service.put(TaskSpec(queue="q"))
    for attempt in range(1, 4):
        taken = await take_one(service, ["q"])
        assert taken.task_id == task.task_id
        assert taken.attempts == attempt
        await service.fail(taken.task_id, lease_of(taken), BOOM, retry_after_s=0)
        assert (await service.get_task(task.task_id)).status is TaskStatus.QUEUED


async def test_paused_queue_gives_nothing_until_resumed(service: TaskService) -> None:
    ids = await put_n(service, "q", 2)
    await put_n(service, "other", 1)
    await service.update_queue("q", QueueUpdate(paused=True))
    assert await service.take(["q"], size=5) == []
    # another listed queue still gives
    assert [t.queue for t in await service.take(["q", "other"], size=5)] == ["other"]
    await service.put(TaskSpec(queue="q"))  # a paused queue still accepts work
    await service.update_queue("q", QueueUpdate(paused=False))
    assert [t.task_id for t in await service.take(["q"], size=2)] == ids


async def test_take_validates_its_request(service: TaskService) -> None:
    await service.register_queue(QueueConfig(name="q", max_level=1))
    with pytest.raises(InvalidInput):
        await service.take(["q"], strategy="random")
    with pytest.raises(InvalidInput):
        await service.take(["q"], size=0)
    with pytest.raises(InvalidInput):
        await service.take(["q:2"])
    with pytest.raises(InvalidInput):
        await service.take([])
    with pytest.raises(InvalidInput):
        await service.take(["bad name"])


# ---- fifo ----


async def test_fifo_takes_oldest_first_across_queues(service: TaskService) -> None:
    a1 = await service.put(TaskSpec(queue="a"))
    b1 = await service.put(TaskSpec(queue="b"))
    a2 = await service.put(TaskSpec(queue="a"))
    b2 = await service.put(TaskSpec(queue="b"))
    order = [(await take_one(service, ["b", "a"])).task_id for _ in range(4)]
    assert order == [a1.task_id, b1.task_id, a2.task_id, b2.task_id]


async def test_fifo_in_one_take_keeps_the_order(service: TaskService) -> None:
    ids = [(await service.put(TaskSpec(queue=q))).task_id for q in "abcabc"]
    taken = await service.take(["c", "b", "a"], size=6)
    assert [t.task_id for t in taken] == ids


async def test_bare_name_takes_most_urgent_level_first(service: TaskService) -> None:
    await service.register_queue(QueueConfig(name="q", max_level=3))
    low = await service.put(TaskSpec(queue="q", level=2))
    urgent = await service.put(TaskSpec(queue="q", level=0))
    middle = await service.put(TaskSpec(queue="q", level=1))
    urgent2 = await service.put(TaskSpec(queue="q", level=0))
    taken = [(await take_one(service, ["q"])).task_id for _ in range(4)]
    assert taken == [urgent.task_id, urgent2.task_id, middle.task_id, low.task_id]


async def test_address_with_level_takes_only_that_level(service: TaskService) -> None:
    await service.register_queue(QueueConfig(name="q", max_level=2))
    await service.put(TaskSpec(queue="q", level=0))
    one = await service.put(TaskSpec(queue="q", level=1))
    taken = await service.take(["q:1", "q:2"], size=5)
    assert [t.task_id for t in taken] == [one.task_id]


# ---- active_passive ----


async def test_active_passive_empties_queues_in_list_order(service: TaskService) -> None:
    passive = await put_n(service, "passive", 2)  # older, but listed second
    active = await put_n(service, "active", 2)
    taken = await service.take(["active", "passive"], strategy="active_passive", size=3)
    assert [t.task_id for t in taken] == [*active, passive[0]]
    more = await put_n(service, "active", 1)
    taken = await service.take(["active", "passive"], strategy="active_passive", size=3)
    assert [t.task_id for t in taken] == [more[0], passive[1]]


async def test_active_passive_one_at_a_time(service: TaskService) -> None:
    b = await put_n(service, "b", 2)
    a = await put_n(service, "a", 2)
    order = [
        (await take_one(service, ["a", "b"], strategy="active_passive")).task_id for _ in range(4)
    ]
    assert order == [*a, *b]


# ---- round_robin ----


async def test_round_robin_takes_one_from_each_queue_in_turn(service: TaskService) -> None:
    a = await put_n(service, "a", 3)
    b = await put_n(service, "b", 3)
    c = await put_n(service, "c", 1)
    order = [
        (await take_one(service, ["a", "b", "c"], strategy="round_robin")).task_id for _ in range(7)
    ]
    assert order == [a[0], b[0], c[0], a[1], b[1], a[2], b[2]]


async def test_round_robin_continues_across_takes(service: TaskService) -> None:
    a = await put_n(service, "a", 3)
    b = await put_n(service, "b", 3)
    c = await put_n(service, "c", 1)
    first = await service.take(["a", "b", "c"], strategy="round_robin", size=4)
    second = await service.take(["a", "b", "c"], strategy="round_robin", size=3)
    assert [t.task_id for t in first] == [a[0], b[0], c[0], a[1]]
    assert [t.task_id for t in second] == [b[1], a[2], b[2]]


# ---- sequential ----


async def test_sequential_runs_one_task_per_queue(service: TaskService) -> None:
    a = await put_n(service, "a", 3)
    b = await put_n(service, "b", 2)
    first = await service.take(["a", "b"], strategy="sequential", size=10)
    assert [t.task_id for t in first] == [a[0], b[0]]
    assert await service.take(["a", "b"], strategy="sequential", size=10) == []

    await service.complete(a[0], lease_of(first[0]), OK)
    second = await service.take(["a", "b"], strategy="sequential", size=10)
    assert [t.task_id for t in second] == [a[1]]

    await service.fail(b[0], lease_of(first[1]), BOOM, retry=False)
    third = await service.take(["a", "b"], strategy="sequential", size=10)
    assert [t.task_id for t in third] == [b[1]]


async def test_sequential_counts_every_level_and_other_strategies(service: TaskService) -> None:
    await service.register_queue(QueueConfig(name="q", max_level=1))
    await service.put(TaskSpec(queue="q", level=1))
    await service.put(TaskSpec(queue="q", level=0))
    await take_one(service, ["q:1"])  # running, taken by fifo at another level
    assert await service.take(["q:0"], strategy="sequential") == []
    assert await service.take(["q"], strategy="sequential") == []


# ---- fair ----


async def test_fair_does_not_starve_a_small_tenant(service: TaskService) -> None:
    await put_n(service, "q", 1000, group="a-big")
    small = await service.put(TaskSpec(queue="q", group="z-small"))
    first_two = [await take_one(service, ["q"], strategy="fair") for _ in range(2)]
    assert small.task_id in {t.task_id for t in first_two}
    assert {t.group for t in first_two} == {"a-big", "z-small"}


async def test_fair_does_not_starve_a_small_tenant_in_one_take(service: TaskService) -> None:
    await put_n(service, "q", 1000, group="a-big")
    small = await service.put(TaskSpec(queue="q", group="z-small"))
    taken = await service.take(["q"], strategy="fair", size=10)
    assert len(taken) == 10
    assert small.task_id in {t.task_id for t in taken}


async def test_fair_rotates_between_groups(service: TaskService) -> None:
    by_group = {g: await put_n(service, "q", 4, group=g) for g in ("x", "y", "z")}
    groups = [(await take_one(service, ["q"], strategy="fair")).group for _ in range(12)]
    for start in range(0, 12, 3):
        assert set(groups[start : start + 3]) == {"x", "y", "z"}, groups
    assert await service.take(["q"], strategy="fair") == []
    for group, ids in by_group.items():
        stored = [await service.get_task(i) for i in ids]
        assert all(t.group == group and t.status is TaskStatus.RUNNING for t in stored)


async def test_fair_takes_oldest_first_within_a_group(service: TaskService) -> None:
    x = await put_n(service, "q", 3, group="x")
    y = await put_n(service, "q", 3, group="y")
    taken = await service.take(["q"], strategy="fair", size=6)
    assert [t.task_id for t in taken if t.group == "x"] == x
    assert [t.task_id for t in taken if t.group == "y"] == y
    assert [t.group for t in taken[:2]] in (["x", "y"], ["y", "x"])


async def test_fair_keeps_rotating_as_work_arrives(
    service: TaskService, clocked_engine: Engine
) -> None:
    await put_n(service, "q", 50, group="big")
    seen_small = 0
    for _ in range(5):
        await service.put(TaskSpec(queue="q", group="small"))
        taken = await service.take(["q"], strategy="fair", size=2)
        assert sorted(t.group for t in taken) == ["big", "small"]
        seen_small += sum(t.group == "small" for t in taken)
    assert seen_small == 5
    stats = await clocked_engine.queue_stats("q")
    assert stats.total(TaskStatus.QUEUED) == 45
