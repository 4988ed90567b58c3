"""Waiting for work: a watch wakes on a put, and, with a Sweeper running, when things fall due.

These run in real time with short delays; every bound is far above what a healthy engine
needs (milliseconds) and far below the fallbacks a broken one would hit (the Sweeper's
one-second cap, or the wait's own timeout).
"""

from __future__ import annotations

import asyncio
import time

from conveyor.domain.queues import QueueConfig, QueueUpdate
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import Task, TaskSpec
from conveyor.engines import Engine
from conveyor.engines.engine import WorkWatch
from conveyor.service.maintenance import Sweeper
from conveyor.service.tasks import TaskService
from tests.conformance._support import BOOM, lease_of, take_one

PROMPT_S = 0.5  # a wake-up counts as prompt if it comes this soon after the work is ready


async def _put_later(service: TaskService, spec: TaskSpec, delay_s: float) -> float:
    await asyncio.sleep(delay_s)
    await service.put(spec)
    return time.monotonic()


async def _take_when_woken(
    service: TaskService, watch: WorkWatch, queues: list[str], within_s: float
) -> tuple[Task, float]:
    """Take as a worker does: take, and if there is nothing, wait on the watch; then take again."""
    deadline = time.monotonic() + within_s
    while True:
        tasks = await service.take(queues)
        if tasks:
            return tasks[0], time.time()
        remaining = deadline - time.monotonic()
        assert remaining > 0, "no work arrived in time"
        await watch.wait(remaining)


async def _let_the_sweeper_settle() -> None:
    """Let the Sweeper sweep an idle store, so it sleeps its full second unless told better.

    What the test does next must then reach the Sweeper through the engine's due-time
    notice; a Sweeper that only sweeps on its timer would be late by most of a second.
    """
    await asyncio.sleep(0.05)


# ---- a put wakes a watch ----


async def test_put_wakes_a_watch(engine: Engine) -> None:
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="q"))
    async with engine.watch(["q"]) as watch:
        putter = asyncio.create_task(_put_later(service, TaskSpec(queue="q"), 0.05))
        woke = await watch.wait(5.0)
        woke_at = time.monotonic()
        put_at = await putter
    assert woke is True
    assert woke_at - put_at < PROMPT_S
    assert len(await service.take(["q"])) == 1


async def test_put_before_the_wait_is_not_lost(engine: Engine) -> None:
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="q"))
    async with engine.watch(["q"]) as watch:
        await service.put(TaskSpec(queue="q"))
        assert await watch.wait(1.0) is True


async def test_wait_times_out_without_work(engine: Engine) -> None:
    await engine.register_queue(QueueConfig(name="q"))
    async with engine.watch(["q"]) as watch:
        assert await watch.wait(0.05) is False


async def test_watch_on_several_queues_wakes_for_any(engine: Engine) -> None:
    service = TaskService(engine)
    async with engine.watch(["a", "b"]) as watch:
        putter = asyncio.create_task(_put_later(service, TaskSpec(queue="b", level=3), 0.05))
        assert await watch.wait(5.0) is True
        await putter
    assert len(await service.take(["b"])) == 1


async def test_take_with_wait_returns_as_soon_as_a_put_lands(engine: Engine) -> None:
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="q"))
    start = time.monotonic()
    taken, put_at = await asyncio.gather(
        service.take(["q"], wait_s=2), _put_later(service, TaskSpec(queue="q"), 0.05)
    )
    assert len(taken) == 1
    assert time.monotonic() - put_at < PROMPT_S
    assert time.monotonic() - start < 2


async def test_take_with_wait_on_a_queue_not_yet_registered(engine: Engine) -> None:
    service = TaskService(engine)
    taken, put_at = await asyncio.gather(
        service.take(["new"], wait_s=2), _put_later(service, TaskSpec(queue="new"), 0.05)
    )
    assert [t.queue for t in taken] == ["new"]
    assert time.monotonic() - put_at < PROMPT_S


async def test_take_with_wait_gives_nothing_after_the_wait(engine: Engine) -> None:
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="q"))
    start = time.monotonic()
    assert await service.take(["q"], wait_s=0.1) == []
    assert time.monotonic() - start >= 0.09


async def test_resume_wakes_a_waiting_taker(engine: Engine) -> None:
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="q", paused=True))
    await service.put(TaskSpec(queue="q"))

    async def resume_later() -> float:
        await asyncio.sleep(0.05)
        await service.update_queue("q", QueueUpdate(paused=False))
        return time.monotonic()

    taken, resumed_at = await asyncio.gather(service.take(["q"], wait_s=2), resume_later())
    assert len(taken) == 1
    assert time.monotonic() - resumed_at < PROMPT_S


# ---- the Sweeper wakes a watch when something falls due ----


async def test_delay_coming_due_wakes_a_watch(engine: Engine) -> None:
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="q"))
    async with Sweeper(engine), engine.watch(["q"]) as watch:
        await _let_the_sweeper_settle()
        put = await service.put(TaskSpec(queue="q", delay_s=0.2))
        assert put.status is TaskStatus.SCHEDULED
        taken, at = await _take_when_woken(service, watch, ["q"], within_s=3)
    assert taken.task_id == put.task_id
    assert at >= put.run_at
    assert at - put.run_at < PROMPT_S


async def test_retry_coming_due_wakes_a_watch(engine: Engine) -> None:
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="q", max_attempts=3))
    put = await service.put(TaskSpec(queue="q"))
    async with Sweeper(engine), engine.watch(["q"]) as watch:
        await _let_the_sweeper_settle()
        first = await take_one(service, ["q"])
        failed = await service.fail(put.task_id, lease_of(first), BOOM, retry_after_s=0.2)
        assert failed.status is TaskStatus.SCHEDULED
        taken, at = await _take_when_woken(service, watch, ["q"], within_s=3)
    assert taken.task_id == put.task_id
    assert taken.attempts == 2
    assert at >= failed.run_at
    assert at - failed.run_at < PROMPT_S


async def test_expired_lease_wakes_a_watch(engine: Engine) -> None:
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="q", max_attempts=3))
    put = await service.put(TaskSpec(queue="q"))
    async with Sweeper(engine), engine.watch(["q"]) as watch:
        await _let_the_sweeper_settle()
        first = await take_one(service, ["q"], lease_s=0.2)
        assert first.lease_expires_at is not None
        taken, at = await _take_when_woken(service, watch, ["q"], within_s=3)
    assert taken.task_id == put.task_id
    assert taken.attempts == 2
    assert at >= first.lease_expires_at
    assert at - first.lease_expires_at < PROMPT_S


async def test_take_with_wait_gets_a_delayed_task_when_due(engine: Engine) -> None:
    service = TaskService(engine)
    async with Sweeper(engine):
        await _let_the_sweeper_settle()
        put = await service.put(TaskSpec(queue="q", delay_s=0.2))
        taken = await service.take(["q"], wait_s=3)
        at = time.time()
    assert [t.task_id for t in taken] == [put.task_id]
    assert at - put.run_at < PROMPT_S
