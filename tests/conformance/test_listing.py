"""Listing a queue's tasks, by status, page by page with a cursor, in the order they were put."""

from __future__ import annotations

import pytest

from conveyor.domain.clock import ManualClock
from conveyor.domain.queues import QueueConfig
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import TaskSpec
from conveyor.engines import Engine
from conveyor.errors import InvalidInput
from conveyor.service.tasks import TaskService
from tests.conformance._support import BOOM, OK, collect, lease_of, put_n


async def _put_mixed(service: TaskService) -> list[str]:
    """25 tasks in `q` from single and bulk puts, with tasks of `other` in between."""
    ids: list[str] = []
    for round_ in range(5):
        ids.append((await service.put(TaskSpec(queue="q", data=round_))).task_id)
        await service.put(TaskSpec(queue="other"))
        ids.extend(await put_n(service, "q", 3))
        ids.append((await service.put(TaskSpec(queue="q", level=round_ % 2))).task_id)
    return ids


@pytest.mark.parametrize("limit", [1, 7, 25, 1000])
async def test_pages_cover_the_queue_in_put_order(
    service: TaskService, clocked_engine: Engine, limit: int
) -> None:
    ids = await _put_mixed(service)
    listed = await collect(clocked_engine, "q", limit=limit)
    assert [t.task_id for t in listed] == ids
    for task in listed:
        assert task == await clocked_engine.get_task(task.task_id)


async def test_pages_are_at_most_limit_long(service: TaskService, clocked_engine: Engine) -> None:
    ids = await put_n(service, "q", 10)
    page = await clocked_engine.list_tasks("q", limit=4)
    assert [t.task_id for t in page.tasks] == ids[:4]
    assert page.next_cursor is not None
    page = await clocked_engine.list_tasks("q", after=page.next_cursor, limit=4)
    assert [t.task_id for t in page.tasks] == ids[4:8]
    assert page.next_cursor is not None
    page = await clocked_engine.list_tasks("q", after=page.next_cursor, limit=4)
    assert [t.task_id for t in page.tasks] == ids[8:]
    assert page.next_cursor is None


async def test_list_by_status(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    await service.register_queue(QueueConfig(name="q", max_attempts=1))
    ids = await _put_mixed(service)
    taken = await service.take(["q:0", "q:1"], size=8)
    for task in taken[:3]:
        await service.complete(task.task_id, lease_of(task), OK)
    await service.fail(taken[3].task_id, lease_of(taken[3]), BOOM)
    for task_id in ids[20:23]:
        await service.cancel(task_id)
    delayed = await service.put(TaskSpec(queue="q", delay_s=60))

    by_status: dict[TaskStatus, list[str]] = {}
    for status in TaskStatus:
        listed = await collect(clocked_engine, "q", status, limit=3)
        assert all(t.status is status for t in listed)
        by_status[status] = [t.task_id for t in listed]
    all_ids = [*ids, delayed.task_id]
    for status, listed_ids in by_status.items():
        # each status's listing keeps the order of the puts
        assert listed_ids == [i for i in all_ids if i in set(listed_ids)], status
    assert sorted(i for listed_ids in by_status.values() for i in listed_ids) == sorted(all_ids)
    assert by_status[TaskStatus.SUCCEEDED] == [t.task_id for t in taken[:3]]
    assert by_status[TaskStatus.FAILED] == [taken[3].task_id]
    assert by_status[TaskStatus.RUNNING] == [t.task_id for t in taken[4:]]
    assert by_status[TaskStatus.CANCELLED] == ids[20:23]
    assert by_status[TaskStatus.SCHEDULED] == [delayed.task_id]
    expected_queued = [i for i in ids if i not in {t.task_id for t in taken} | set(ids[20:23])]
    assert by_status[TaskStatus.QUEUED] == expected_queued


async def test_statuses_changing_between_pages_skip_and_repeat_nothing(
    service: TaskService, clocked_engine: Engine
) -> None:
    ids = await put_n(service, "q", 12)
    first = await clocked_engine.list_tasks("q", limit=5)
    taken = await service.take(["q"], size=12)
    for task in taken[::2]:
        await service.complete(task.task_id, lease_of(task), OK)
    assert first.next_cursor is not None
    rest = await collect(clocked_engine, "q", after=first.next_cursor, limit=5)
    assert [t.task_id for t in first.tasks] + [t.task_id for t in rest] == ids


async def test_empty_listing(service: TaskService, clocked_engine: Engine) -> None:
    await service.register_queue(QueueConfig(name="q"))
    page = await clocked_engine.list_tasks("q")
    assert page.tasks == []
    assert page.next_cursor is None
    await put_n(service, "q", 2)
    page = await clocked_engine.list_tasks("q", TaskStatus.FAILED)
    assert page.tasks == []
    assert page.next_cursor is None


async def test_listing_through_the_service_checks_its_input(
    service: TaskService, clocked_engine: Engine
) -> None:
    ids = await put_n(service, "q", 3)
    page = await service.list_tasks("q", "queued", limit=2)
    assert [t.task_id for t in page.tasks] == ids[:2]
    with pytest.raises(InvalidInput):
        await service.list_tasks("q", "sleeping")
    with pytest.raises(InvalidInput):
        await service.list_tasks("q", limit=0)


async def test_a_cursor_not_given_out_is_refused(
    service: TaskService, clocked_engine: Engine
) -> None:
    await put_n(service, "q", 3)
    with pytest.raises(InvalidInput):
        await clocked_engine.list_tasks("q", after="not a cursor!")
