"""Waiting for one task to end, as a blocking caller does."""

from __future__ import annotations

import asyncio

import pytest

from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import TaskSpec
from conveyor.engines import Engine
from conveyor.errors import WaitTimeout
from conveyor.service.maintenance import Sweeper
from conveyor.service.tasks import TaskService
from tests.conformance._support import OK, lease_of


async def _worker(service: TaskService) -> None:
    """Take one task as soon as there is one, and complete it."""
    tasks = await service.take(["q"], wait_s=5)
    (task,) = tasks
    await service.complete(task.task_id, lease_of(task), OK)


async def test_run_returns_the_result_once_a_worker_completes(engine: Engine) -> None:
    service = TaskService(engine)
    worker = asyncio.create_task(_worker(service))
    task = await service.run(TaskSpec(queue="q", data={"x": 1}), wait_s=5)
    await worker
    assert task.status is TaskStatus.SUCCEEDED
    assert task.result == OK


async def test_run_times_out_and_cancels_its_task(engine: Engine) -> None:
    service = TaskService(engine)
    with pytest.raises(WaitTimeout, match="cancelled"):
        await service.run(TaskSpec(queue="q", task_id="slow"), wait_s=0.05)
    assert (await engine.get_task("slow")).status is TaskStatus.CANCELLED


async def test_a_caller_going_away_cancels_its_task(engine: Engine) -> None:
    service = TaskService(engine)
    async with engine.watch(["q"]) as put_landed:
        caller = asyncio.create_task(service.run(TaskSpec(queue="q", task_id="gone"), wait_s=5))
        assert await put_landed.wait(2)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert (await engine.get_task("gone")).status is TaskStatus.CANCELLED


async def test_watch_wakes_on_every_way_a_task_ends(engine: Engine) -> None:
    service = TaskService(engine)
    ids = await service.put_many([TaskSpec(queue="q", data=i) for i in range(3)])
    async with engine.watch_task(ids[0]) as cancelled, engine.watch_task(ids[1]) as expired:
        await service.cancel(ids[0])
        assert await cancelled.wait(1)
        await service.put(TaskSpec(queue="d", task_id="deadline", timeout_s=0.05))
        async with engine.watch_task("deadline") as deadline, Sweeper(engine):
            assert await deadline.wait(2)
        assert (await engine.get_task("deadline")).status is TaskStatus.EXPIRED
        assert not await expired.wait(0.01)
