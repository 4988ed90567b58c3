"""Batched complete: each item settles on its own terms, in one round trip."""

from __future__ import annotations

import asyncio

from conveyor.domain.clock import ManualClock
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import TaskResult
from conveyor.engines import Engine
from conveyor.engines.engine import Completion
from conveyor.errors import LeaseLost, NotFound
from conveyor.service.tasks import TaskService
from tests.conformance._support import OK, lease_of, put_n


async def test_each_item_is_settled_or_refused_alone(
    service: TaskService, clocked_engine: Engine
) -> None:
    await put_n(service, "q", 4)
    a, b, c, d = await service.take(["q"], size=4)
    await service.cancel(d.task_id)  # running: the complete ends it cancelled
    outcomes = await service.complete_many(
        [
            Completion(a.task_id, lease_of(a), OK),
            Completion(b.task_id, "not-the-lease", OK),
            Completion("no-such-task", "x", OK),
            Completion(c.task_id, lease_of(c), TaskResult(status_code=503, body="busy")),
            Completion(a.task_id, lease_of(a), OK),  # the same lease twice: the second loses
            Completion(d.task_id, lease_of(d), OK),
        ]
    )
    assert getattr(outcomes[0], "status", None) is TaskStatus.SUCCEEDED
    assert isinstance(outcomes[1], LeaseLost)
    assert isinstance(outcomes[2], NotFound)
    assert getattr(outcomes[3], "status", None) is TaskStatus.SUCCEEDED
    assert isinstance(outcomes[4], LeaseLost)
    assert getattr(outcomes[5], "status", None) is TaskStatus.CANCELLED

    assert (await clocked_engine.get_task(a.task_id)).result == OK
    untouched = await clocked_engine.get_task(b.task_id)
    assert untouched.status is TaskStatus.RUNNING
    assert untouched.lease_id == b.lease_id
    stored = await clocked_engine.get_task(c.task_id)
    assert stored.result == TaskResult(status_code=503, body="busy")
    stats = await service.queue_stats("q")
    assert stats.total(TaskStatus.SUCCEEDED) == 2
    assert stats.total(TaskStatus.RUNNING) == 1
    assert stats.total(TaskStatus.CANCELLED) == 1


async def test_an_expired_lease_is_refused(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    await put_n(service, "q", 1)
    (task,) = await service.take(["q"], lease_s=5)
    clock.advance(6)
    (outcome,) = await service.complete_many([Completion(task.task_id, lease_of(task), OK)])
    assert isinstance(outcome, LeaseLost)
    assert (await clocked_engine.get_task(task.task_id)).result is None


async def test_concurrent_batches_with_one_lease_settle_once(
    service: TaskService, clocked_engine: Engine
) -> None:
    await put_n(service, "q", 10)
    tasks = await service.take(["q"], size=10)
    items = [Completion(t.task_id, lease_of(t), OK) for t in tasks]
    results = await asyncio.gather(*(service.complete_many(items) for _ in range(5)))
    for index in range(10):
        wins = [
            r[index] for r in results if getattr(r[index], "status", None) is TaskStatus.SUCCEEDED
        ]
        losses = [r[index] for r in results if isinstance(r[index], LeaseLost)]
        assert (len(wins), len(losses)) == (1, 4)
    stats = await service.queue_stats("q")
    assert stats.total(TaskStatus.SUCCEEDED) == 10
