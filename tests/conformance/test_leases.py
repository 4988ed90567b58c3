"""Settling a lease: complete, fail (retry, dead letter), heartbeat, and lost leases."""

from __future__ import annotations

import time

import pytest

from conveyor.domain.clock import ManualClock
from conveyor.domain.queues import QueueConfig
from conveyor.domain.retry import Backoff, BackoffKind
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import TaskError, TaskResult, TaskSpec
from conveyor.engines import Engine
from conveyor.errors import LeaseLost, NotFound
from conveyor.service.maintenance import Sweeper
from conveyor.service.tasks import TaskService
from tests.conformance._support import (
    BOOM,
    FIXED_10S,
    OK,
    lease_of,
    take_one,
    wait_for_status,
)

# ---- complete ----


async def test_complete_records_the_result(service: TaskService, clock: ManualClock) -> None:
    task = await service.put(TaskSpec(queue="q"))
    taken = await take_one(service, ["q"], worker_id="w")
    clock.advance(3)
    done = await service.complete(task.task_id, lease_of(taken), OK)
    assert done.status is TaskStatus.SUCCEEDED
    assert done.result == OK
    assert done.completed_at == clock.now
    assert done.attempts == 1
    assert (done.lease_id, done.lease_expires_at) == (None, None)
    assert await service.get_task(task.task_id) == done
    assert await service.take(["q"]) == []


async def test_complete_records_the_result_exactly_once(service: TaskService) -> None:
    task = await service.put(TaskSpec(queue="q"))
    lease = lease_of(await take_one(service, ["q"]))
    first = await service.complete(task.task_id, lease, OK)
    with pytest.raises(LeaseLost):
        await service.complete(task.task_id, lease, TaskResult(status_code=500, body="other"))
    with pytest.raises(LeaseLost):
        await service.fail(task.task_id, lease, BOOM)
    assert await service.get_task(task.task_id) == first


async def test_verbs_on_an_unknown_task_raise_not_found(service: TaskService) -> None:
    with pytest.raises(NotFound):
        await service.get_task("nope")
    with pytest.raises(NotFound):
        await service.complete("nope", "lease", OK)
    with pytest.raises(NotFound):
        await service.fail("nope", "lease", BOOM)
    with pytest.raises(NotFound):
        await service.heartbeat("nope", "lease")
    with pytest.raises(NotFound):
        await service.cancel("nope")
    with pytest.raises(NotFound):
        await service.requeue("nope")


# ---- fail ----


async def test_fail_retries_after_the_backoff(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    await service.register_queue(QueueConfig(name="q", max_attempts=3, backoff=FIXED_10S))
    task = await service.put(TaskSpec(queue="q"))
    taken = await take_one(service, ["q"])
    failed = await service.fail(task.task_id, lease_of(taken), BOOM)
    assert failed.status is TaskStatus.SCHEDULED
    assert failed.run_at == clock.now + 10
    assert failed.error == BOOM
    assert failed.attempts == 1
    assert failed.lease_id is None
    assert await service.take(["q"]) == []

    clock.advance(9)
    await clocked_engine.sweep()
    assert await service.take(["q"]) == []
    clock.advance(1.5)
    assert (await clocked_engine.sweep()).promoted == 1
    again = await take_one(service, ["q"])
    assert again.task_id == task.task_id
    assert again.attempts == 2
    assert lease_of(again) != lease_of(taken)


async def test_exponential_backoff_doubles(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    backoff = Backoff(kind=BackoffKind.EXPONENTIAL, base_s=2.0, cap_s=5.0, jitter=0.0)
    await service.register_queue(QueueConfig(name="q", max_attempts=5, backoff=backoff))
    task = await service.put(TaskSpec(queue="q"))
    for delay in (2.0, 4.0, 5.0):
        taken = await take_one(service, ["q"])
        failed = await service.fail(task.task_id, lease_of(taken), BOOM)
        assert failed.status is TaskStatus.SCHEDULED
        assert failed.run_at == clock.now + delay
        clock.advance(delay)
        await clocked_engine.sweep()


async def test_fail_honours_retry_after(service: TaskService, clock: ManualClock) -> None:
    await service.register_queue(QueueConfig(name="q", backoff=FIXED_10S))
    task = await service.put(TaskSpec(queue="q"))
    taken = await take_one(service, ["q"])
    failed = await service.fail(task.task_id, lease_of(taken), BOOM, retry_after_s=2.5)
    assert failed.status is TaskStatus.SCHEDULED
    assert failed.run_at == clock.now + 2.5

    task = await service.put(TaskSpec(queue="q"))
    taken = await take_one(service, ["q"])
    failed = await service.fail(task.task_id, lease_of(taken), BOOM, retry_after_s=0)
    assert failed.status is TaskStatus.QUEUED
    assert (await take_one(service, ["q"])).task_id == task.task_id


async def test_fail_dead_letters_when_attempts_are_spent(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    await service.register_queue(QueueConfig(name="q", max_attempts=2, backoff=FIXED_10S))
    task = await service.put(TaskSpec(queue="q"))
    taken = await take_one(service, ["q"])
    await service.fail(task.task_id, lease_of(taken), BOOM)
    clock.advance(10)
    await clocked_engine.sweep()
    taken = await take_one(service, ["q"])
    last_error = TaskError(message="still broken", code="bad")
    dead = await service.fail(task.task_id, lease_of(taken), last_error)
    assert dead.status is TaskStatus.FAILED
    assert dead.attempts == 2
    assert dead.error == last_error
    assert dead.completed_at == clock.now
    clock.advance(1000)
    await clocked_engine.sweep()
    assert (await service.get_task(task.task_id)).status is TaskStatus.FAILED
    assert await service.take(["q"]) == []


async def test_fail_without_retry_is_permanent(service: TaskService) -> None:
    await service.register_queue(QueueConfig(name="q", max_attempts=5))
    task = await service.put(TaskSpec(queue="q"))
    taken = await take_one(service, ["q"])
    dead = await service.fail(task.task_id, lease_of(taken), BOOM, retry=False)
    assert dead.status is TaskStatus.FAILED
    assert dead.attempts == 1
    assert await service.take(["q"]) == []


# ---- heartbeat ----


async def test_heartbeat_extends_the_lease(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    task = await service.put(TaskSpec(queue="q"))
    taken = await take_one(service, ["q"], lease_s=10)
    lease = lease_of(taken)
    clock.advance(8)
    beat = await service.heartbeat(task.task_id, lease)
    assert beat.cancelled is False
    assert beat.lease_expires_at == clock.now + 10  # the lease's own length, from now
    clock.advance(8)
    await clocked_engine.sweep()
    assert (await service.get_task(task.task_id)).status is TaskStatus.RUNNING

    beat = await service.heartbeat(task.task_id, lease, extend_s=30)
    assert beat.lease_expires_at == clock.now + 30
    stored = await service.get_task(task.task_id)
    assert stored.lease_expires_at == clock.now + 30
    assert stored.lease_id == lease
    assert stored.attempts == 1
    clock.advance(29)
    await clocked_engine.sweep()
    done = await service.complete(task.task_id, lease, OK)
    assert done.status is TaskStatus.SUCCEEDED


# ---- lost leases ----


async def test_stale_lease_is_lost_and_changes_nothing(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    task = await service.put(TaskSpec(queue="q"))
    old = lease_of(await take_one(service, ["q"], lease_s=5))
    clock.advance(6)
    await clocked_engine.sweep()
    requeued = await service.get_task(task.task_id)
    assert requeued.status is TaskStatus.QUEUED
    for call in (
        service.complete(task.task_id, old, OK),
        service.fail(task.task_id, old, BOOM),
        service.heartbeat(task.task_id, old),
    ):
        with pytest.raises(LeaseLost):
            await call
    assert await service.get_task(task.task_id) == requeued

    current = await take_one(service, ["q"], lease_s=5)
    for call in (
        service.complete(task.task_id, old, OK),
        service.fail(task.task_id, old, BOOM),
        service.heartbeat(task.task_id, old),
    ):
        with pytest.raises(LeaseLost):
            await call
    assert await service.get_task(task.task_id) == current


async def test_foreign_lease_is_lost_and_changes_nothing(service: TaskService) -> None:
    first = await service.put(TaskSpec(queue="q"))
    second = await service.put(TaskSpec(queue="q"))
    a, b = await service.take(["q"], size=2)
    assert (a.task_id, b.task_id) == (first.task_id, second.task_id)
    for call in (
        service.complete(a.task_id, lease_of(b), OK),
        service.fail(a.task_id, lease_of(b), BOOM),
        service.heartbeat(a.task_id, lease_of(b)),
        service.complete(a.task_id, "made-up", OK),
    ):
        with pytest.raises(LeaseLost):
            await call
    assert await service.get_task(a.task_id) == a
    assert await service.get_task(b.task_id) == b


async def test_lease_on_a_task_never_taken_is_lost(service: TaskService) -> None:
    task = await service.put(TaskSpec(queue="q"))
    with pytest.raises(LeaseLost):
        await service.complete(task.task_id, "made-up", OK)
    assert await service.get_task(task.task_id) == task


async def test_expired_lease_is_lost_before_any_sweep(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    task = await service.put(TaskSpec(queue="q"))
    taken = await take_one(service, ["q"], lease_s=5)
    clock.advance(5.5)
    for call in (
        service.complete(task.task_id, lease_of(taken), OK),
        service.fail(task.task_id, lease_of(taken), BOOM),
        service.heartbeat(task.task_id, lease_of(taken)),
    ):
        with pytest.raises(LeaseLost):
            await call
    assert await service.get_task(task.task_id) == taken
    report = await clocked_engine.sweep()
    assert report.requeued == 1
    assert (await service.get_task(task.task_id)).status is TaskStatus.QUEUED


# ---- lease expiry ----


async def test_expired_lease_requeues_counting_the_attempt(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    await service.register_queue(QueueConfig(name="q", max_attempts=2))
    task = await service.put(TaskSpec(queue="q"))
    await take_one(service, ["q"], lease_s=5)
    clock.advance(4)
    assert (await clocked_engine.sweep()).requeued == 0
    clock.advance(1.5)
    report = await clocked_engine.sweep()
    assert report.requeued == 1
    back = await service.get_task(task.task_id)
    assert back.status is TaskStatus.QUEUED
    assert back.attempts == 1
    assert back.lease_id is None
    assert back.error is not None

    retaken = await take_one(service, ["q"], lease_s=5)
    assert retaken.attempts == 2
    clock.advance(6)
    report = await clocked_engine.sweep()
    assert report.dead_lettered == 1
    dead = await service.get_task(task.task_id)
    assert dead.status is TaskStatus.FAILED
    assert dead.attempts == 2
    assert dead.completed_at == clock.now


async def test_sweeper_requeues_an_expired_lease_within_a_second(engine: Engine) -> None:
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="q", max_attempts=2))
    task = await service.put(TaskSpec(queue="q"))
    async with Sweeper(engine):
        taken = await take_one(service, ["q"], lease_s=0.2)
        assert taken.lease_expires_at is not None
        back, at = await wait_for_status(engine, task.task_id, {TaskStatus.QUEUED}, within_s=2)
        assert at - taken.lease_expires_at < 1.0
        assert back.attempts == 1

        taken = await take_one(service, ["q"], lease_s=0.2)
        assert taken.attempts == 2
        assert taken.lease_expires_at is not None
        dead, at = await wait_for_status(engine, task.task_id, {TaskStatus.FAILED}, within_s=2)
        assert at - taken.lease_expires_at < 1.0
        assert dead.attempts == 2
    assert time.time() >= taken.lease_expires_at
