"""`AsyncClient` (aiohttp) against a real server: the same calls, and blocking `run()`."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import (
    AsyncClient,
    Completion,
    IdempotencyConflict,
    InvalidInput,
    InvalidTransition,
    LeaseLost,
    NotFound,
    TaskFailed,
    TaskResult,
    TaskSpec,
    TaskStatus,
    Unsupported,
    WaitTimeout,
)
from conveyor.sdk import TaskEvent


async def test_queue_admin_round_trip(async_client: AsyncClient, queue: str) -> None:
    registered = await async_client.register_queue(queue, lease_s=9, paused=True)
    assert registered.paused
    assert registered.process_timeout == 9
    assert queue in {q.name for q in await async_client.list_queues()}
    await async_client.put(queue, 1)
    assert await async_client.take([queue]) == []
    assert not (await async_client.resume_queue(queue)).paused
    assert (await async_client.pause_queue(queue)).paused
    assert (await async_client.update_queue(queue, paused=False, max_level=3)).max_level == 3
    assert (await async_client.get_queue(queue)).total("queued") == 1
    assert await async_client.obliterate_queue(queue, force=True) == 1
    with pytest.raises(NotFound):
        await async_client.get_queue(queue)


async def test_task_round_trip(async_client: AsyncClient, queue: str) -> None:
    put = await async_client.put(queue, {"n": 1}, custom_id="a")
    assert (await async_client.get_task(put.task_id)).data == {"n": 1}
    ids = await async_client.put_many([TaskSpec(queue=queue, data=n, level=1) for n in range(5)])
    page = await async_client.list_tasks(queue, "queued", limit=10)
    assert [t.task_id for t in page.data] == [put.task_id, *ids]

    # level 0 first: the single put, then the bulk at level 1
    taken = await async_client.take([queue], size=3, wait_s=1, lease_s=20)
    assert [t.task_id for t in taken] == [put.task_id, *ids[:2]]
    first, second, third = taken
    assert not (await async_client.heartbeat(first.task_id, first.lease_id)).cancelled
    assert (await async_client.complete(first.task_id, first.lease_id)).status is (
        TaskStatus.SUCCEEDED
    )
    retried = await async_client.fail(second.task_id, second.lease_id, "later", retry_after_s=60)
    assert retried.status is TaskStatus.SCHEDULED
    outcomes = await async_client.complete_many(
        [Completion(third.task_id, third.lease_id, TaskResult(body=[1]))]
    )
    assert outcomes[0].ok

    cancelled = await async_client.cancel(ids[3])
    assert cancelled.status is TaskStatus.CANCELLED
    with pytest.raises(InvalidTransition):
        await async_client.requeue(ids[4])


async def test_errors_map_back_to_their_classes(async_client: AsyncClient, queue: str) -> None:
    with pytest.raises(InvalidInput):
        await async_client.put(queue, 1, level=-1)
    with pytest.raises(NotFound):
        await async_client.cancel("missing")
    await async_client.put(queue, 1, task_id=f"{queue}-x")
    with pytest.raises(IdempotencyConflict):
        await async_client.put(queue, 1, task_id=f"{queue}-x", custom_id="other")
    (task,) = await async_client.take([queue])
    with pytest.raises(LeaseLost):
        await async_client.heartbeat(task.task_id, "stale")
    with pytest.raises(LeaseLost):
        await async_client.emit(task.task_id, "stale", [TaskEvent(event="progress", data=1)])
    with pytest.raises(WaitTimeout):
        await async_client.run(queue, 1, timeout_s=0.2)


async def test_emit_appends_events_under_the_lease(async_client: AsyncClient, queue: str) -> None:
    await async_client.put(queue, 1)
    (task,) = await async_client.take([queue])
    events = [TaskEvent(event="token", data="He"), TaskEvent(event="token", data="llo")]
    assert await async_client.emit(task.task_id, task.lease_id, events) == 2


async def _answer(client: AsyncClient, queue: str, result: TaskResult | None, *, fail: bool) -> str:
    """Play a worker: take the next task of `queue`, then complete or fail it."""
    (task,) = await client.take([queue], wait_s=10)
    if fail:
        await client.fail(task.task_id, task.lease_id, "it broke", code="Broken", retry=False)
    else:
        await client.complete(task.task_id, task.lease_id, result)
    return task.task_id


async def test_run_returns_the_workers_status_and_body(
    async_client: AsyncClient, queue: str
) -> None:
    worker = asyncio.create_task(
        _answer(async_client, queue, TaskResult(status_code=201, body={"ok": 1}), fail=False)
    )
    result = await async_client.run(queue, {"ask": 1}, timeout_s=10)
    await worker
    assert result == TaskResult(status_code=201, body={"ok": 1})


async def test_run_returns_an_error_shaped_worker_result(
    async_client: AsyncClient, queue: str
) -> None:
    # a forwarding worker relays an upstream's 400 in OpenAI's error shape: still a result
    upstream = {
        "error": {
            "message": "bad model",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    worker = asyncio.create_task(
        _answer(async_client, queue, TaskResult(status_code=400, body=upstream), fail=False)
    )
    result = await async_client.run(queue, {"ask": 1}, timeout_s=10)
    await worker
    assert result == TaskResult(status_code=400, body=upstream)


async def test_run_raises_task_failed(async_client: AsyncClient, queue: str) -> None:
    worker = asyncio.create_task(_answer(async_client, queue, None, fail=True))
    with pytest.raises(TaskFailed) as failed:
        await async_client.run(queue, {"ask": 1}, timeout_s=10)
    await worker
    assert failed.value.message == "it broke"
    assert failed.value.error_code == "Broken"


async def test_unknown_route_is_unsupported(async_client: AsyncClient) -> None:
    from conveyor.sdk import _calls as calls

    with pytest.raises(Unsupported):
        await async_client.send(calls.Call("GET", "/v1/nothing-here", calls.expect(bytes)))
