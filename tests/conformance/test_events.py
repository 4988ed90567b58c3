"""Task events: appended under the lease, listed in order, followed live, kept with the task."""

from __future__ import annotations

import asyncio

import pytest

from conveyor.domain.clock import ManualClock
from conveyor.domain.events import EventSpec, TaskEvent
from conveyor.domain.queues import QueueConfig
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import Task, TaskSpec
from conveyor.engines import Engine
from conveyor.errors import InvalidInput, LeaseLost, NotFound, WaitTimeout
from conveyor.service.tasks import TaskService
from tests.conformance._support import OK, lease_of, put_n, take_one


async def test_events_are_numbered_and_listed_in_order(service: TaskService) -> None:
    await put_n(service, "q", 1)
    task = await take_one(service, ["q"])
    first = await service.append_events(
        task.task_id, lease_of(task), [EventSpec(event="a", data=1)]
    )
    last = await service.append_events(
        task.task_id,
        lease_of(task),
        [EventSpec(event="b", data={"x": [1, 2]}), EventSpec(data="plain")],
    )
    assert (first, last) == (1, 3)
    events = await service.list_events(task.task_id)
    assert [(e.event_id, e.event, e.data) for e in events] == [
        (1, "a", 1),
        (2, "b", {"x": [1, 2]}),
        (3, "message", "plain"),
    ]
    assert [e.event_id for e in await service.list_events(task.task_id, after=2)] == [3]
    # kept after the task ends, for anyone who follows it late
    await service.complete(task.task_id, lease_of(task), OK)
    assert len(await service.list_events(task.task_id)) == 3


async def test_only_the_lease_holder_appends(service: TaskService) -> None:
    await put_n(service, "q", 1)
    task = await take_one(service, ["q"])
    with pytest.raises(LeaseLost):
        await service.append_events(task.task_id, "not-the-lease", [EventSpec(data=1)])
    with pytest.raises(NotFound):
        await service.append_events("no-such-task", "x", [EventSpec(data=1)])
    with pytest.raises(InvalidInput, match="events"):
        await service.append_events(task.task_id, lease_of(task), [])
    with pytest.raises(InvalidInput, match=r"events\[0\]\.event"):
        await service.append_events(task.task_id, lease_of(task), [EventSpec(event="a\nb")])
    assert await service.list_events(task.task_id) == []
    with pytest.raises(NotFound):
        await service.list_events("no-such-task")


async def test_events_go_with_their_task(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    await service.register_queue(QueueConfig(name="q", retention_s=60))
    await put_n(service, "q", 1)
    task = await take_one(service, ["q"])
    await service.append_events(task.task_id, lease_of(task), [EventSpec(data=1)])
    await service.complete(task.task_id, lease_of(task), OK)
    clock.advance(61)
    await clocked_engine.sweep()
    with pytest.raises(NotFound):
        await service.list_events(task.task_id)


async def test_a_stream_yields_events_live_then_the_task(engine: Engine) -> None:
    service = TaskService(engine)
    stream = await service.stream(TaskSpec(queue="q", task_id="s1"), wait_s=5)
    seen: list[TaskEvent | Task] = []

    async def read() -> None:
        async for item in stream:
            seen.append(item)

    reader = asyncio.create_task(read())
    task = await take_one(service, ["q"], wait_s=5)
    for n in range(3):
        await service.append_events(task.task_id, lease_of(task), [EventSpec(event="tok", data=n)])
    await service.complete(task.task_id, lease_of(task), OK)
    await asyncio.wait_for(reader, 5)
    assert [item.data for item in seen if isinstance(item, TaskEvent)] == [0, 1, 2]
    end = seen[-1]
    assert isinstance(end, Task)
    assert end.status is TaskStatus.SUCCEEDED
    assert end.result == OK


async def test_a_stream_that_times_out_or_is_dropped_cancels_its_task(engine: Engine) -> None:
    service = TaskService(engine)
    late = await service.stream(TaskSpec(queue="q", task_id="late"), wait_s=0.05)
    with pytest.raises(WaitTimeout):
        async for _ in late:
            pass
    assert (await engine.get_task("late")).status is TaskStatus.CANCELLED

    dropped = await service.stream(TaskSpec(queue="q", task_id="dropped"), wait_s=5)
    reading = asyncio.create_task(anext(dropped))  # the stream puts its task as it starts
    task = await take_one(service, ["q"], wait_s=5)
    await service.append_events(task.task_id, lease_of(task), [EventSpec(data="first")])
    first = await reading
    assert isinstance(first, TaskEvent)
    await dropped.aclose()  # the client went away
    stored = await engine.get_task("dropped")
    assert stored.cancel_requested  # running: its worker learns at its next word
    beat = await service.heartbeat(task.task_id, lease_of(task))
    assert beat.cancelled


async def test_following_a_task_replays_then_waits(engine: Engine) -> None:
    service = TaskService(engine)
    await service.put(TaskSpec(queue="q", task_id="f"))
    task = await take_one(service, ["q"])
    await service.append_events("f", lease_of(task), [EventSpec(data=n) for n in range(3)])
    stream = await service.follow("f", after=1, wait_s=5)
    assert [(await anext(stream)).event_id for _ in range(2)] == [2, 3]  # type: ignore[union-attr]
    await service.complete("f", lease_of(task), OK)
    end = await anext(stream)
    assert isinstance(end, Task)
    with pytest.raises(NotFound):
        await service.follow("nope", wait_s=1)
