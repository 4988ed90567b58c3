"""Putting tasks: one, in bulk (all or nothing), idempotently by client id, and delayed."""

from __future__ import annotations

import pytest

from conveyor.domain.clock import ManualClock
from conveyor.domain.queues import QueueConfig
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import MAX_BULK_PUT, ResponseMode, TaskSpec, build_new_task
from conveyor.engines import Engine
from conveyor.errors import IdempotencyConflict, InvalidInput, NotFound
from conveyor.service.tasks import TaskService
from tests.conformance._support import OK, collect, lease_of, put_n, take_one

# ---- one task ----


async def test_put_stores_every_field(service: TaskService, clock: ManualClock) -> None:
    spec = TaskSpec(
        queue="q",
        level=2,
        endpoint="/v1/chat/completions",
        data={"messages": [{"role": "user", "content": "héllo ☃"}], "n": None, "x": 1.5},
        response_mode=ResponseMode.BLOCKING,
        callback_url="https://example.com/hook",
        timeout_s=300,
        max_attempts=4,
        custom_id="req-1",
        batch_id="batch_1",
        group="tenant-a",
        metadata={"k": ["v", 2]},
    )
    put = await service.put(spec)
    stored = await service.get_task(put.task_id)
    assert stored == put
    assert stored.status is TaskStatus.QUEUED
    assert (stored.queue, stored.level, stored.endpoint) == ("q", 2, "/v1/chat/completions")
    assert stored.data == spec.data
    assert stored.metadata == {"k": ["v", 2]}
    assert stored.response_mode is ResponseMode.BLOCKING
    assert stored.callback_url == "https://example.com/hook"
    assert (stored.custom_id, stored.batch_id, stored.group) == ("req-1", "batch_1", "tenant-a")
    assert (stored.attempts, stored.max_attempts) == (0, 4)
    assert stored.created_at == stored.run_at == clock.now
    assert stored.expires_at == clock.now + 300
    assert (stored.result, stored.error) == (None, None)
    assert (stored.lease_id, stored.worker_id) == (None, None)
    assert (stored.started_at, stored.completed_at) == (None, None)
    assert stored.cancel_requested is False


async def test_put_registers_an_unknown_queue_with_defaults(service: TaskService) -> None:
    task = await service.put(TaskSpec(queue="fresh"))
    queue = await service.queue_stats("fresh")
    assert queue.queue.name == "fresh"
    assert queue.queue.max_attempts == task.max_attempts
    assert queue.total(TaskStatus.QUEUED) == 1


async def test_engine_put_needs_the_queue_to_exist(
    clocked_engine: Engine, clock: ManualClock
) -> None:
    new = build_new_task(TaskSpec(queue="ghost"), QueueConfig(name="ghost"), clock.now)
    with pytest.raises(NotFound):
        await clocked_engine.put([new])
    with pytest.raises(NotFound):
        await clocked_engine.get_task(new.task_id)


async def test_data_round_trips_any_json(service: TaskService) -> None:
    for data in (None, 0, -1.25, "text", [1, [2, [3]]], {"a": {"b": True, "c": None}}):
        task = await service.put(TaskSpec(queue="q", data=data))
        assert (await service.get_task(task.task_id)).data == data


async def test_invalid_put_stores_nothing(service: TaskService, clocked_engine: Engine) -> None:
    await service.register_queue(QueueConfig(name="q", max_level=2))
    with pytest.raises(InvalidInput):
        await service.put(TaskSpec(queue="q", level=3))
    with pytest.raises(InvalidInput):
        await service.put(TaskSpec(queue="q", data=float("nan")))
    assert await collect(clocked_engine, "q") == []


# ---- bulk ----


async def test_bulk_put_returns_ids_in_order_and_stores_all(
    service: TaskService, clocked_engine: Engine
) -> None:
    ids = await put_n(service, "q", 50)
    assert len(set(ids)) == 50
    listed = await collect(clocked_engine, "q")
    assert [t.task_id for t in listed] == ids
    assert [t.data for t in listed] == [{"n": i} for i in range(50)]


async def test_bulk_put_takes_up_to_the_limit(service: TaskService) -> None:
    ids = await service.put_many([TaskSpec(queue="q") for _ in range(MAX_BULK_PUT)])
    assert len(set(ids)) == MAX_BULK_PUT
    assert (await service.queue_stats("q")).total(TaskStatus.QUEUED) == MAX_BULK_PUT


async def test_bulk_put_over_the_limit_stores_nothing(
    service: TaskService, clocked_engine: Engine
) -> None:
    await service.register_queue(QueueConfig(name="q"))
    with pytest.raises(InvalidInput):
        await service.put_many([TaskSpec(queue="q") for _ in range(MAX_BULK_PUT + 1)])
    with pytest.raises(InvalidInput):
        await service.put_many([])
    assert await collect(clocked_engine, "q") == []


async def test_bulk_put_with_an_invalid_task_stores_nothing(
    service: TaskService, clocked_engine: Engine
) -> None:
    await service.register_queue(QueueConfig(name="q", max_level=1))
    specs = [TaskSpec(queue="q"), TaskSpec(queue="q", level=5), TaskSpec(queue="q")]
    with pytest.raises(InvalidInput) as raised:
        await service.put_many(specs)
    assert raised.value.param == "tasks[1].level"
    assert await collect(clocked_engine, "q") == []


async def test_bulk_put_with_an_idempotency_conflict_stores_nothing(
    service: TaskService, clocked_engine: Engine
) -> None:
    await service.put(TaskSpec(queue="q", task_id="taken", data="original"))
    specs = [
        TaskSpec(queue="q", data="first"),
        TaskSpec(queue="other", data="second"),
        TaskSpec(queue="q", task_id="taken", data="changed"),
        TaskSpec(queue="q", data="last"),
    ]
    with pytest.raises(IdempotencyConflict):
        await service.put_many(specs)
    assert [t.data for t in await collect(clocked_engine, "q")] == ["original"]
    assert await collect(clocked_engine, "other") == []


async def test_bulk_put_with_a_conflict_inside_the_batch_stores_nothing(
    service: TaskService, clocked_engine: Engine
) -> None:
    specs = [
        TaskSpec(queue="q", data="a"),
        TaskSpec(queue="q", task_id="twin", data="one"),
        TaskSpec(queue="q", task_id="twin", data="two"),
    ]
    with pytest.raises(IdempotencyConflict):
        await service.put_many(specs)
    assert await collect(clocked_engine, "q") == []


async def test_bulk_put_with_a_repeat_inside_the_batch_stores_it_once(
    clocked_engine: Engine, clock: ManualClock
) -> None:
    queue = await clocked_engine.register_queue(QueueConfig(name="q"))
    first = build_new_task(TaskSpec(queue="q", task_id="twin", data=1), queue, clock.now)
    other = build_new_task(TaskSpec(queue="q", data=2), queue, clock.now)
    assert await clocked_engine.put([first, other, first]) == [True, True, False]
    assert [t.task_id for t in await collect(clocked_engine, "q")] == ["twin", other.task_id]


# ---- idempotent puts ----


async def test_same_id_same_content_answers_the_stored_task(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    spec = TaskSpec(queue="q", task_id="order-17", data={"x": 1}, group="g")
    first = await service.put(spec)
    clock.advance(5)
    again = await service.put(TaskSpec(queue="q", task_id="order-17", data={"x": 1}, group="g"))
    assert again == first
    assert again.created_at == first.created_at
    queue = await clocked_engine.get_queue("q")
    new = build_new_task(spec, queue, clock.now)
    assert await clocked_engine.put([new]) == [False]
    assert len(await collect(clocked_engine, "q")) == 1


async def test_same_id_after_the_task_ran_answers_the_finished_task(
    service: TaskService, clocked_engine: Engine
) -> None:
    spec = TaskSpec(queue="q", task_id="once", data="x")
    await service.put(spec)
    taken = await take_one(service, ["q"])
    await service.complete(taken.task_id, lease_of(taken), OK)
    again = await service.put(spec)
    assert again.status is TaskStatus.SUCCEEDED
    assert again.result == OK
    assert await service.take(["q"]) == []
    assert len(await collect(clocked_engine, "q")) == 1


async def test_same_id_other_content_is_a_conflict(
    service: TaskService, clocked_engine: Engine
) -> None:
    first = await service.put(TaskSpec(queue="q", task_id="job-1", data={"x": 1}))
    for changed in (
        TaskSpec(queue="q", task_id="job-1", data={"x": 2}),
        TaskSpec(queue="q", task_id="job-1", data={"x": 1}, level=1),
        TaskSpec(queue="q", task_id="job-1", data={"x": 1}, group="other"),
        TaskSpec(queue="q2", task_id="job-1", data={"x": 1}),
    ):
        with pytest.raises(IdempotencyConflict):
            await service.put(changed)
    assert await service.get_task("job-1") == first
    assert await collect(clocked_engine, "q2") == []


# ---- delayed ----


async def test_delayed_put_is_scheduled_until_due(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    start = clock.now
    task = await service.put(TaskSpec(queue="q", delay_s=30))
    assert task.status is TaskStatus.SCHEDULED
    assert task.run_at == start + 30
    assert (await service.get_task(task.task_id)).status is TaskStatus.SCHEDULED
    assert await service.take(["q"]) == []

    clock.advance(29)
    assert (await clocked_engine.sweep()).promoted == 0
    assert (await service.get_task(task.task_id)).status is TaskStatus.SCHEDULED
    assert await service.take(["q"]) == []

    clock.advance(1.5)
    report = await clocked_engine.sweep()
    assert report.promoted == 1
    assert (await service.get_task(task.task_id)).status is TaskStatus.QUEUED
    taken = await take_one(service, ["q"])
    assert taken.task_id == task.task_id
    assert taken.attempts == 1


async def test_put_with_run_at_is_scheduled_for_that_time(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    later = await service.put(TaskSpec(queue="q", run_at=clock.now + 60))
    past = await service.put(TaskSpec(queue="q", run_at=clock.now - 60))
    assert later.status is TaskStatus.SCHEDULED
    assert later.run_at == clock.now + 60
    assert past.status is TaskStatus.QUEUED
    assert (await take_one(service, ["q"])).task_id == past.task_id

    report = await clocked_engine.sweep()
    assert report.next_due_at is not None
    assert report.next_due_at <= clock.now + 60
    clock.advance(61)
    assert (await clocked_engine.sweep()).promoted == 1
    assert (await take_one(service, ["q"])).task_id == later.task_id


async def test_delay_of_zero_is_queued_at_once(service: TaskService) -> None:
    task = await service.put(TaskSpec(queue="q", delay_s=0))
    assert task.status is TaskStatus.QUEUED
    assert (await take_one(service, ["q"])).task_id == task.task_id


async def test_delayed_tasks_come_due_in_run_at_order(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    late = await service.put(TaskSpec(queue="q", delay_s=20))
    soon = await service.put(TaskSpec(queue="q", delay_s=10))
    clock.advance(15)
    assert (await clocked_engine.sweep()).promoted == 1
    assert [t.task_id for t in await service.take(["q"], size=5)] == [soon.task_id]
    clock.advance(10)
    assert (await clocked_engine.sweep()).promoted == 1
    assert [t.task_id for t in await service.take(["q"], size=5)] == [late.task_id]
