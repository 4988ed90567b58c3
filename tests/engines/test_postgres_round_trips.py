"""The hot verbs cost one round trip each on PostgreSQL (fail two), and what the guarded
statements leave to the general path still comes out right, counts included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from asyncpg.connection import Connection

from conveyor.domain.queues import QueueConfig
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import TaskError, TaskResult, TaskSpec
from conveyor.engines import create_engine
from conveyor.engines.engine import Completion, Engine, Settled
from conveyor.errors import LeaseLost, NotFound
from conveyor.service.tasks import TaskService
from tests.conformance._support import lease_of
from tests.conftest import postgres_url

OK = TaskResult(status_code=200, body={"ok": True})
SENDS = ("execute", "fetch", "fetchrow", "fetchval", "executemany", "prepare")


@contextmanager
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The statements the verbs send (not the notice sender's or the listener's)."""
    sent: list[str] = []
    apart = {"conveyor-postgres-notices", "conveyor-postgres-listener"}
    with monkeypatch.context() as patch:
        for name in SENDS:
            original = getattr(Connection, name)

            def counted(
                original: Callable[..., Awaitable[Any]] = original, name: str = name
            ) -> Callable[..., Awaitable[Any]]:
                async def send(self: Connection, *args: Any, **kwargs: Any) -> Any:
                    task = asyncio.current_task()
                    if task is None or task.get_name() not in apart:
                        sent.append(name)
                    return await original(self, *args, **kwargs)

                return send

            patch.setattr(Connection, name, counted())
        yield sent


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    engine = create_engine(postgres_url())
    await engine.open()
    yield engine
    await engine.close()


@pytest.fixture
async def service(engine: Engine) -> TaskService:
    service = TaskService(engine)
    await service.register_queue(QueueConfig(name="q"))
    await service.put(TaskSpec(queue="q"))  # the queue is known to the service's cache
    (warm,) = await service.take(["q"])
    await service.complete(warm.task_id, lease_of(warm), OK)
    await service.take(["q"], size=20, strategy="active_passive")  # its request is known too
    return service


async def stats(engine: Engine) -> dict[TaskStatus, int]:
    found = await engine.queue_stats("q")
    return {status: n for status in TaskStatus if (n := found.total(status))}


async def test_hot_verbs_are_one_round_trip(
    service: TaskService, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with round_trips(monkeypatch) as sent:
        await service.put(TaskSpec(queue="q"))
        assert len(sent) == 1
        await service.put_many([TaskSpec(queue="q") for _ in range(50)])
        assert len(sent) == 2
        (task,) = await service.take(["q"])
        assert len(sent) == 3
        beat = await service.heartbeat(task.task_id, lease_of(task), 120.0)
        assert beat.lease_expires_at is not None
        assert not beat.cancelled
        assert len(sent) == 4
        await service.complete(task.task_id, lease_of(task), OK)
        assert len(sent) == 5
        tasks = await service.take(["q"], size=20, strategy="active_passive")
        assert len(sent) == 6
        settled = await service.complete_many(
            [Completion(t.task_id, lease_of(t), OK) for t in tasks]
        )
        assert len(sent) == 7
        assert settled == [Settled("q", TaskStatus.SUCCEEDED)] * 20
        (task,) = await service.take(["q"])
        sent.clear()
        await service.fail(task.task_id, lease_of(task), TaskError(message="x"))
        assert len(sent) == 2
    assert await stats(engine) == {
        TaskStatus.QUEUED: 29,
        TaskStatus.SCHEDULED: 1,
        TaskStatus.SUCCEEDED: 22,
    }


async def test_what_the_guarded_statements_leave_the_general_path_answers(
    service: TaskService, engine: Engine
) -> None:
    await service.put_many([TaskSpec(queue="q") for _ in range(4)])
    a, b, c, d = await service.take(["q"], size=4)
    await service.cancel(b.task_id)  # running: asked to stop
    with pytest.raises(LeaseLost):
        await service.complete(a.task_id, "not-the-lease", OK)
    assert (await service.heartbeat(b.task_id, lease_of(b))).cancelled
    with pytest.raises(NotFound):
        await service.complete("no-such-task", "lease", OK)
    await service.cancel(c.task_id)
    settled = await service.complete_many(
        [
            Completion(a.task_id, lease_of(a), OK),
            Completion(a.task_id, lease_of(a), OK),  # named twice: the second is refused
            Completion(c.task_id, lease_of(c), OK),  # asked to cancel: cancelled
            Completion(d.task_id, "stale", OK),
        ]
    )
    assert settled[0] == Settled("q", TaskStatus.SUCCEEDED)
    assert isinstance(settled[1], LeaseLost)
    assert settled[2] == Settled("q", TaskStatus.CANCELLED)
    assert isinstance(settled[3], LeaseLost)
    assert (await service.fail(d.task_id, lease_of(d), TaskError(message="x"))).status in (
        TaskStatus.QUEUED,
        TaskStatus.SCHEDULED,
    )
    with pytest.raises(LeaseLost):
        await service.fail(d.task_id, lease_of(d), TaskError(message="x"))
    counts = await stats(engine)
    assert counts[TaskStatus.SUCCEEDED] == 2
    assert counts[TaskStatus.CANCELLED] == 2
    assert counts.get(TaskStatus.QUEUED, 0) + counts.get(TaskStatus.SCHEDULED, 0) == 1
    assert TaskStatus.RUNNING not in counts


async def test_a_put_naming_an_existing_id_stores_the_others_once(
    service: TaskService, engine: Engine
) -> None:
    (first,) = await service.put_many([TaskSpec(queue="q", task_id="one")])
    again = await service.put_many([TaskSpec(queue="q", task_id="one"), TaskSpec(queue="q")])
    assert again[0] == first
    assert (await stats(engine))[TaskStatus.QUEUED] == 2


async def test_concurrent_puts_and_completes_go_together_each_answered_as_alone(
    service: TaskService, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = [TaskSpec(queue="q") for _ in range(40)]
    with round_trips(monkeypatch) as sent:
        tasks = await asyncio.gather(*(service.put(spec) for spec in specs))
        assert len(sent) < 40  # grouped
    assert len({task.task_id for task in tasks}) == 40
    await service.put(TaskSpec(queue="gone"))  # the service knows it from now on
    await engine.obliterate_queue("gone", force=True)
    puts = [service.put(TaskSpec(queue="gone" if i == 7 else "q")) for i in range(10)]
    put = await asyncio.gather(*puts, return_exceptions=True)
    assert isinstance(put[7], NotFound)
    assert all(getattr(p, "status", None) is TaskStatus.QUEUED for p in put[:7] + put[8:])
    taken = await service.take(["q"], size=20, strategy="active_passive")
    await service.cancel(taken[1].task_id)
    calls = [service.complete(t.task_id, lease_of(t), OK) for t in taken]
    calls.append(service.complete(taken[0].task_id, lease_of(taken[0]), OK))  # twice
    calls.append(service.complete(taken[2].task_id, "stale", OK))
    with round_trips(monkeypatch) as sent:
        answers = await asyncio.gather(*calls, return_exceptions=True)
        assert len(sent) < len(calls)
    assert [getattr(a, "status", None) for a in answers[:3]] == [
        TaskStatus.SUCCEEDED,
        TaskStatus.CANCELLED,
        TaskStatus.SUCCEEDED,
    ]
    assert all(getattr(a, "status", None) is TaskStatus.SUCCEEDED for a in answers[3:20])
    assert isinstance(answers[20], LeaseLost)
    assert isinstance(answers[21], LeaseLost)
    counts = await stats(engine)
    assert counts[TaskStatus.SUCCEEDED] == 1 + 19  # the warm-up task and these
    assert counts[TaskStatus.CANCELLED] == 1
    assert counts[TaskStatus.QUEUED] == 40 + 9 - 20
    assert TaskStatus.RUNNING not in counts
