"""The Batch object: its wire shape, every status step allowed and refused, usage sums."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.domain.batch_specs import validate_create
from conveyor.domain.batches import (
    FINISHED,
    STAMPS,
    TRANSITIONS,
    WIRE_FIELDS,
    Batch,
    BatchError,
    BatchStatus,
    InputTokensDetails,
    OutputTokensDetails,
    RequestCounts,
    Usage,
    add_usage,
    begin_finalizing,
    complete,
    expire,
    fail_validation,
    finish_cancel,
    new_batch,
    new_batch_id,
    record_progress,
    request_cancel,
    start,
    to_wire,
)
from conveyor.errors import Conflict, InvalidInput, InvalidTransition

T0 = 1_700_000_000.0

# OpenAI's Batch object, field for field, in its order (reference/openai-batch.md)
OPENAI_FIELDS = [
    "id",
    "object",
    "endpoint",
    "model",
    "errors",
    "input_file_id",
    "completion_window",
    "status",
    "output_file_id",
    "error_file_id",
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "request_counts",
    "metadata",
    "usage",
]


def fresh(window: str = "24h", metadata: dict[str, str] | None = None) -> Batch:
    spec = validate_create(
        input_file_id="file-abc",
        endpoint="/v1/chat/completions",
        completion_window=window,
        metadata=metadata,
    )
    return new_batch(spec, project="acme", now=T0 + 0.7, id_factory=lambda: "batch_1")


def in_status(status: BatchStatus) -> Batch:
    """A batch brought to `status` by the public steps."""
    batch = fresh()
    steps: dict[BatchStatus, Callable[[Batch], Batch]] = {
        BatchStatus.VALIDATING: lambda b: b,
        BatchStatus.IN_PROGRESS: lambda b: start(b, 3, "gpt-4o", T0 + 1),
        BatchStatus.FAILED: lambda b: fail_validation(b, [], T0 + 1),
        BatchStatus.FINALIZING: lambda b: begin_finalizing(
            in_status(BatchStatus.IN_PROGRESS), T0 + 2
        ),
        BatchStatus.COMPLETED: lambda b: complete(
            in_status(BatchStatus.FINALIZING), "file-out", None, None, T0 + 3
        ),
        BatchStatus.CANCELLING: lambda b: request_cancel(
            in_status(BatchStatus.IN_PROGRESS), T0 + 2
        ),
        BatchStatus.CANCELLED: lambda b: finish_cancel(
            in_status(BatchStatus.CANCELLING), None, None, None, T0 + 3
        ),
        BatchStatus.EXPIRED: lambda b: expire(
            in_status(BatchStatus.IN_PROGRESS), None, None, None, T0 + 3
        ),
    }
    result = steps[status](batch)
    assert result.status is status
    return result


def test_a_new_batch_is_validating_with_zero_counts_and_expires_a_window_later() -> None:
    batch = fresh(window="90m")
    assert batch.status is BatchStatus.VALIDATING
    assert batch.created_at == int(T0)
    assert batch.expires_at == int(T0) + 90 * 60
    assert batch.request_counts == RequestCounts(total=0, completed=0, failed=0)
    assert (batch.queue, batch.level, batch.project, batch.tasks_created) == ("batch", 1, "acme", 0)


def test_batch_ids_are_prefixed_and_time_ordered() -> None:
    ids = [new_batch_id() for _ in range(200)]
    assert all(i.startswith("batch_") for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_the_wire_shape_is_exactly_openais_fields_in_order_with_nulls() -> None:
    wire = to_wire(fresh(metadata={"queue": "gpu", "note": "x"}))
    assert list(wire) == OPENAI_FIELDS == list(WIRE_FIELDS)
    assert wire == {
        "id": "batch_1",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "model": None,
        "errors": None,
        "input_file_id": "file-abc",
        "completion_window": "24h",
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": int(T0),
        "in_progress_at": None,
        "expires_at": int(T0) + 86_400,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": {"queue": "gpu", "note": "x"},
        "usage": None,
    }
    # the bookkeeping stays home; the JSON the HTTP layer sends is plain
    assert msgspec.json.decode(msgspec.json.encode(wire)) == wire


def test_the_wire_shape_of_a_failed_and_a_completed_batch() -> None:
    failed = fail_validation(
        fresh(), [BatchError(code="invalid_json_line", message="m", line=3)], T0 + 5
    )
    assert to_wire(failed)["errors"] == {
        "object": "list",
        "data": [{"code": "invalid_json_line", "message": "m", "param": None, "line": 3}],
    }
    usage = add_usage(None, {"usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    done = complete(in_status(BatchStatus.FINALIZING), "file-o", "file-e", usage, T0 + 9)
    assert to_wire(done)["usage"] == {
        "input_tokens": 3,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 7,
    }


def test_a_stored_batch_reads_back_equal() -> None:
    batch = record_progress(in_status(BatchStatus.IN_PROGRESS), tasks_created=2, completed=1)
    assert msgspec.json.decode(msgspec.json.encode(batch), type=Batch) == batch


def test_start_sets_total_model_and_in_progress_at() -> None:
    batch = start(fresh(), 50, "gpt-4o-mini", T0 + 2.9)
    assert batch.status is BatchStatus.IN_PROGRESS
    assert batch.in_progress_at == int(T0) + 2
    assert batch.model == "gpt-4o-mini"
    assert batch.request_counts == RequestCounts(total=50)


def test_fail_validation_lists_the_errors_and_sets_failed_at() -> None:
    errors = [BatchError(code="empty_file", message="The input file has no requests.")]
    batch = fail_validation(fresh(), iter(errors), T0 + 1)
    assert batch.status is BatchStatus.FAILED
    assert batch.failed_at == int(T0) + 1
    assert batch.errors is not None
    assert batch.errors.object == "list"
    assert batch.errors.data == errors


def test_the_happy_path_keeps_every_earlier_timestamp() -> None:
    batch = start(fresh(), 2, "m", T0 + 1)
    batch = begin_finalizing(batch, T0 + 10)
    usage = Usage(input_tokens=1, output_tokens=2, total_tokens=3)
    batch = complete(batch, "file-out", "file-err", usage, T0 + 12)
    assert batch.status is BatchStatus.COMPLETED
    assert (batch.created_at, batch.in_progress_at, batch.finalizing_at, batch.completed_at) == (
        int(T0),
        int(T0) + 1,
        int(T0) + 10,
        int(T0) + 12,
    )
    assert (batch.output_file_id, batch.error_file_id, batch.usage) == (
        "file-out",
        "file-err",
        usage,
    )
    assert batch.cancelling_at is None
    assert batch.failed_at is None


def test_a_batch_whose_requests_all_failed_completes_without_an_output_file() -> None:
    batch = complete(in_status(BatchStatus.FINALIZING), None, "file-err", None, T0 + 5)
    assert batch.status is BatchStatus.COMPLETED
    assert batch.output_file_id is None


@pytest.mark.parametrize("status", [BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS])
def test_cancel_then_finish_keeps_the_partial_results(status: BatchStatus) -> None:
    batch = request_cancel(in_status(status), T0 + 4)
    assert batch.status is BatchStatus.CANCELLING
    assert batch.cancelling_at == int(T0) + 4
    batch = finish_cancel(batch, "file-out", "file-err", Usage(total_tokens=9), T0 + 6)
    assert batch.status is BatchStatus.CANCELLED
    assert (batch.cancelling_at, batch.cancelled_at) == (int(T0) + 4, int(T0) + 6)
    assert (batch.output_file_id, batch.error_file_id) == ("file-out", "file-err")
    assert batch.usage == Usage(total_tokens=9)


@pytest.mark.parametrize("status", [BatchStatus.CANCELLING, BatchStatus.CANCELLED])
def test_cancelling_again_returns_the_batch_unchanged(status: BatchStatus) -> None:
    batch = in_status(status)
    assert request_cancel(batch, T0 + 100) is batch


@pytest.mark.parametrize(
    "status",
    [BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.FINALIZING],
)
def test_cancelling_an_ended_batch_is_a_conflict_with_openais_message(status: BatchStatus) -> None:
    with pytest.raises(Conflict) as caught:
        request_cancel(in_status(status), T0 + 100)
    assert isinstance(caught.value, InvalidTransition)
    assert caught.value.message == f"Cannot cancel a batch with status '{status}'."


@pytest.mark.parametrize("status", [BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS])
def test_expiry_keeps_the_partial_results(status: BatchStatus) -> None:
    batch = expire(in_status(status), "file-out", None, None, T0 + 86_401)
    assert batch.status is BatchStatus.EXPIRED
    assert batch.expired_at == int(T0) + 86_401
    assert batch.output_file_id == "file-out"


STEPS: dict[BatchStatus, Callable[[Batch], Batch]] = {
    BatchStatus.IN_PROGRESS: lambda b: start(b, 1, "m", T0 + 50),
    BatchStatus.FAILED: lambda b: fail_validation(b, [], T0 + 50),
    BatchStatus.FINALIZING: lambda b: begin_finalizing(b, T0 + 50),
    BatchStatus.COMPLETED: lambda b: complete(b, None, None, None, T0 + 50),
    BatchStatus.CANCELLED: lambda b: finish_cancel(b, None, None, None, T0 + 50),
    BatchStatus.EXPIRED: lambda b: expire(b, None, None, None, T0 + 50),
}


@pytest.mark.parametrize("current", list(BatchStatus))
@pytest.mark.parametrize("target", list(STEPS))
def test_every_step_is_allowed_exactly_where_the_table_says(
    current: BatchStatus, target: BatchStatus
) -> None:
    batch = in_status(current)
    if target in TRANSITIONS[current]:
        moved = STEPS[target](batch)
        assert moved.status is target
        assert getattr(moved, STAMPS[target]) == int(T0) + 50
        # every timestamp set before is kept
        for field in STAMPS.values():
            if getattr(batch, field) is not None:
                assert getattr(moved, field) == getattr(batch, field) or field == STAMPS[target]
    else:
        with pytest.raises(InvalidTransition, match=f"is {current}; it cannot become {target}"):
            STEPS[target](batch)


def test_the_table_ends_where_openai_ends() -> None:
    assert {s for s, targets in TRANSITIONS.items() if not targets} == FINISHED
    assert all(s.finished == (s in FINISHED) for s in BatchStatus)
    assert set(STAMPS) == set(BatchStatus) - {BatchStatus.VALIDATING}


def test_record_progress_moves_counts_and_the_creation_mark() -> None:
    batch = in_status(BatchStatus.IN_PROGRESS)
    batch = record_progress(batch, tasks_created=3)
    batch = record_progress(batch, completed=2)
    batch = record_progress(batch, failed=1)
    assert batch.tasks_created == 3
    assert batch.request_counts == RequestCounts(total=3, completed=2, failed=1)
    with pytest.raises(InvalidInput):
        record_progress(batch, completed=3)
    with pytest.raises(InvalidInput):
        record_progress(batch, tasks_created=-1)


# -- usage -----------------------------------------------------------------------------


def test_chat_completion_usage_with_details() -> None:
    body = {
        "id": "chatcmpl-1",
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }
    total = add_usage(add_usage(None, body), body)
    assert total == Usage(
        input_tokens=20,
        input_tokens_details=InputTokensDetails(cached_tokens=8),
        output_tokens=10,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=4),
        total_tokens=30,
    )


def test_responses_usage() -> None:
    body = {
        "object": "response",
        "usage": {
            "input_tokens": 7,
            "input_tokens_details": {"cached_tokens": 1},
            "output_tokens": 3,
            "output_tokens_details": {"reasoning_tokens": 2},
            "total_tokens": 10,
        },
    }
    assert add_usage(None, body) == Usage(
        input_tokens=7,
        input_tokens_details=InputTokensDetails(cached_tokens=1),
        output_tokens=3,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=2),
        total_tokens=10,
    )


def test_embeddings_usage_has_no_output_tokens() -> None:
    body = {"object": "list", "data": [], "usage": {"prompt_tokens": 8, "total_tokens": 8}}
    assert add_usage(Usage(input_tokens=1, total_tokens=1), body) == Usage(
        input_tokens=9, total_tokens=9
    )


def test_total_tokens_defaults_to_input_plus_output() -> None:
    assert add_usage(None, {"usage": {"prompt_tokens": 2, "completion_tokens": 3}}) == Usage(
        input_tokens=2, output_tokens=3, total_tokens=5
    )


def test_raw_json_bodies_are_read_without_decoding_the_rest() -> None:
    raw = msgspec.Raw(b'{"choices":[{"x":1}],"usage":{"prompt_tokens":4,"completion_tokens":1}}')
    assert add_usage(None, raw) == Usage(input_tokens=4, output_tokens=1, total_tokens=5)
    assert add_usage(None, b'{"usage": {"input_tokens": 2}}') == Usage(
        input_tokens=2, total_tokens=2
    )


@pytest.mark.parametrize(
    "body",
    [
        None,
        "text",
        [1, 2],
        {},
        {"results": [{"flagged": False}]},  # moderations report no usage
        {"usage": None},
        {"usage": {"unrelated": 3}},
        b"not json",
        msgspec.Raw(b"[1]"),
    ],
)
def test_bodies_without_usage_leave_the_total_as_it_is(body: Any) -> None:
    assert add_usage(None, body) is None
    total = Usage(total_tokens=4)
    assert add_usage(total, body) is total


def test_nonsense_counts_are_ignored() -> None:
    body = {
        "usage": {
            "prompt_tokens": True,
            "completion_tokens": -3,
            "total_tokens": "9",
            "prompt_tokens_details": None,
            "completion_tokens_details": [1],
        }
    }
    assert add_usage(None, body) == Usage()


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), max_size=20))
def test_usage_sums_are_the_sums_of_the_parts(parts: list[tuple[int, int]]) -> None:
    total: Usage | None = None
    for prompt, completion in parts:
        total = add_usage(
            total, {"usage": {"prompt_tokens": prompt, "completion_tokens": completion}}
        )
    if not parts:
        assert total is None
        return
    assert total is not None
    assert total.input_tokens == sum(p for p, _ in parts)
    assert total.output_tokens == sum(c for _, c in parts)
    assert total.total_tokens == total.input_tokens + total.output_tokens
