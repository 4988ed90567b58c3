"""Building a task from a producer's spec: defaults, times, fingerprints and ids."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from conveyor.domain.ids import new_lease_id, new_task_id
from conveyor.domain.queues import QueueConfig
from conveyor.domain.retry import Backoff, BackoffKind
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import (
    NewTask,
    ResponseMode,
    TaskResult,
    TaskSpec,
    build_new_task,
    encode_json,
    fingerprint,
    task_from_new,
    validate_result,
)

NOW = 1_700_000_000.0
QUEUE = QueueConfig(name="mail", max_level=3, max_attempts=5, backoff=Backoff(base_s=2.0))


def build(
    queue: QueueConfig = QUEUE,
    now: float = NOW,
    id_factory: Callable[[], str] | None = None,
    **fields: Any,
) -> NewTask:
    spec = TaskSpec(queue=queue.name, **fields)
    if id_factory is None:
        return build_new_task(spec, queue, now)
    return build_new_task(spec, queue, now, id_factory)


# ---- defaults ----


def test_minimal_spec_takes_its_defaults_from_the_queue() -> None:
    new = build()
    assert new.queue == "mail"
    assert new.level == 0
    assert new.endpoint == ""
    assert new.group == ""
    assert new.data_json == b"null"
    assert new.metadata_json is None
    assert new.response_mode is ResponseMode.CALLBACK
    assert new.callback_url is None
    assert new.max_attempts == 5
    assert new.backoff == Backoff(base_s=2.0)
    assert new.timeout_s is None
    assert new.expires_at is None


def test_new_task_is_queued_to_run_now() -> None:
    new = build()
    assert new.status is TaskStatus.QUEUED
    assert new.run_at == NOW
    assert new.created_at == NOW


def test_spec_overrides_the_queue_defaults() -> None:
    backoff = Backoff(kind=BackoffKind.FIXED, base_s=7.0, cap_s=7.0)
    new = build(max_attempts=1, backoff=backoff)
    assert new.max_attempts == 1
    assert new.backoff == backoff


def test_every_field_is_carried_over() -> None:
    new = build(
        level=3,
        endpoint="/v1/chat/completions",
        data={"messages": [{"role": "user", "content": "hé"}]},
        response_mode=ResponseMode.STREAMING,
        callback_url="https://example.com/hook",
        custom_id="req-1",
        batch_id="batch_1",
        group="tenant-a",
        metadata={"k": "v"},
    )
    assert new.level == 3
    assert new.endpoint == "/v1/chat/completions"
    assert json.loads(new.data_json) == {"messages": [{"role": "user", "content": "hé"}]}
    assert new.response_mode is ResponseMode.STREAMING
    assert new.callback_url == "https://example.com/hook"
    assert (new.custom_id, new.batch_id, new.group) == ("req-1", "batch_1", "tenant-a")
    assert new.metadata_json == b'{"k":"v"}'


def test_response_mode_may_be_given_by_value() -> None:
    assert build(response_mode="blocking").response_mode is ResponseMode.BLOCKING


def test_level_up_to_the_queues_own_max_is_accepted() -> None:
    assert build(level=QUEUE.max_level).level == QUEUE.max_level


# ---- time ----


def test_delay_schedules_the_task() -> None:
    new = build(delay_s=30.0)
    assert new.status is TaskStatus.SCHEDULED
    assert new.run_at == NOW + 30.0


def test_zero_delay_queues_at_once() -> None:
    new = build(delay_s=0)
    assert new.status is TaskStatus.QUEUED
    assert new.run_at == NOW


def test_future_run_at_schedules_the_task() -> None:
    new = build(run_at=NOW + 3_600)
    assert new.status is TaskStatus.SCHEDULED
    assert new.run_at == NOW + 3_600


def test_past_run_at_queues_at_once() -> None:
    new = build(run_at=NOW - 3_600)
    assert new.status is TaskStatus.QUEUED
    assert new.run_at == NOW


def test_timeout_sets_the_deadline_from_now() -> None:
    new = build(timeout_s=90)
    assert new.timeout_s == 90.0
    assert new.expires_at == NOW + 90.0


# ---- ids ----


def test_task_id_comes_from_the_factory_unless_given() -> None:
    assert build(id_factory=lambda: "made").task_id == "made"
    assert build(id_factory=lambda: "made", task_id="mine.1:a-b_c").task_id == "mine.1:a-b_c"


def test_new_task_id_is_32_hex_digits() -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", new_task_id())


def test_new_task_ids_strictly_increase() -> None:
    ids = [new_task_id() for _ in range(10_000)]
    assert all(a < b for a, b in itertools.pairwise(ids))


def test_lease_ids_are_32_hex_digits_and_unique() -> None:
    leases = {new_lease_id() for _ in range(1_000)}
    assert len(leases) == 1_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", lease) for lease in leases)


# ---- the stored task ----


def test_task_from_new_is_a_fresh_untouched_task() -> None:
    new = build(data={"x": 1}, metadata={"m": 2}, timeout_s=10)
    task = task_from_new(new, {"x": 1}, {"m": 2})
    assert (task.task_id, task.queue, task.status) == (new.task_id, "mail", TaskStatus.QUEUED)
    assert task.data == {"x": 1}
    assert task.metadata == {"m": 2}
    assert task.attempts == 0
    assert task.max_attempts == 5
    assert task.expires_at == NOW + 10
    assert task.lease_id is None
    assert task.worker_id is None
    assert task.lease_expires_at is None
    assert task.started_at is None
    assert task.completed_at is None
    assert task.result is None
    assert task.error is None
    assert task.cancel_requested is False


# ---- JSON ----


def test_json_is_compact_and_keeps_unicode() -> None:
    assert encode_json({"a": [1, 2], "b": "é"}, "data") == '{"a":[1,2],"b":"é"}'.encode()


@pytest.mark.parametrize("code", [100, 200, 404, 599])
def test_result_with_an_http_status_is_accepted(code: int) -> None:
    result = TaskResult(status_code=code, body={"ok": True})
    assert validate_result(result) is result


# ---- fingerprints ----

# Only a client-supplied id can be put twice, so only such a task needs a fingerprint.
CONTENT: dict[str, Any] = {
    "task_id": "order-17",
    "level": 1,
    "endpoint": "/v1/embeddings",
    "data": {"input": "hello"},
    "response_mode": ResponseMode.BLOCKING,
    "callback_url": "https://example.com/a",
    "timeout_s": 60.0,
    "custom_id": "c1",
    "batch_id": "b1",
    "group": "g1",
    "metadata": {"m": 1},
    "max_attempts": 2,
    "backoff": Backoff(base_s=3.0),
}

CHANGED: dict[str, Any] = {
    "level": 2,
    "endpoint": "/v1/chat/completions",
    "data": {"input": "hello!"},
    "response_mode": ResponseMode.CALLBACK,
    "callback_url": "https://example.com/b",
    "timeout_s": 61.0,
    "custom_id": "c2",
    "batch_id": "b2",
    "group": "g2",
    "metadata": {"m": 2},
    "max_attempts": 3,
    "backoff": Backoff(base_s=4.0),
}


def test_same_content_gives_the_same_fingerprint() -> None:
    first = build(**CONTENT)
    later = build(now=NOW + 100, **CONTENT)
    assert first.fingerprint == later.fingerprint
    assert first.fingerprint


def test_same_content_with_the_same_delay_gives_the_same_fingerprint() -> None:
    # a producer retrying a delayed put must not be told its task conflicts
    assert (
        build(delay_s=5, **CONTENT).fingerprint
        == build(now=NOW + 1, delay_s=5, **CONTENT).fingerprint
    )


@pytest.mark.parametrize("field", list(CHANGED))
def test_any_content_change_gives_another_fingerprint(field: str) -> None:
    changed = {**CONTENT, field: CHANGED[field]}
    assert build(**CONTENT).fingerprint != build(**changed).fingerprint


def test_another_delay_or_run_at_gives_another_fingerprint() -> None:
    delayed = build(delay_s=5, **CONTENT).fingerprint
    assert delayed != build(delay_s=6, **CONTENT).fingerprint
    assert delayed != build(**CONTENT).fingerprint
    at = build(run_at=NOW + 5, **CONTENT).fingerprint
    assert at != build(run_at=NOW + 6, **CONTENT).fingerprint
    assert at != delayed


@pytest.mark.parametrize("field", ["callback_url", "custom_id", "batch_id", "metadata"])
def test_an_optional_field_left_out_gives_another_fingerprint(field: str) -> None:
    changed = {**CONTENT, field: None}
    assert build(**CONTENT).fingerprint != build(**changed).fingerprint


def test_another_queue_gives_another_fingerprint() -> None:
    other = msgspec.structs.replace(QUEUE, name="post")
    assert build(**CONTENT).fingerprint != build(queue=other, **CONTENT).fingerprint


def test_data_type_matters_to_the_fingerprint() -> None:
    assert build(task_id="t", data=1).fingerprint != build(task_id="t", data="1").fingerprint
    assert build(task_id="t", data=[1]).fingerprint != build(task_id="t", data={"0": 1}).fingerprint


def test_queue_default_resolved_is_the_same_content_as_spelling_it_out() -> None:
    spelt_out = build(task_id="t", max_attempts=5, backoff=QUEUE.backoff)
    assert build(task_id="t").fingerprint == spelt_out.fingerprint


def test_fingerprint_ignores_the_order_of_fields() -> None:
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert re.fullmatch(r"[0-9a-f]{32}", fingerprint({}))
