"""Concurrent callers: every verb is atomic, so racing calls leave one consistent outcome."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict

from conveyor.domain.queues import QueueConfig
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import Task, TaskResult, TaskSpec, build_new_task
from conveyor.engines import Engine
from conveyor.errors import LeaseLost
from conveyor.service.tasks import TaskService
from tests.conformance._support import OK, collect, lease_of, put_n, statuses


async def test_concurrent_takers_lease_each_task_once(engine: Engine) -> None:
    service = TaskService(engine)
    ids = await put_n(service, "q", 10)
    results = await asyncio.gather(*(service.take(["q"], worker_id=f"w{i}") for i in range(20)))
    taken = [task for tasks in results for task in tasks]
    assert sorted(t.task_id for t in taken) == sorted(ids)
    assert len({lease_of(t) for t in taken}) == 10
    assert all(t.attempts == 1 for t in taken)
    assert await statuses(engine, ids) == [TaskStatus.RUNNING] * 10
    for task in taken:
        assert (await engine.get_task(task.task_id)).worker_id == task.worker_id


async def test_concurrent_takers_with_sizes_lease_each_task_once(engine: Engine) -> None:
    service = TaskService(engine)
    ids = await put_n(service, "q", 50)
    results = await asyncio.gather(*(service.take(["q"], size=i % 4 + 1) for i in range(30)))
    taken = [task.task_id for tasks in results for task in tasks]
    assert sorted(taken) == sorted(ids)


async def test_concurrent_completes_with_one_lease_one_wins(engine: Engine) -> None:
    service = TaskService(engine)
    task = await service.put(TaskSpec(queue="q"))
    (taken,) = await service.take(["q"])
    results = [TaskResult(status_code=200, body={"worker": i}) for i in range(5)]
    outcomes = await asyncio.gather(
        *(engine.complete(task.task_id, lease_of(taken), r) for r in results),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if isinstance(o, Task)]
    losers = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(winners) == 1
    assert len(losers) == 4
    assert all(isinstance(o, LeaseLost) for o in losers)
    stored = await engine.get_task(task.task_id)
    assert stored.status is TaskStatus.SUCCEEDED
    assert stored.result == winners[0].result
    assert stored.result in results


async def test_complete_racing_lease_expiry_takes_effect_once(engine: Engine) -> None:
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="q", max_attempts=3))
    ids = await put_n(service, "q", 20)
    taken = await service.take(["q"], size=20, lease_s=0.15)
    assert len(taken) == 20

    async def complete_near_expiry(task: Task, offset_s: float) -> bool:
        assert task.lease_expires_at is not None
        await asyncio.sleep(max(0.0, task.lease_expires_at + offset_s - time.time()))
        try:
            await engine.complete(task.task_id, lease_of(task), OK)
        except LeaseLost:
            return False
        return True

    async def sweep_through_expiry() -> int:
        requeued = 0
        end = max(t.lease_expires_at or 0 for t in taken) + 0.06
        while time.time() < end:
            requeued += (await engine.sweep()).requeued
            await asyncio.sleep(0.002)
        return requeued

    # completes land from 40 ms before the expiry to 36 ms after it, with sweeps throughout
    outcomes = await asyncio.gather(
        *(complete_near_expiry(t, (i - 10) * 0.004) for i, t in enumerate(taken)),
        sweep_through_expiry(),
        sweep_through_expiry(),
    )
    completed = outcomes[:20]
    requeued = sum(outcomes[20:]) + (await engine.sweep()).requeued
    assert requeued == completed.count(False)
    for task, won in zip(taken, completed, strict=True):
        stored = await engine.get_task(task.task_id)
        if won:
            assert stored.status is TaskStatus.SUCCEEDED
            assert stored.result == OK
        else:
            assert stored.status is TaskStatus.QUEUED
            assert stored.result is None
            assert stored.attempts == 1
    # a task that went back is taken again, and counted once more
    again = await service.take(["q"], size=20)
    assert sorted(t.task_id for t in again) == sorted(
        t.task_id for t, won in zip(taken, completed, strict=True) if not won
    )
    assert all(t.attempts == 2 for t in again)
    assert len(await collect(engine, "q")) == len(ids)


async def test_sequential_under_concurrent_takers(engine: Engine) -> None:
    service = TaskService(engine)
    queues = ["s1", "s2", "s3"]
    ids = {q: await put_n(service, q, 6) for q in queues}
    holding: defaultdict[str, set[str]] = defaultdict(set)
    taken_ids: list[str] = []
    done = 0
    total = sum(len(v) for v in ids.values())

    async def worker() -> None:
        nonlocal done
        while done < total:
            tasks = await service.take(queues, strategy="sequential", size=2)
            if not tasks:
                await asyncio.sleep(0.001)
                continue
            assert len({t.queue for t in tasks}) == len(tasks), "two from one queue in a take"
            for task in tasks:
                assert not holding[task.queue], f"two running in {task.queue}"
                holding[task.queue].add(task.task_id)
                taken_ids.append(task.task_id)
            for queue in queues:
                running = (await engine.queue_stats(queue)).total(TaskStatus.RUNNING)
                assert running <= 1, f"{running} running in {queue}"
            await asyncio.sleep(0)
            for task in tasks:
                holding[task.queue].discard(task.task_id)
                await service.complete(task.task_id, lease_of(task), OK)
                done += 1

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(10))), timeout=30)
    assert sorted(taken_ids) == sorted(i for v in ids.values() for i in v)
    for queue in queues:
        # one at a time, so each queue ran in put order
        order = [i for i in taken_ids if i in set(ids[queue])]
        assert order == ids[queue]
        assert (await engine.queue_stats(queue)).total(TaskStatus.SUCCEEDED) == 6


async def test_concurrent_idempotent_puts_store_one_task(engine: Engine) -> None:
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="q"))
    spec = TaskSpec(queue="q", task_id="only-once", data={"x": 1})
    answers = await asyncio.gather(*(service.put(spec) for _ in range(10)))
    assert {a.task_id for a in answers} == {"only-once"}
    assert all(a.status is TaskStatus.QUEUED for a in answers)
    assert [t.task_id for t in await collect(engine, "q")] == ["only-once"]
    assert (await engine.queue_stats("q")).total(TaskStatus.QUEUED) == 1
    assert len(await service.take(["q"], size=10)) == 1


async def test_concurrent_engine_puts_of_one_id_create_it_once(engine: Engine) -> None:
    queue = await engine.register_queue(QueueConfig(name="q"))
    new = build_new_task(TaskSpec(queue="q", task_id="one"), queue, time.time())
    created = await asyncio.gather(*(engine.put([new]) for _ in range(10)))
    assert Counter(flag for (flag,) in created) == {True: 1, False: 9}
    assert len(await collect(engine, "q")) == 1


async def test_cancel_racing_take(engine: Engine) -> None:
    service = TaskService(engine)
    ids = await put_n(service, "q", 10)
    taken_list, cancel_answers = await asyncio.gather(
        service.take(["q"], size=10),
        asyncio.gather(*(service.cancel(i) for i in ids)),
    )
    taken = {t.task_id for t in taken_list}
    for task_id, answer in zip(ids, cancel_answers, strict=True):
        stored = await engine.get_task(task_id)
        if task_id in taken:  # taken first: the cancel waits for the worker's next word
            assert stored.status is TaskStatus.RUNNING
            assert stored.cancel_requested is True
            assert answer.status is TaskStatus.RUNNING
        else:  # cancelled first: the take never saw it
            assert stored.status is TaskStatus.CANCELLED
            assert answer.status is TaskStatus.CANCELLED
