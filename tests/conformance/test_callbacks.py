"""The callback outbox: owed when a task with a callback URL ends, claimed once, settled."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import pytest
from aiohttp import web

from conveyor.domain.callbacks import SIGNATURE_HEADER, TIMESTAMP_HEADER
from conveyor.domain.clock import ManualClock
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import TaskSpec
from conveyor.engines import Engine
from conveyor.errors import InvalidInput
from conveyor.service.callbacks import CallbackDispatcher, CallbackPolicy
from conveyor.service.tasks import TaskService
from tests.conformance._support import BOOM, OK, lease_of, take_one

URL = "http://receiver.example/hook"


async def test_a_callback_is_owed_once_the_task_ends(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    await service.put(TaskSpec(queue="q", task_id="a", callback_url=URL))
    await service.put(TaskSpec(queue="q", task_id="plain"))
    assert await clocked_engine.claim_callbacks(10, hold_s=30) == []  # not ended yet
    for task in await service.take(["q"], size=2):
        await service.complete(task.task_id, lease_of(task), OK)
    (due,) = await clocked_engine.claim_callbacks(10, hold_s=30)
    assert due.task.task_id == "a"
    assert due.attempt == 1
    assert due.task.result == OK
    # held: no one else gets it until the hold passes
    assert await clocked_engine.claim_callbacks(10, hold_s=30) == []
    clock.advance(31)
    (again,) = await clocked_engine.claim_callbacks(10, hold_s=30)
    assert again.attempt == 2
    await clocked_engine.settle_callback("a", retry_at=None)
    clock.advance(3600)
    assert await clocked_engine.claim_callbacks(10, hold_s=30) == []


async def test_a_failed_delivery_falls_due_at_its_retry_time(
    service: TaskService, clocked_engine: Engine, clock: ManualClock
) -> None:
    await service.put(TaskSpec(queue="q", task_id="a", callback_url=URL))
    await service.cancel("a")  # cancelled tasks call back too
    (due,) = await clocked_engine.claim_callbacks(10, hold_s=30)
    assert due.task.status is TaskStatus.CANCELLED
    await clocked_engine.settle_callback("a", retry_at=clock.now + 5)
    clock.advance(4)
    assert await clocked_engine.claim_callbacks(10, hold_s=30) == []
    clock.advance(2)
    assert [d.task.task_id for d in await clocked_engine.claim_callbacks(10, hold_s=30)] == ["a"]


async def test_concurrent_claims_hand_each_callback_out_once(
    service: TaskService, clocked_engine: Engine
) -> None:
    ids = await service.put_many([TaskSpec(queue="q", callback_url=URL) for _ in range(20)])
    for task_id in ids:
        await service.cancel(task_id)
    claims = await asyncio.gather(
        *(clocked_engine.claim_callbacks(3, hold_s=30) for _ in range(10))
    )
    claimed = [due.task.task_id for claim in claims for due in claim]
    assert sorted(claimed) == sorted(ids)


async def test_retried_tasks_owe_nothing_until_they_end(
    service: TaskService, clocked_engine: Engine
) -> None:
    await service.put(TaskSpec(queue="q", task_id="a", callback_url=URL, max_attempts=2))
    task = await take_one(service, ["q"])
    await service.fail("a", lease_of(task), BOOM, retry_after_s=0)  # back to the queue
    assert await clocked_engine.claim_callbacks(10, hold_s=30) == []
    task = await take_one(service, ["q"])
    await service.fail("a", lease_of(task), BOOM)  # attempts spent: the dead letter
    (due,) = await clocked_engine.claim_callbacks(10, hold_s=30)
    assert due.task.status is TaskStatus.FAILED
    assert due.task.error == BOOM


async def test_the_dispatcher_signs_posts_and_retries(engine: Engine) -> None:
    received: list[tuple[dict[str, object], str, str]] = []
    answers = [503, 200]

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        received.append(
            (json.loads(body), request.headers[TIMESTAMP_HEADER], request.headers[SIGNATURE_HEADER])
        )
        stamp = request.headers[TIMESTAMP_HEADER]
        expected = hmac.new(b"s3cret", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert request.headers[SIGNATURE_HEADER] == f"v1={expected}"
        return web.Response(status=answers.pop(0), headers={"Retry-After": "0"})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        policy = CallbackPolicy(allow_private=True)
        service = TaskService(engine, callback_policy=policy)
        url = f"http://127.0.0.1:{port}/hook"
        async with CallbackDispatcher(engine, secret=b"s3cret", policy=policy) as dispatcher:
            await service.put(TaskSpec(queue="q", task_id="a", callback_url=url, custom_id="c1"))
            task = await take_one(service, ["q"])
            await service.complete("a", lease_of(task), OK)
            for _ in range(300):
                if dispatcher.delivered:
                    break
                await asyncio.sleep(0.01)
        assert dispatcher.delivered == 1
        assert len(received) == 2  # a 503, then the retry
        body = received[-1][0]
        assert body["task_id"] == "a"
        assert body["status"] == "succeeded"
        assert body["custom_id"] == "c1"
        assert body["result"] == {"status_code": 200, "body": {"answer": 42}}
    finally:
        await runner.cleanup()


async def test_private_callback_urls_are_refused_unless_allowed(engine: Engine) -> None:
    service = TaskService(engine, callback_policy=CallbackPolicy(allow_private=False))

    for url in (
        "http://127.0.0.1/x",
        "http://localhost:8080/x",
        "http://10.1.2.3/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest",
    ):
        with pytest.raises(InvalidInput, match=r"private|loopback"):
            await service.put(TaskSpec(queue="q", callback_url=url))
    with pytest.raises(InvalidInput, match=r"tasks\[1\]"):
        await service.put_many(
            [TaskSpec(queue="q"), TaskSpec(queue="q", callback_url="http://192.168.0.1/x")]
        )
    # refused before anything was written: not even the queue exists
    assert "q" not in {queue.name for queue in await engine.list_queues()}
