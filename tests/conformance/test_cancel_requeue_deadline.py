"""Cancelling (at once or at the worker's next word), re-queueing the dead letter, deadlines."""

from __future__ import annotations

import pytest

from conveyor.domain.clock import ManualClock
from conveyor.domain.queues import QueueConfig
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import TaskSpec
from conveyor.engines import Engine
from conveyor.errors import InvalidTransition, LeaseLost
from conveyor.service.tasks import TaskService
from tests.conformance._support import BOOM, FIXED_10S, OK, lease_of, take_one

# ---- cancel ----


async def test_cancel_a_queued_task_at_once(service: TaskService, clock: ManualClock) -> None:
    task = await service.put(TaskSpec(queue="q"))
    clock.advance(2)
    cancelled = await service.cancel(task.task_id)
    assert cancelled.status is TaskStatus.CANCELLED
    assert cancelled.completed_at == clock.now
    assert await service.get_task(task.task_id) == cancelled
    assert await service.take(["q"]) == []


async def test_cancel_a_scheduled_task_at_once(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    task = await service.put(TaskSpec(queue="q", delay_s=10))
    cancelled = await service.cancel(task.task_id)
    assert cancelled.status is TaskStatus.CANCELLED
    clock.advance(11)
    assert (await clocked_engine.sweep()).promoted == 0
    assert (await service.get_task(task.task_id)).status is TaskStatus.CANCELLED
    assert await service.take(["q"]) == []


async def test_cancel_a_backing_off_task_at_once(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    await service.register_queue(QueueConfig(name="q", backoff=FIXED_10S))
    task = await service.put(TaskSpec(queue="q"))
    taken = await take_one(service, ["q"])
    await service.fail(task.task_id, lease_of(taken), BOOM)
    assert (await service.cancel(task.task_id)).status is TaskStatus.CANCELLED
    clock.advance(11)
    await clocked_engine.sweep()
    assert await service.take(["q"]) == []


async def test_cancel_a_running_task_is_delivered_by_heartbeat(
    service: TaskService, clock: ManualClock
) -> None:
    task = await service.put(TaskSpec(queue="q"))
    taken = await take_one(service, ["q"])
    marked = await service.cancel(task.task_id)
    assert marked.status is TaskStatus.RUNNING
    assert marked.cancel_requested is True
    assert marked.lease_id == taken.lease_id
    # a second cancel changes nothing more
    assert (await service.cancel(task.task_id)).status is TaskStatus.RUNNING

    clock.advance(1)
    beat = await service.heartbeat(task.task_id, lease_of(taken))
    assert beat.cancelled is True
    ended = await service.get_task(task.task_id)
    assert ended.status is TaskStatus.CANCELLED
    assert ended.completed_at == clock.now
    assert ended.lease_id is None
    with pytest.raises(LeaseLost):
        await service.heartbeat(task.task_id, lease_of(taken))
    with pytest.raises(LeaseLost):
        await service.complete(task.task_id, lease_of(taken), OK)
    assert await service.take(["q"]) == []


async def test_cancel_a_running_task_then_complete_ends_cancelled(service: TaskService) -> None:
    task = await service.put(TaskSpec(queue="q"))
    taken = await take_one(service, ["q"])
    await service.cancel(task.task_id)
    done = await service.complete(task.task_id, lease_of(taken), OK)
    assert done.status is TaskStatus.CANCELLED
    assert (await service.get_task(task.task_id)).status is TaskStatus.CANCELLED


async def test_cancel_a_running_task_then_fail_ends_cancelled(service: TaskService) -> None:
    await service.register_queue(QueueConfig(name="q", max_attempts=5))
    task = await service.put(TaskSpec(queue="q"))
    taken = await take_one(service, ["q"])
    await service.cancel(task.task_id)
    failed = await service.fail(task.task_id, lease_of(taken), BOOM, retry_after_s=0)
    assert failed.status is TaskStatus.CANCELLED
    assert await service.take(["q"]) == []


async def test_cancel_a_running_task_then_lease_expiry_ends_cancelled(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    await service.register_queue(QueueConfig(name="q", max_attempts=5))
    task = await service.put(TaskSpec(queue="q"))
    await take_one(service, ["q"], lease_s=5)
    await service.cancel(task.task_id)
    clock.advance(6)
    await clocked_engine.sweep()
    assert (await service.get_task(task.task_id)).status is TaskStatus.CANCELLED
    assert await service.take(["q"]) == []


async def test_cancel_a_cancelled_task_answers_it_unchanged(service: TaskService) -> None:
    task = await service.put(TaskSpec(queue="q"))
    cancelled = await service.cancel(task.task_id)
    assert await service.cancel(task.task_id) == cancelled


async def test_cancel_a_finished_task_is_refused(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    done = await service.put(TaskSpec(queue="q"))
    taken = await take_one(service, ["q"])
    await service.complete(done.task_id, lease_of(taken), OK)
    dead = await service.put(TaskSpec(queue="q"))
    taken = await take_one(service, ["q"])
    await service.fail(dead.task_id, lease_of(taken), BOOM, retry=False)
    late = await service.put(TaskSpec(queue="q", timeout_s=5))
    clock.advance(6)
    await clocked_engine.sweep()
    for task_id in (done.task_id, dead.task_id, late.task_id):
        before = await service.get_task(task_id)
        with pytest.raises(InvalidTransition):
            await service.cancel(task_id)
        assert await service.get_task(task_id) == before


# ---- requeue ----


async def test_requeue_a_failed_task_with_fresh_attempts(
    service: TaskService, clock: ManualClock
) -> None:
    await service.register_queue(QueueConfig(name="q", max_attempts=1))
    task = await service.put(TaskSpec(queue="q"))
    taken = await take_one(service, ["q"])
    await service.fail(task.task_id, lease_of(taken), BOOM)
    assert (await service.get_task(task.task_id)).status is TaskStatus.FAILED

    clock.advance(60)
    back = await service.requeue(task.task_id)
    assert back.status is TaskStatus.QUEUED
    assert back.attempts == 0
    assert back.completed_at is None
    assert back.lease_id is None
    retaken = await take_one(service, ["q"])
    assert retaken.task_id == task.task_id
    assert retaken.attempts == 1
    done = await service.complete(task.task_id, lease_of(retaken), OK)
    assert done.status is TaskStatus.SUCCEEDED


async def test_requeue_a_task_that_has_not_failed_is_refused(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    queued = await service.put(TaskSpec(queue="q"))
    scheduled = await service.put(TaskSpec(queue="q", delay_s=100))
    running = await service.put(TaskSpec(queue="r"))
    await take_one(service, ["r"])
    succeeded = await service.put(TaskSpec(queue="s"))
    taken = await take_one(service, ["s"])
    await service.complete(succeeded.task_id, lease_of(taken), OK)
    cancelled = await service.put(TaskSpec(queue="q"))
    await service.cancel(cancelled.task_id)
    expired = await service.put(TaskSpec(queue="e", timeout_s=1))
    clock.advance(2)
    await clocked_engine.sweep()
    for task in (queued, scheduled, running, succeeded, cancelled, expired):
        before = await service.get_task(task.task_id)
        with pytest.raises(InvalidTransition):
            await service.requeue(task.task_id)
        assert await service.get_task(task.task_id) == before


# ---- deadlines ----


async def test_queued_task_expires_at_its_deadline(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    task = await service.put(TaskSpec(queue="q", timeout_s=30))
    clock.advance(29)
    assert (await clocked_engine.sweep()).expired == 0
    assert (await service.get_task(task.task_id)).status is TaskStatus.QUEUED
    clock.advance(1.5)
    report = await clocked_engine.sweep()
    assert report.expired == 1
    expired = await service.get_task(task.task_id)
    assert expired.status is TaskStatus.EXPIRED
    assert expired.completed_at == clock.now
    assert expired.error is not None
    assert await service.take(["q"]) == []


async def test_running_task_expires_at_its_deadline(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    task = await service.put(TaskSpec(queue="q", timeout_s=30))
    taken = await take_one(service, ["q"], lease_s=300)
    clock.advance(31)
    assert (await clocked_engine.sweep()).expired == 1
    expired = await service.get_task(task.task_id)
    assert expired.status is TaskStatus.EXPIRED
    assert expired.lease_id is None
    with pytest.raises(LeaseLost):
        await service.complete(task.task_id, lease_of(taken), OK)
    with pytest.raises(LeaseLost):
        await service.heartbeat(task.task_id, lease_of(taken))
    assert await service.get_task(task.task_id) == expired


async def test_scheduled_task_expires_at_its_deadline(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    task = await service.put(TaskSpec(queue="q", timeout_s=10, delay_s=60))
    clock.advance(11)
    assert (await clocked_engine.sweep()).expired == 1
    assert (await service.get_task(task.task_id)).status is TaskStatus.EXPIRED
    clock.advance(60)
    await clocked_engine.sweep()
    assert (await service.get_task(task.task_id)).status is TaskStatus.EXPIRED
    assert await service.take(["q"]) == []


async def test_finished_task_does_not_expire(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    task = await service.put(TaskSpec(queue="q", timeout_s=10))
    taken = await take_one(service, ["q"])
    await service.complete(task.task_id, lease_of(taken), OK)
    clock.advance(11)
    assert (await clocked_engine.sweep()).expired == 0
    assert (await service.get_task(task.task_id)).status is TaskStatus.SUCCEEDED
