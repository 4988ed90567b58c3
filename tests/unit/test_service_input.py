"""TaskService refuses bad input with InvalidInput before the engine stores anything."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.domain.clock import ManualClock
from conveyor.domain.queues import QueueConfig, QueueUpdate
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import MAX_BULK_PUT, TaskError, TaskResult, TaskSpec
from conveyor.engines.memory import MemoryEngine
from conveyor.errors import InvalidInput, NotFound
from conveyor.service.tasks import TaskService


async def stored_tasks(service: TaskService, queue: str) -> int:
    """How many tasks `queue` holds, by its stats and by listing it."""
    stats = await service.queue_stats(queue)
    listed = await service.list_tasks(queue)
    by_stats = sum(stats.total(status) for status in TaskStatus)
    assert by_stats == len(listed.tasks)
    return by_stats


def five_specs_the_third_bad(queue: str) -> list[TaskSpec]:
    specs = [TaskSpec(queue=queue, data={"n": n}) for n in range(5)]
    specs[2].level = 99
    return specs


# ---- put ----


async def test_bulk_put_with_one_bad_task_names_it_and_stores_nothing(
    service: TaskService,
) -> None:
    await service.register_queue(QueueConfig(name="mail"))
    with pytest.raises(InvalidInput) as info:
        await service.put_many(five_specs_the_third_bad("mail"))
    assert info.value.param == "tasks[2].level"
    assert info.value.message.startswith("tasks[2]: ")
    assert "from 0 to 9" in info.value.message
    assert await stored_tasks(service, "mail") == 0


async def test_bulk_put_with_a_bad_queue_name_names_the_task(service: TaskService) -> None:
    specs = [TaskSpec(queue="mail"), TaskSpec(queue="bad name")]
    with pytest.raises(InvalidInput) as info:
        await service.put_many(specs)
    assert info.value.param == "tasks[1].queue"


async def test_refused_bulk_put_does_not_register_its_queues(
    service: TaskService, memory_engine: MemoryEngine
) -> None:
    with pytest.raises(InvalidInput):
        await service.put_many(five_specs_the_third_bad("fresh"))
    assert await memory_engine.list_queues() == []


async def test_refused_put_does_not_register_its_queue(
    service: TaskService, memory_engine: MemoryEngine
) -> None:
    with pytest.raises(InvalidInput):
        await service.put(TaskSpec(queue="fresh", max_attempts=0))
    assert await memory_engine.list_queues() == []


async def test_accepted_put_registers_an_unknown_queue_with_defaults(service: TaskService) -> None:
    ids = await service.put_many([TaskSpec(queue="fresh"), TaskSpec(queue="other", level=9)])
    assert len(ids) == 2
    assert await stored_tasks(service, "fresh") == 1
    assert (await service.queue_stats("other")).queue.max_level == 9


async def test_put_uses_the_registered_queues_own_levels(service: TaskService) -> None:
    await service.register_queue(QueueConfig(name="narrow", max_level=1))
    with pytest.raises(InvalidInput) as info:
        await service.put(TaskSpec(queue="narrow", level=2))
    assert "from 0 to 1" in info.value.message


class RacingEngine(MemoryEngine):
    """Another server registers each missing queue just after this one looked for it."""

    async def get_queue(self, name: str) -> QueueConfig:
        try:
            return await super().get_queue(name)
        except NotFound:
            await super().register_queue(QueueConfig(name=name, max_level=1, max_attempts=7))
            raise


async def test_put_racing_a_register_uses_the_winners_defaults(clock: ManualClock) -> None:
    engine = RacingEngine(clock=clock)
    await engine.open()
    service = TaskService(engine, clock=clock)
    task = await service.put(TaskSpec(queue="raced"))
    assert task.max_attempts == 7
    with pytest.raises(InvalidInput) as info:
        await service.put(TaskSpec(queue="raced-too", level=5))
    assert "from 0 to 1" in info.value.message
    await engine.close()


@pytest.mark.parametrize("count", [0, MAX_BULK_PUT + 1])
async def test_bulk_put_of_no_tasks_or_too_many_is_refused(
    service: TaskService, count: int
) -> None:
    with pytest.raises(InvalidInput) as info:
        await service.put_many([TaskSpec(queue="mail")] * count)
    assert info.value.param == "tasks"
    assert f"1 to {MAX_BULK_PUT}" in info.value.message


async def test_bulk_put_of_the_maximum_is_accepted(service: TaskService) -> None:
    ids = await service.put_many([TaskSpec(queue="mail") for _ in range(MAX_BULK_PUT)])
    assert len(set(ids)) == MAX_BULK_PUT


async def test_strict_service_refuses_a_put_to_an_unknown_queue(
    memory_engine: MemoryEngine,
) -> None:
    strict = TaskService(memory_engine, strict=True)
    with pytest.raises(NotFound):
        await strict.put(TaskSpec(queue="fresh"))
    assert await memory_engine.list_queues() == []


# ---- take ----


@pytest.mark.parametrize(
    ("arguments", "param", "hint"),
    [
        ({"size": 0}, "size", "from 1 to 1000"),
        ({"size": 1_001}, "size", "from 1 to 1000"),
        ({"size": True}, "size", "integer"),
        ({"size": 2.0}, "size", "integer"),
        ({"wait_s": 61}, "wait", "from 0 to 60"),
        ({"wait_s": -1}, "wait", "from 0 to 60"),
        ({"wait_s": float("nan")}, "wait", "seconds"),
        ({"wait_s": float("inf")}, "wait", "seconds"),
        ({"strategy": "lifo"}, "strategy", "fifo, active_passive"),
        ({"lease_s": 0}, "process_timeout", "more than 0"),
        ({"lease_s": 86_401}, "process_timeout", "at most 86400"),
        ({"worker_id": "w" * 257}, "worker_id", "at most 256"),
        ({"queues": []}, "queues", "at least one queue"),
        ({"queues": "mail"}, "queues", "list"),
        ({"queues": ["bad name"]}, "queues", "1-64 characters"),
        ({"queues": ["mail:x"]}, "queues", "'name:level'"),
        ({"queues": ["mail:-1"]}, "queues", "'name:level'"),
        ({"queues": ["mail:10"]}, "queues", "from 0 to 9"),
        ({"queues": ["mail:²"]}, "queues", "'name:level'"),
        ({"queues": ["mail:" + "9" * 5_000]}, "queues", "level above"),
        ({"queues": ["mail", "bad name:1"]}, "queues", "1-64 characters"),
    ],
)
async def test_bad_take_is_refused_naming_the_field(
    service: TaskService, arguments: dict[str, Any], param: str, hint: str
) -> None:
    arguments = {"queues": ["mail"], **arguments}
    with pytest.raises(InvalidInput) as info:
        await service.take(**arguments)
    assert info.value.param == param
    assert hint in info.value.message


async def test_take_level_is_checked_against_the_registered_queue(service: TaskService) -> None:
    await service.register_queue(QueueConfig(name="narrow", max_level=2))
    assert await service.take(["narrow:2"]) == []
    with pytest.raises(InvalidInput) as info:
        await service.take(["narrow:3"])
    assert "from 0 to 2" in info.value.message


async def test_take_from_an_unknown_queue_is_allowed_and_empty(service: TaskService) -> None:
    assert await service.take(["not-yet-registered"], size=1_000, wait_s=0) == []


# ---- list ----


@pytest.mark.parametrize(
    ("arguments", "param", "hint"),
    [
        ({"status": "done"}, "status", "queued, scheduled, running"),
        ({"status": "QUEUED"}, "status", "queued, scheduled, running"),
        ({"limit": 0}, "limit", "from 1 to 1000"),
        ({"limit": 1_001}, "limit", "from 1 to 1000"),
        ({"limit": True}, "limit", "from 1 to 1000"),
        ({"after": "not-a-cursor"}, "after", "cursor"),
        ({"after": "²"}, "after", "cursor"),
        ({"after": "9" * 19}, "after", "cursor"),
        ({"queue": "bad name"}, "queue", "1-64 characters"),
    ],
)
async def test_bad_listing_is_refused_naming_the_field(
    service: TaskService, arguments: dict[str, Any], param: str, hint: str
) -> None:
    await service.register_queue(QueueConfig(name="mail"))
    arguments = {"queue": "mail", **arguments}
    with pytest.raises(InvalidInput) as info:
        await service.list_tasks(**arguments)
    assert info.value.param == param
    assert hint in info.value.message


# ---- the worker's other verbs and queue admin ----


async def test_bad_result_is_refused_before_the_task_is_looked_up(service: TaskService) -> None:
    with pytest.raises(InvalidInput) as info:
        await service.complete("no-such-task", "lease", TaskResult(status_code=42))
    assert info.value.param == "result.status_code"


@pytest.mark.parametrize("retry_after_s", [-1.0, float("nan"), 8 * 86_400.0])
async def test_bad_retry_after_is_refused(service: TaskService, retry_after_s: float) -> None:
    with pytest.raises(InvalidInput) as info:
        await service.fail("t", "lease", TaskError(message="x"), retry_after_s=retry_after_s)
    assert info.value.param == "retry_after"


@pytest.mark.parametrize("extend_s", [0.0, -5.0, float("inf")])
async def test_bad_heartbeat_extension_is_refused(service: TaskService, extend_s: float) -> None:
    with pytest.raises(InvalidInput) as info:
        await service.heartbeat("t", "lease", extend_s)
    assert info.value.param == "extend"


async def test_bad_queue_config_is_refused_and_not_registered(
    service: TaskService, memory_engine: MemoryEngine
) -> None:
    with pytest.raises(InvalidInput) as info:
        await service.register_queue(QueueConfig(name="mail", max_level=100))
    assert info.value.param == "max_level"
    assert await memory_engine.list_queues() == []


async def test_bad_queue_update_is_refused_and_changes_nothing(service: TaskService) -> None:
    before = await service.register_queue(QueueConfig(name="mail", lease_s=30.0))
    with pytest.raises(InvalidInput) as info:
        await service.update_queue("mail", QueueUpdate(paused=True, lease_s=-1.0))
    assert info.value.param == "lease_s"
    assert (await service.queue_stats("mail")).queue == before


@pytest.mark.parametrize("name", ["", "bad name", "a" * 65])
async def test_queue_admin_with_a_bad_name_is_refused(service: TaskService, name: str) -> None:
    with pytest.raises(InvalidInput):
        await service.queue_stats(name)
    with pytest.raises(InvalidInput):
        await service.update_queue(name, QueueUpdate(paused=True))
    with pytest.raises(InvalidInput):
        await service.obliterate_queue(name)
