"""Every bad field of a put is refused with InvalidInput naming it and saying what to fix."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.domain.queues import MAX_LEASE_S, QueueConfig
from conveyor.domain.retry import Backoff
from conveyor.domain.tasks import (
    MAX_CALLBACK_URL,
    MAX_DATA_BYTES,
    MAX_DELAY_S,
    MAX_TASK_TIMEOUT_S,
    TaskResult,
    TaskSpec,
    build_new_task,
    validate_lease_s,
    validate_result,
)
from conveyor.errors import InvalidInput

NOW = 1_700_000_000.0
QUEUE = QueueConfig(name="mail")
NAN = float("nan")
INF = float("inf")


def refused(**fields: Any) -> InvalidInput:
    """The error a spec with `fields` is refused with."""
    spec = TaskSpec(**{"queue": "mail", **fields})
    with pytest.raises(InvalidInput) as info:
        build_new_task(spec, QUEUE, NOW)
    return info.value


def deeply_nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def circular() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


# (field, bad value, words the message must contain)
CASES: list[tuple[str, Any, str]] = [
    # queue names and levels
    ("queue", "", "1-64 characters"),
    ("queue", "a" * 65, "1-64 characters"),
    ("queue", "two words", "1-64 characters"),
    ("queue", "mail:1", "1-64 characters"),
    ("queue", "courrier-é", "1-64 characters"),
    ("level", -1, "from 0 to 9"),
    ("level", 10, "from 0 to 9"),
    ("level", True, "integer"),
    ("level", "1", "integer"),
    ("level", 1.0, "integer"),
    # response mode
    ("response_mode", "sync", "blocking, streaming, callback"),
    ("response_mode", "", "blocking, streaming, callback"),
    ("response_mode", "BLOCKING", "blocking, streaming, callback"),
    # timeouts: zero, negative, not a number, absurd
    ("timeout_s", 0, "more than 0"),
    ("timeout_s", -1.0, "more than 0"),
    ("timeout_s", NAN, "number of seconds"),
    ("timeout_s", INF, "number of seconds"),
    ("timeout_s", -INF, "number of seconds"),
    ("timeout_s", MAX_TASK_TIMEOUT_S + 1, "at most 604800"),
    ("timeout_s", 1e300, "at most 604800"),
    ("timeout_s", "60", "number of seconds"),
    ("timeout_s", True, "number of seconds"),
    # delays
    ("delay_s", -1, "at least 0"),
    ("delay_s", -1e-9, "at least 0"),
    ("delay_s", NAN, "number of seconds"),
    ("delay_s", INF, "number of seconds"),
    ("delay_s", MAX_DELAY_S + 1, "at most"),
    ("delay_s", True, "number of seconds"),
    ("run_at", NAN, "within 366 days"),
    ("run_at", INF, "within 366 days"),
    ("run_at", NOW + MAX_DELAY_S + 1, "within 366 days"),
    ("run_at", "tomorrow", "Unix seconds"),
    ("run_at", True, "Unix seconds"),
    # attempts and backoff
    ("max_attempts", 0, "from 1 to 1000"),
    ("max_attempts", -3, "from 1 to 1000"),
    ("max_attempts", 1_001, "from 1 to 1000"),
    ("max_attempts", True, "integer"),
    ("max_attempts", 2.0, "integer"),
    ("backoff.base_s", Backoff(base_s=-1.0), "base_s"),
    ("backoff.cap_s", Backoff(base_s=10.0, cap_s=1.0), "cap_s"),
    ("backoff.jitter", Backoff(jitter=2.0), "jitter"),
    # data and metadata that are not JSON
    ("data", {1, 2}, "JSON"),
    ("data", b"bytes", "JSON"),
    ("data", NAN, "JSON"),
    ("data", {"score": INF}, "JSON"),
    ("data", [1, -INF], "JSON"),
    ("data", object(), "JSON"),
    ("data", {"key": Backoff()}, "JSON"),
    ("data", {(1, 2): "tuple key"}, "JSON"),
    ("data", circular(), "JSON"),
    ("data", deeply_nested(100_000), "JSON"),
    ("data", "x" * MAX_DATA_BYTES, "limit"),
    ("metadata", [1, 2], "JSON object"),
    ("metadata", "text", "JSON object"),
    ("metadata", {"when": {1, 2}}, "JSON"),
    # oversize or wrongly typed text
    ("endpoint", "e" * 513, "at most 512 characters"),
    ("endpoint", 7, "string"),
    ("custom_id", "c" * 513, "at most 512 characters"),
    ("batch_id", "b" * 129, "at most 128 characters"),
    ("group", "g" * 257, "at most 256 characters"),
    ("group", ["tenant"], "string"),
    # callback URLs
    ("callback_url", "example.com/hook", "http:// or https://"),
    ("callback_url", "ftp://example.com/hook", "http:// or https://"),
    ("callback_url", "javascript:alert(1)", "http:// or https://"),
    ("callback_url", "http://", "http:// or https://"),
    ("callback_url", "https:///path-only", "http:// or https://"),
    ("callback_url", "http://exa mple.com/", "http:// or https://"),
    ("callback_url", "http://example.com/\nX-Injected: 1", "http:// or https://"),
    ("callback_url", "http://[::1/", "http:// or https://"),
    ("callback_url", "https://e.com/" + "p" * MAX_CALLBACK_URL, "at most 2048"),
    ("callback_url", "", "http:// or https://"),
    ("callback_url", 42, "http:// or https://"),
    # client-supplied task ids
    ("task_id", "", "1-128 characters"),
    ("task_id", "t" * 129, "1-128 characters"),
    ("task_id", "has space", "1-128 characters"),
    ("task_id", "a/b", "1-128 characters"),
    ("task_id", "é", "1-128 characters"),
    ("task_id", "line\n", "1-128 characters"),
    ("task_id", 12, "1-128 characters"),
]


@pytest.mark.parametrize(
    ("param", "value", "hint"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_bad_field_is_refused_naming_it(param: str, value: Any, hint: str) -> None:
    field = param.partition(".")[0]
    error = refused(**{field: value})
    assert error.param == param
    assert param.rpartition(".")[2] in error.message  # the message names the field
    assert hint in error.message  # and says what a good value looks like
    assert len(error.message) < 400  # without echoing a huge value back


def test_delay_and_run_at_together_are_refused() -> None:
    error = refused(delay_s=10, run_at=NOW + 10)
    assert error.param == "delay_s"
    assert "not both" in error.message


@pytest.mark.parametrize(
    "fields",
    [
        {"level": 9},
        {"timeout_s": MAX_TASK_TIMEOUT_S},
        {"timeout_s": 0.001},
        {"delay_s": MAX_DELAY_S},
        {"run_at": NOW + MAX_DELAY_S},
        {"max_attempts": 1_000},
        {"endpoint": "e" * 512},
        {"custom_id": "c" * 512},
        {"batch_id": "b" * 128},
        {"group": "g" * 256},
        {"task_id": "t" * 128},
        {"callback_url": "http://localhost:8080/hook?x=1"},
        {"callback_url": "HTTPS://Example.com/hook"},
        {"callback_url": "https://[::1]:9000/hook"},
        {"callback_url": "https://e.com/" + "p" * (MAX_CALLBACK_URL - 14)},
        {"data": {"nested": [1, 2.5, None, True, "é"]}},
        {"metadata": {}},
    ],
)
def test_values_at_the_limits_are_accepted(fields: dict[str, Any]) -> None:
    build_new_task(TaskSpec(queue="mail", **fields), QUEUE, NOW)


def test_level_is_checked_against_the_queues_own_max() -> None:
    narrow = QueueConfig(name="mail", max_level=2)
    with pytest.raises(InvalidInput) as info:
        build_new_task(TaskSpec(queue="mail", level=3), narrow, NOW)
    assert info.value.param == "level"
    assert "from 0 to 2" in info.value.message


# ---- the lease a worker asks for ----


@pytest.mark.parametrize("value", [0, -1, NAN, INF, MAX_LEASE_S + 1, True, "60"])
def test_bad_process_timeout_is_refused(value: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_lease_s(value)
    assert info.value.param == "process_timeout"
    assert "process_timeout" in info.value.message


@pytest.mark.parametrize("value", [0.001, 60, MAX_LEASE_S])
def test_process_timeout_within_limits_is_accepted(value: float) -> None:
    assert validate_lease_s(value) == value


# ---- a worker's result ----


@pytest.mark.parametrize("code", [99, 600, 0, -200, True])
def test_result_with_an_impossible_status_is_refused(code: int) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_result(TaskResult(status_code=code))
    assert info.value.param == "result.status_code"
    assert "100 to 599" in info.value.message


def test_result_body_that_is_not_json_is_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_result(TaskResult(body={NAN}))
    assert info.value.param == "result.body"


def test_result_that_is_not_a_result_is_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_result({"status_code": 200})
    assert info.value.param == "result"
