"""`Client` (httpx) against a real server: every method, and errors back as their classes."""

from __future__ import annotations

import pytest

from conveyor import (
    Backoff,
    BackoffKind,
    Client,
    Completion,
    Conflict,
    IdempotencyConflict,
    InvalidInput,
    InvalidTransition,
    LeaseLost,
    NotFound,
    TaskResult,
    TaskSpec,
    TaskStatus,
    Unsupported,
    WaitTimeout,
)
from conveyor.sdk import _calls as calls

NO_BACKOFF = Backoff(kind=BackoffKind.FIXED, base_s=0.0, cap_s=0.0, jitter=0.0)


def test_queue_admin_round_trip(client: Client, queue: str) -> None:
    registered = client.register_queue(queue, lease_s=12, max_attempts=5, max_level=2)
    assert (registered.name, registered.process_timeout, registered.max_attempts) == (queue, 12, 5)
    assert registered.max_level == 2
    assert queue in {q.name for q in client.list_queues()}

    client.put(queue, 1, level=1)
    client.put(queue, 2, level=1)
    stats = client.get_queue(queue)
    assert stats.levels is not None
    assert stats.total("queued") == 2
    assert {level.level for level in stats.levels} == {1}

    assert client.pause_queue(queue).paused
    assert client.take([queue]) == []
    assert not client.resume_queue(queue).paused
    assert client.update_queue(queue, max_attempts=7).max_attempts == 7

    assert client.obliterate_queue(queue) == 2
    with pytest.raises(NotFound):
        client.get_queue(queue)


def test_put_get_list_and_put_many(client: Client, queue: str) -> None:
    task = client.put(
        queue,
        {"prompt": "hi"},
        endpoint="/v1/chat/completions",
        custom_id="c-1",
        group="tenant-a",
        metadata={"k": "v"},
        max_attempts=4,
    )
    assert task.status is TaskStatus.QUEUED
    got = client.get_task(task.task_id)
    assert (got.data, got.endpoint, got.custom_id, got.group) == (
        {"prompt": "hi"},
        "/v1/chat/completions",
        "c-1",
        "tenant-a",
    )
    assert (got.metadata, got.max_attempts) == ({"k": "v"}, 4)

    ids = client.put_many([TaskSpec(queue=queue, data=n) for n in range(3)])
    assert len(ids) == 3
    first = client.list_tasks(queue, limit=2)
    assert [t.task_id for t in first.data] == [task.task_id, ids[0]]
    assert first.has_more
    assert first.next_cursor is not None
    rest = client.list_tasks(queue, after=first.next_cursor, limit=10)
    assert [t.task_id for t in rest.data] == ids[1:]
    assert not rest.has_more
    assert client.list_tasks(queue, "running").data == []


def test_delayed_put_is_scheduled(client: Client, queue: str) -> None:
    task = client.put(queue, None, delay_s=60)
    assert task.status is TaskStatus.SCHEDULED


def test_worker_verbs_round_trip(client: Client, queue: str) -> None:
    client.register_queue(queue, max_attempts=1)
    ids = client.put_many([TaskSpec(queue=queue, data=n) for n in range(4)])
    taken = client.take([queue], size=4, lease_s=30, worker_id="w-1")
    assert [t.task_id for t in taken] == ids
    assert all(t.lease_id and t.worker_id == "w-1" for t in taken)
    one, two, three, four = taken

    beat = client.heartbeat(one.task_id, one.lease_id, extend_s=60)
    assert not beat.cancelled
    assert beat.lease_expires_at is not None
    done = client.complete(one.task_id, one.lease_id, TaskResult(status_code=201, body="ok"))
    assert done.status is TaskStatus.SUCCEEDED
    assert done.result == TaskResult(status_code=201, body="ok")

    failed = client.fail(two.task_id, two.lease_id, "boom", code="Boom")
    assert failed.status is TaskStatus.FAILED
    assert failed.error is not None
    assert failed.error.code == "Boom"

    outcomes = client.complete_many(
        [
            Completion(three.task_id, three.lease_id, TaskResult(body=3)),
            Completion(four.task_id, "not-the-lease", TaskResult(body=4)),
        ]
    )
    assert [o.ok for o in outcomes] == [True, False]
    assert outcomes[0].status is TaskStatus.SUCCEEDED
    assert outcomes[1].status_code == 409
    assert outcomes[1].error is not None
    assert outcomes[1].error.code == "lease_lost"

    requeued = client.requeue(two.task_id)
    assert requeued.status is TaskStatus.QUEUED


def test_cancel_queued_and_running(client: Client, queue: str) -> None:
    queued = client.put(queue, 1)
    assert client.cancel(queued.task_id).status is TaskStatus.CANCELLED
    running = client.put(queue, 2)
    (taken,) = client.take([queue])
    assert taken.task_id == running.task_id
    marked = client.cancel(running.task_id)
    assert marked.cancel_requested
    assert client.heartbeat(taken.task_id, taken.lease_id).cancelled
    assert client.get_task(running.task_id).status is TaskStatus.CANCELLED


def test_errors_map_back_to_their_classes(client: Client, queue: str) -> None:
    with pytest.raises(InvalidInput) as invalid:
        client.put("not a queue name!", 1)
    assert invalid.value.param == "queue"
    with pytest.raises(InvalidInput):
        client.take([queue], size=0)
    with pytest.raises(NotFound):
        client.get_task("no-such-task")

    client.put(queue, 1, task_id=f"{queue}-fixed")
    with pytest.raises(IdempotencyConflict):
        client.put(queue, 2, task_id=f"{queue}-fixed")

    client.put(queue, 1)
    (task,) = client.take([queue])
    with pytest.raises(LeaseLost):
        client.complete(task.task_id, "stale")
    client.complete(task.task_id, task.lease_id)
    with pytest.raises(InvalidTransition):
        client.cancel(task.task_id)
    with pytest.raises(InvalidTransition):
        client.requeue(task.task_id)
    assert issubclass(LeaseLost, Conflict)

    with pytest.raises(Unsupported, match="does not offer POST /v1/no-such-route"):
        client.send(calls.Call("POST", "/v1/no-such-route", calls.expect(bytes)))


def test_run_times_out_without_a_worker(client: Client, queue: str) -> None:
    with pytest.raises(WaitTimeout):
        client.run(queue, {"q": 1}, timeout_s=0.3)
    (task,) = client.list_tasks(queue).data
    assert task.status is TaskStatus.CANCELLED


def test_server_and_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_URL", "http://example.invalid:9/")
    monkeypatch.setenv("CONVEYOR_API_KEY", "sk-env")
    sdk = Client()
    assert sdk.server == "http://example.invalid:9"
    assert calls.headers()["Authorization"] == "Bearer sk-env"
    assert Client("http://other:1").server == "http://other:1"
    assert calls.headers("sk-arg")["Authorization"] == "Bearer sk-arg"
    monkeypatch.delenv("CONVEYOR_URL")
    monkeypatch.delenv("CONVEYOR_API_KEY")
    assert Client().server == calls.DEFAULT_URL
    assert "Authorization" not in calls.headers()
