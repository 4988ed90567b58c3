"""`Worker` against a real server: draining, retries, blocking runs, stop, cancel, events."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from conveyor import (
    AsyncClient,
    Backoff,
    BackoffKind,
    Client,
    ConveyorError,
    TaskResult,
    TaskSpec,
    TaskStatus,
    Unsupported,
    WaitTimeout,
    Worker,
)
from conveyor.sdk import (
    LeasedTask,
    TaskEvent,
    TaskInfo,
    current_task,
    emit,
    end_of,
    progress,
)
from conveyor.sdk import _calls as calls

NO_BACKOFF = Backoff(kind=BackoffKind.FIXED, base_s=0.0, cap_s=0.0, jitter=0.0)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    """Wait until `check()` holds (server state changes between requests)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)  # polling: the server tells no one of these changes


async def task_in(client: AsyncClient, task_id: str, *statuses: TaskStatus) -> TaskInfo:
    """The task once it reaches one of `statuses`."""
    found: list[TaskInfo] = []

    async def reached() -> bool:
        found[:] = [await client.get_task(task_id)]
        return found[0].status in statuses

    await eventually(reached)
    return found[0]


def worker_for(server: str, handlers: dict[str, Any], **options: Any) -> Worker:
    options.setdefault("wait_s", 2.0)
    return Worker(handlers, server=server, handle_signals=False, **options)


async def test_async_and_sync_handlers_drain_200_tasks_with_batched_completions(
    server: str, async_client: AsyncClient, queue: str
) -> None:
    other = f"{queue}-sync"
    await async_client.put_many([TaskSpec(queue=queue, data=n) for n in range(100)])
    ids = await async_client.put_many([TaskSpec(queue=other, data=n) for n in range(100)])
    threads: set[str] = set()

    async def double(task: LeasedTask) -> int:
        return int(task.data) * 2

    def created(task: LeasedTask) -> TaskResult:
        threads.add(threading.current_thread().name)
        return TaskResult(status_code=201, body={"n": task.data})

    worker = worker_for(
        server, {queue: double, other: created}, concurrency=16, exit_when_drained=True
    )
    await asyncio.wait_for(worker.run(), 30)

    for name in (queue, other):
        stats = await async_client.get_queue(name)
        assert stats.total("succeeded") == 100, stats.levels
    assert (await async_client.get_task(ids[7])).result == TaskResult(
        status_code=201, body={"n": 7}
    )
    assert all(name.startswith("conveyor-handler") for name in threads)
    assert worker.stats.taken == worker.stats.succeeded == 200
    completions = worker.stats.completions
    assert completions.single + completions.batched == 200
    assert completions.batches > 0  # results that finished together went in one request
    assert completions.requests < 200


async def test_a_raising_handler_is_retried_then_failed(
    server: str, async_client: AsyncClient, queue: str
) -> None:
    await async_client.register_queue(queue, max_attempts=2, backoff=NO_BACKOFF)
    task = await async_client.put(queue, {"x": 1})
    calls_seen: list[int] = []

    async def broken(task: LeasedTask) -> None:
        calls_seen.append(task.attempts)
        raise ValueError(f"cannot handle {task.data}")

    worker = worker_for(server, {queue: broken})
    running = asyncio.create_task(worker.run())
    failed = await task_in(async_client, task.task_id, TaskStatus.FAILED)
    worker.stop()
    await running
    assert calls_seen == [1, 2]
    assert failed.attempts == 2
    assert failed.error is not None
    assert (failed.error.code, failed.error.message) == ("ValueError", "cannot handle {'x': 1}")
    assert worker.stats.failed == 2


async def test_blocking_run_is_answered_by_a_worker(
    server: str, async_client: AsyncClient, queue: str
) -> None:
    def echo(task: LeasedTask) -> dict[str, Any]:
        return {"echo": task.data, "task": current_task().task_id}

    worker = worker_for(server, {queue: echo})
    running = asyncio.create_task(worker.run())
    try:
        result = await async_client.run(queue, {"prompt": "hi"}, timeout_s=10)
    finally:
        worker.stop()
        await running
    assert result.status_code == 200
    assert result.body["echo"] == {"prompt": "hi"}


async def test_stop_lets_the_running_task_finish(
    server: str, async_client: AsyncClient, queue: str
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(task: LeasedTask) -> str:
        started.set()
        await release.wait()
        return "finished"

    task = await async_client.put(queue, 1)
    worker = worker_for(server, {queue: slow}, grace_period_s=10)
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    worker.stop()  # what SIGTERM does
    await asyncio.sleep(0.1)
    assert not running.done()  # still finishing its task
    later = await async_client.put(queue, 2)  # not taken any more
    release.set()
    await asyncio.wait_for(running, 10)
    done = await async_client.get_task(task.task_id)
    assert done.status is TaskStatus.SUCCEEDED
    assert done.result == TaskResult(body="finished")
    assert (await async_client.get_task(later.task_id)).status is TaskStatus.QUEUED


async def test_past_the_grace_period_the_task_is_cancelled_and_handed_back(
    server: str, async_client: AsyncClient, queue: str
) -> None:
    started = asyncio.Event()
    cancelled: list[bool] = []

    async def endless(task: LeasedTask) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    task = await async_client.put(queue, 1)
    worker = worker_for(server, {queue: endless}, grace_period_s=0.2)
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    worker.stop()
    await asyncio.wait_for(running, 10)
    assert cancelled == [True]
    back = await async_client.get_task(task.task_id)
    assert back.status is TaskStatus.QUEUED  # retried at once by the next worker
    assert back.error is not None
    assert back.error.code == "worker_stopped"


async def test_a_stop_while_draining_sets_the_grace_period(
    server: str, async_client: AsyncClient, queue: str
) -> None:
    started = asyncio.Event()

    async def endless(task: LeasedTask) -> None:
        started.set()
        await asyncio.Event().wait()

    task = await async_client.put(queue, 1)
    worker = worker_for(server, {queue: endless}, exit_when_drained=True, grace_period_s=0.2)
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(0.2)  # the next take found nothing: draining, without a time limit
    assert not running.done()
    worker.stop()  # a first stop: cancels after the grace period, not at once
    await asyncio.wait_for(running, 5)
    assert worker.stats.cancelled == 1
    back = await async_client.get_task(task.task_id)
    assert back.error is not None
    assert back.error.code == "worker_stopped"


async def test_a_task_cancelled_while_it_runs_stops_its_handler(
    server: str, async_client: AsyncClient, queue: str
) -> None:
    started = asyncio.Event()
    cancelled: list[bool] = []

    async def endless(task: LeasedTask) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    task = await async_client.put(queue, 1)
    # a 0.6 s lease: heartbeats every 0.2 s, each one a chance to hear of the cancel
    worker = worker_for(server, {queue: endless}, lease_s=0.6)
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    await async_client.cancel(task.task_id)
    await task_in(async_client, task.task_id, TaskStatus.CANCELLED)
    await eventually(lambda: _true(bool(cancelled)))
    worker.stop()
    await running
    assert worker.stats.cancelled == 1
    assert worker.stats.heartbeats >= 1


async def _true(value: bool) -> bool:
    return value


async def test_heartbeats_keep_a_long_task_alive(
    server: str, async_client: AsyncClient, queue: str
) -> None:
    async def longer_than_the_lease(task: LeasedTask) -> str:
        await asyncio.sleep(1.2)
        return "kept"

    task = await async_client.put(queue, 1)
    worker = worker_for(server, {queue: longer_than_the_lease}, lease_s=0.5)
    running = asyncio.create_task(worker.run())
    done = await task_in(async_client, task.task_id, TaskStatus.SUCCEEDED)
    worker.stop()
    await running
    assert done.attempts == 1  # the lease never ran out
    assert done.result == TaskResult(body="kept")
    assert worker.stats.heartbeats >= 2


async def _events_of(client: AsyncClient, task_id: str) -> list[tuple[str, Any]]:
    """A finished task's (event, data) messages, its end included."""
    return [(message.event, message.data) async for message in client.follow(task_id)]


async def test_progress_and_emit_from_async_and_sync_handlers(
    server: str, async_client: AsyncClient, queue: str
) -> None:
    other = f"{queue}-sync"

    async def streams(task: LeasedTask) -> str:
        await progress({"step": 1})
        await emit("token", "Hel")
        await emit("token", "lo")
        return "Hello"

    def reports(task: LeasedTask) -> str:
        progress({"step": "sync"})  # blocks until the server has it; no await needed
        return "done"

    first = await async_client.put(queue, 1)
    second = await async_client.put(other, 1)
    worker = worker_for(server, {queue: streams, other: reports}, exit_when_drained=True)
    await asyncio.wait_for(worker.run(), 10)

    events = await _events_of(async_client, first.task_id)
    assert events[:3] == [("progress", {"step": 1}), ("token", "Hel"), ("token", "lo")]
    assert events[-1][0] == "result"
    assert events[-1][1]["result"] == {"status_code": 200, "body": "Hello"}
    events = await _events_of(async_client, second.task_id)
    assert events[0] == ("progress", {"step": "sync"})
    # from an event id on: only the later ones
    later = [m.event async for m in async_client.follow(first.task_id, after=2)]
    assert later == ["token", "result"]


class _OldServer(AsyncClient):
    """A client of a server without the events route."""

    async def emit(self, task_id: str, lease_id: str, events: Any) -> int:
        call = calls.Call("POST", f"/v1/tasks/{task_id}/no-events", calls.expect(lambda _: 0))
        return await self.send(call)


async def test_emit_says_clearly_when_the_server_has_no_events_route(
    server: str, async_client: AsyncClient, queue: str
) -> None:
    seen: list[str] = []

    async def reports(task: LeasedTask) -> None:
        try:
            await progress(0.5)
        except Unsupported as exc:
            seen.append(exc.message)

    await async_client.put(queue, 1)
    async with _OldServer(server) as old:
        worker = Worker({queue: reports}, client=old, exit_when_drained=True, handle_signals=False)
        await asyncio.wait_for(worker.run(), 10)
    assert len(seen) == 1
    assert "does not accept task events" in seen[0]


def test_emit_outside_a_handler_is_an_error() -> None:
    with pytest.raises(ConveyorError, match="only inside a Worker's handler"):
        emit("token", "x")


async def test_levels_and_strategy_are_what_the_worker_asks_for(
    server: str, async_client: AsyncClient, queue: str
) -> None:
    urgent = await async_client.put(queue, "urgent", level=0)
    offline = await async_client.put(queue, "offline", level=1)
    seen: list[Any] = []

    async def record(task: LeasedTask) -> None:
        seen.append(task.data)

    worker = worker_for(
        server,
        {queue: record},
        queues=[f"{queue}:1"],
        strategy="round_robin",
        exit_when_drained=True,
    )
    await asyncio.wait_for(worker.run(), 10)
    assert seen == ["offline"]
    assert (await async_client.get_task(urgent.task_id)).status is TaskStatus.QUEUED
    assert (await async_client.get_task(offline.task_id)).status is TaskStatus.SUCCEEDED


def test_a_worker_stopped_before_it_runs_returns_at_once(server: str, queue: str) -> None:
    worker = worker_for(server, {queue: _tokens})
    worker.stop()
    worker.run_sync()
    assert worker.stats.takes == 0
    worker.stop()  # after the run: nothing to stop, and no effect on a later run


def test_a_worker_without_handlers_does_not_start(server: str) -> None:
    with pytest.raises(ConveyorError, match="no handlers"):
        Worker(server=server, handle_signals=False).run_sync()
    worker = Worker({"a": lambda task: None}, queues=["b"], server=server, handle_signals=False)
    with pytest.raises(ConveyorError, match="no handler for queue"):
        worker.run_sync()


def test_events_are_sent_as_the_wire_wants() -> None:
    call = calls.emit("t", "l", [TaskEvent(event="progress", data={"p": 1})])
    assert call.path == "/v1/tasks/t/events"
    assert call.body == b'{"lease_id":"l","events":[{"event":"progress","data":{"p":1}}]}'


async def _tokens(task: LeasedTask) -> str:
    for word in str(task.data).split():
        await emit("token", word)
    return "said"


async def test_stream_yields_the_workers_events_then_the_end(
    server: str, async_client: AsyncClient, queue: str
) -> None:
    worker = worker_for(server, {queue: _tokens})
    running = asyncio.create_task(worker.run())
    try:
        messages = [m async for m in async_client.stream(queue, "to be or", timeout_s=10)]
    finally:
        worker.stop()
        await running
    assert [(m.event, m.data) for m in messages[:3]] == [
        ("token", "to"),
        ("token", "be"),
        ("token", "or"),
    ]
    assert [m.id for m in messages[:3]] == [1, 2, 3]
    end = end_of(messages[-1])
    assert end is not None
    assert end.status is TaskStatus.SUCCEEDED
    assert end.result == TaskResult(body="said")


async def test_a_stream_nobody_answers_times_out(async_client: AsyncClient, queue: str) -> None:
    with pytest.raises(WaitTimeout):
        async for _ in async_client.stream(queue, 1, timeout_s=0.3):
            pass


def test_the_blocking_client_streams_too(server: str, client: Client, queue: str) -> None:
    worker = worker_for(server, {queue: _tokens})
    thread = threading.Thread(target=worker.run_sync)
    thread.start()
    try:
        messages = list(client.stream(queue, "hi there", timeout_s=10))
        followed = list(client.follow(messages[-1].data["task_id"]))
    finally:
        worker.stop()  # from another thread, even before the worker's loop has started
        thread.join(10)
    assert [m.data for m in messages[:2]] == ["hi", "there"]
    assert [m.event for m in followed] == ["token", "token", "result"]
    assert end_of(messages[-1]) == end_of(followed[-1])
