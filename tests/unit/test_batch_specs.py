"""POST /v1/batches: every rule on its fields, with OpenAI's codes and params."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.domain.batch_specs import (
    DEFAULT_BATCH_LEVEL,
    DEFAULT_BATCH_QUEUE,
    ENDPOINTS,
    MAX_WINDOW_S,
    BatchSpec,
    parse_window,
    validate_create,
)
from conveyor.errors import InvalidInput

GOOD: dict[str, Any] = {
    "input_file_id": "file-abc",
    "endpoint": "/v1/chat/completions",
    "completion_window": "24h",
}


def create(**changes: Any) -> BatchSpec:
    return validate_create(**(GOOD | changes))


def refused(**changes: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        create(**changes)
    return caught.value


def test_the_minimal_body_gets_conveyors_defaults() -> None:
    assert create() == BatchSpec(
        input_file_id="file-abc",
        endpoint="/v1/chat/completions",
        completion_window="24h",
        window_s=86_400,
        metadata=None,
        output_expires_after_s=None,
        queue=DEFAULT_BATCH_QUEUE,
        level=DEFAULT_BATCH_LEVEL,
    )
    assert (DEFAULT_BATCH_QUEUE, DEFAULT_BATCH_LEVEL) == ("batch", 1)


@pytest.mark.parametrize("param", ["input_file_id", "endpoint", "completion_window"])
def test_required_fields(param: str) -> None:
    error = refused(**{param: None})
    assert (error.code, error.param) == ("missing_required_parameter", param)
    assert error.message == f"Missing required parameter: '{param}'."


@pytest.mark.parametrize("param", ["input_file_id", "endpoint", "completion_window"])
def test_required_fields_are_strings(param: str) -> None:
    error = refused(**{param: 12})
    assert (error.code, error.param) == ("invalid_type", param)
    assert error.message == (
        f"Invalid type for '{param}': expected a string, but got an integer instead."
    )


def test_an_empty_input_file_id_is_refused() -> None:
    error = refused(input_file_id="")
    assert (error.code, error.param) == ("invalid_value", "input_file_id")


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_every_supported_endpoint(endpoint: str) -> None:
    assert create(endpoint=endpoint).endpoint == endpoint


@pytest.mark.parametrize(
    "endpoint", ["/v1/chat", "v1/chat/completions", "/v1/chat/completions/", "/V1/embeddings", ""]
)
def test_other_endpoints_are_invalid_values(endpoint: str) -> None:
    error = refused(endpoint=endpoint)
    assert (error.code, error.param) == ("invalid_value", "endpoint")
    assert error.message.startswith(f"Invalid value: {endpoint!r}. Supported values are: ")
    assert "'/v1/responses', " in error.message
    assert ", and '/v1/moderations'." in error.message


@pytest.mark.parametrize(
    ("window", "seconds"),
    [
        ("24h", 86_400),
        ("1m", 60),
        ("90m", 5_400),
        ("1h", 3_600),
        ("48h", 172_800),
        ("7d", 604_800),
        ("30d", MAX_WINDOW_S),
        ("720h", MAX_WINDOW_S),
        ("43200m", MAX_WINDOW_S),
    ],
)
def test_completion_windows(window: str, seconds: int) -> None:
    assert parse_window(window) == seconds
    spec = create(completion_window=window)
    assert (spec.completion_window, spec.window_s) == (window, seconds)


@pytest.mark.parametrize(
    "window",
    ["", "24", "h", "0h", "0m", "-1h", "1.5h", "01h", "24H", "1w", "1s", " 24h", "24h ", "31d",
     "721h", "43201m", "99999999d", "\uff12\uff14h"],
)  # fmt: skip
def test_bad_completion_windows(window: str) -> None:
    error = refused(completion_window=window)
    assert (error.code, error.param) == ("invalid_value", "completion_window")
    assert "30 days" in error.message


@given(st.integers(1, 10_000), st.sampled_from(["m", "h", "d"]))
def test_windows_within_30_days_pass_and_longer_ones_do_not(n: int, unit: str) -> None:
    seconds = n * {"m": 60, "h": 3_600, "d": 86_400}[unit]
    if seconds <= MAX_WINDOW_S:
        assert parse_window(f"{n}{unit}") == seconds
    else:
        with pytest.raises(InvalidInput):
            parse_window(f"{n}{unit}")


# -- metadata ----------------------------------------------------------------------------


def test_metadata_at_the_limits_is_kept() -> None:
    metadata = {f"k{i:02}".ljust(64, "x"): "v" * 512 for i in range(16)}
    assert create(metadata=metadata).metadata == metadata


def test_seventeen_pairs_are_too_many() -> None:
    error = refused(metadata={str(i): "v" for i in range(17)})
    assert (error.code, error.param) == ("object_above_max_properties", "metadata")
    assert error.message == (
        "Invalid 'metadata': too many properties. Expected an object with at most 16"
        " properties, but got an object with 17 properties instead."
    )


def test_a_key_over_64_characters_is_refused() -> None:
    error = refused(metadata={"k" * 65: "v"})
    assert (error.code, error.param) == ("invalid_value", "metadata")


def test_a_value_over_512_characters_is_refused() -> None:
    error = refused(metadata={"note": "v" * 513})
    assert (error.code, error.param) == ("string_above_max_length", "metadata.note")


@pytest.mark.parametrize(
    ("value", "kind"),
    [(1, "an integer"), (1.5, "a decimal"), (True, "a boolean"), (None, "null"),
     ([], "an array"), ({}, "an object")],
)  # fmt: skip
def test_a_non_string_value_is_invalid_type_naming_its_key(value: object, kind: str) -> None:
    error = refused(metadata={"ok": "yes", "priority": value})
    assert (error.code, error.param) == ("invalid_type", "metadata.priority")
    assert error.message == (
        f"Invalid type for 'metadata.priority': expected a string, but got {kind} instead."
    )


def test_metadata_must_be_an_object() -> None:
    error = refused(metadata=["a"])
    assert (error.code, error.param) == ("invalid_type", "metadata")


# -- output_expires_after --------------------------------------------------------------


@pytest.mark.parametrize("seconds", [3_600, 86_400, 2_592_000])
def test_output_expires_after(seconds: int) -> None:
    spec = create(output_expires_after={"anchor": "created_at", "seconds": seconds})
    assert spec.output_expires_after_s == seconds


@pytest.mark.parametrize(
    ("value", "code", "param"),
    [
        ("soon", "invalid_type", "output_expires_after"),
        ({"seconds": 3_600}, "missing_required_parameter", "output_expires_after.anchor"),
        ({"anchor": "now", "seconds": 3_600}, "invalid_value", "output_expires_after.anchor"),
        ({"anchor": "created_at"}, "missing_required_parameter", "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": "3600"}, "invalid_type", "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": 3600.0}, "invalid_type", "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": True}, "invalid_type", "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": 3_599}, "integer_below_min_value", "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": 2_592_001}, "integer_above_max_value", "output_expires_after.seconds"),
    ],
)  # fmt: skip
def test_bad_output_expires_after(value: object, code: str, param: str) -> None:
    error = refused(output_expires_after=value)
    assert (error.code, error.param) == (code, param)


# -- Conveyor's queue and level ----------------------------------------------------------


def test_metadata_names_the_queue_and_level() -> None:
    spec = create(metadata={"queue": "gpu-a100", "level": "3"})
    assert (spec.queue, spec.level) == ("gpu-a100", 3)
    assert spec.metadata == {"queue": "gpu-a100", "level": "3"}  # kept for the client


def test_the_header_wins_over_metadata_and_the_default() -> None:
    assert create(queue="fast", metadata={"queue": "slow"}).queue == "fast"
    assert create(default_queue="offline").queue == "offline"
    assert create(default_queue="offline", metadata={"queue": "slow"}).queue == "slow"


@pytest.mark.parametrize("name", ["", "a b", "a.b", "x" * 65, "gpu:1", "é"])
def test_bad_queue_names(name: str) -> None:
    error = refused(metadata={"queue": name})
    assert (error.code, error.param) == ("invalid_value", "metadata.queue")
    error = refused(queue=name)
    assert (error.code, error.param) == ("invalid_value", "queue")


@pytest.mark.parametrize(("text", "level"), [("0", 0), ("1", 1), ("9", 9), ("99", 99), ("07", 7)])
def test_levels(text: str, level: int) -> None:
    assert create(metadata={"level": text}).level == level


@pytest.mark.parametrize("text", ["", "-1", "100", "1.0", " 1", "one", "\u00b2", "\u0661"])
def test_bad_levels(text: str) -> None:
    error = refused(metadata={"level": text})
    assert (error.code, error.param) == ("invalid_value", "metadata.level")


def test_a_level_that_is_not_a_string_is_a_metadata_type_error() -> None:
    error = refused(metadata={"level": 2})
    assert (error.code, error.param) == ("invalid_type", "metadata.level")
