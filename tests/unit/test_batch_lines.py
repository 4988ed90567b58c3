"""Input lines checked one at a time, requests read back, and result lines written."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.domain.batch_lines import (
    CANCELLED_MESSAGE,
    DEFAULT_MAX_REQUESTS,
    EXPIRED_MESSAGE,
    LineReport,
    LineValidator,
    Outcome,
    RequestLine,
    error_line,
    outcome,
    output_line,
    read_request,
    request_line_id,
    result_line,
)
from conveyor.domain.batches import BatchError
from conveyor.domain.states import TaskStatus
from conveyor.errors import InvalidInput

CHAT = "/v1/chat/completions"


def request(custom_id: object = "r1", **changes: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
    }
    return line | changes


def encode(line: object) -> bytes:
    return json.dumps(line).encode() + b"\n"


def check(lines: list[bytes], endpoint: str = CHAT, **options: int) -> LineReport:
    validator = LineValidator(endpoint, **options)
    for number, line in enumerate(lines, 1):
        validator.feed(line, number)
    return validator.finish()


def only_error(lines: list[bytes], endpoint: str = CHAT) -> BatchError:
    report = check(lines, endpoint)
    assert len(report.errors) == 1, report.errors
    return report.errors[0]


def test_a_valid_file() -> None:
    lines = [encode(request(f"r{i}")) for i in range(3)]
    report = check(lines)
    assert report == LineReport(errors=(), total=3, model="gpt-4o")
    assert report.valid


def test_feed_returns_what_the_task_needs_without_decoding_the_body() -> None:
    validator = LineValidator(CHAT)
    found = validator.feed(encode(request("a")), 1)
    assert isinstance(found, RequestLine)
    assert (found.custom_id, found.endpoint) == ("a", CHAT)
    assert isinstance(found.body, msgspec.Raw)
    assert msgspec.json.decode(found.body) == request()["body"]
    assert validator.feed(b"not json\n", 2) is None


def test_blank_lines_are_skipped_but_keep_the_numbering() -> None:
    lines = [b"\n", encode(request("a")), b"   \r\n", b"", b"{oops\n"]
    report = check(lines)
    assert report.total == 2
    assert [e.line for e in report.errors] == [5]


def test_a_byte_order_mark_on_the_first_line_is_ignored() -> None:
    report = check([b"\xef\xbb\xbf" + encode(request("a")), encode(request("b"))])
    assert report.valid
    assert report.total == 2


@pytest.mark.parametrize(
    ("line", "code", "param", "message"),
    [
        (b"{not json", "invalid_json_line", None, "This line is not parseable as valid JSON."),
        (b'{"custom_id": "a"', "invalid_json_line", None, "This line is not parseable as valid JSON."),
        (b"\xff\xfe", "invalid_json_line", None, "This line is not parseable as valid JSON."),
        (b"[1, 2]", "invalid_json_line", None, "This line is not a JSON object."),
        (b'"text"', "invalid_json_line", None, "This line is not a JSON object."),
        (encode(request(None)), "missing_required_parameter", "custom_id", "Missing required parameter: 'custom_id'."),
        (encode(request(7)), "invalid_type", "custom_id", "Invalid type for 'custom_id': expected a string, but got an integer instead."),
        (encode(request("x" * 513)), "invalid_value", "custom_id", "custom_id is 513 characters; the limit is 512."),
        (encode(request(method=None)), "missing_required_parameter", "method", "Missing required parameter: 'method'."),
        (encode(request(method="GET")), "invalid_value", "method", "Invalid value: 'GET'. The Batch API supports only 'POST'."),
        (encode(request(method="post")), "invalid_value", "method", "Invalid value: 'post'. The Batch API supports only 'POST'."),
        (encode(request(url=None)), "missing_required_parameter", "url", "Missing required parameter: 'url'."),
        (encode(request(url="/v1/embeddings")), "invalid_url", "url", "The URL provided for this request does not match the batch endpoint."),
        (encode(request(url=["/v1/chat/completions"])), "invalid_url", "url", "The URL provided for this request does not match the batch endpoint."),
        (encode(request(body=None)), "missing_required_parameter", "body", "Missing required parameter: 'body'."),
        (encode(request(body="hi")), "invalid_type", "body", "Invalid type for 'body': expected an object, but got a string instead."),
        (encode(request(body=[1])), "invalid_type", "body", "Invalid type for 'body': expected an object, but got an array instead."),
        (encode(request(body=3)), "invalid_type", "body", "Invalid type for 'body': expected an object, but got an integer instead."),
        (encode(request(body={"model": "m", "stream": True})), "streaming_unsupported", "body.stream", "Chat Completions: Streaming is not supported in the Batch API."),
        (encode(request(body={"messages": []})), "invalid_request", "body.model", "Model parameter is required."),
        (encode(request(body={"model": ""})), "invalid_request", "body.model", "Model parameter is required."),
        (encode(request(body={"model": 4})), "invalid_type", "body.model", "Invalid type for 'body.model': expected a string, but got an integer instead."),
    ],
)  # fmt: skip
def test_each_problem_gets_openais_code_param_message_and_line(
    line: bytes, code: str, param: str | None, message: str
) -> None:
    lines = [encode(request("first")), b"\n", line]
    assert only_error(lines) == BatchError(code=code, message=message, param=param, line=3)


def test_a_missing_key_and_a_null_one_are_the_same() -> None:
    line = request()
    del line["custom_id"]
    assert only_error([encode(line)]).code == "missing_required_parameter"


def test_stream_false_is_fine() -> None:
    body = {"model": "gpt-4o", "stream": False}
    assert check([encode(request(body=body))]).valid


@pytest.mark.parametrize(
    ("endpoint", "product"),
    [
        ("/v1/chat/completions", "Chat Completions"),
        ("/v1/completions", "Completions"),
        ("/v1/responses", "Responses"),
        ("/v1/embeddings", "Embeddings"),
        ("/v1/moderations", "Moderations"),
    ],
)
def test_the_streaming_message_names_the_endpoint(endpoint: str, product: str) -> None:
    line = request(url=endpoint, body={"model": "m", "stream": True})
    error = only_error([encode(line)], endpoint)
    assert error.message == f"{product}: Streaming is not supported in the Batch API."


def test_duplicate_custom_ids_are_reported_on_each_repeat() -> None:
    lines = [encode(request("a")), encode(request("b")), encode(request("a")), encode(request("a"))]
    report = check(lines)
    assert [(e.code, e.param, e.line) for e in report.errors] == [
        ("duplicate_custom_id", "custom_id", 3),
        ("duplicate_custom_id", "custom_id", 4),
    ]
    assert "'a'" in report.errors[0].message


def test_a_bad_line_still_claims_its_custom_id() -> None:
    lines = [encode(request("a", url="/v1/embeddings")), encode(request("a"))]
    report = check(lines)
    assert [(e.code, e.line) for e in report.errors] == [
        ("invalid_url", 1),
        ("duplicate_custom_id", 2),
    ]


def test_one_model_per_file() -> None:
    other = request("b", body={"model": "gpt-4o-mini"})
    lines = [encode(request("a")), encode(other), encode(request("c"))]
    report = check(lines)
    assert [(e.code, e.param, e.line) for e in report.errors] == [
        ("model_mismatch", "body.model", 2)
    ]
    assert report.model == "gpt-4o"


def test_every_bad_line_is_listed_with_its_number() -> None:
    lines = [
        encode(request("a")),
        b"{",
        encode(request(None)),
        encode(request("d", method="PUT")),
        encode(request("e")),
        encode(request("f", body={"model": "gpt-4o", "stream": True})),
    ]
    report = check(lines)
    assert [(e.code, e.line) for e in report.errors] == [
        ("invalid_json_line", 2),
        ("missing_required_parameter", 3),
        ("invalid_value", 4),
        ("streaming_unsupported", 6),
    ]
    assert report.total == 6


def test_an_empty_file() -> None:
    for lines in ([], [b"\n", b"  \n"]):
        report = check(lines)
        assert report.errors == (
            BatchError(code="empty_file", message="The input file has no requests."),
        )
        assert (report.total, report.model) == (0, None)


def test_too_many_requests() -> None:
    assert DEFAULT_MAX_REQUESTS == 50_000
    lines = [encode(request(f"r{i}")) for i in range(4)]
    assert check(lines, max_requests=4).valid
    report = check([*lines, encode(request("r4"))], max_requests=4)
    assert report.errors == (
        BatchError(
            code="too_many_tasks", message="The input file has 5 requests; a batch holds at most 4."
        ),
    )


def test_past_the_limit_custom_ids_are_no_longer_kept() -> None:
    validator = LineValidator(CHAT, max_requests=2)
    for number in range(1, 6):
        validator.feed(encode(request(f"r{number}")), number)
    assert validator._custom_ids == set()  # the batch fails anyway; memory stays flat
    assert [e.code for e in validator.finish().errors] == ["too_many_tasks"]


def test_errors_past_the_cap_are_counted_in_one_summary() -> None:
    validator = LineValidator(CHAT, max_errors=3)
    for number in range(1, 11):
        validator.feed(b"nope", number)
    assert validator.error_count == 10
    report = validator.finish()
    assert [e.line for e in report.errors] == [1, 2, 3, None]
    assert report.errors[-1] == BatchError(
        code="too_many_errors", message="7 more lines have errors; only the first 3 are listed."
    )


def test_the_default_cap_holds_a_thousand_errors() -> None:
    validator = LineValidator(CHAT)
    for number in range(1, 2_501):
        validator.feed(b"{", number)
    errors = validator.finish().errors
    assert len(errors) == 1_001
    assert errors[-1].message.startswith("1500 more lines")


def test_an_unknown_endpoint_is_refused() -> None:
    with pytest.raises(InvalidInput):
        LineValidator("/v1/images")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)  # fmt: skip


@given(st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=6))
def test_any_object_without_a_custom_id_is_missing_one(line: dict[str, Any]) -> None:
    line.pop("custom_id", None)
    assert only_error([encode(line)]) == BatchError(
        code="missing_required_parameter",
        message="Missing required parameter: 'custom_id'.",
        param="custom_id",
        line=1,
    )


@given(st.binary(max_size=40))
def test_any_bytes_get_at_most_one_error_and_never_raise(line: bytes) -> None:
    report = check([line])
    assert len(report.errors) <= 1
    if report.errors:
        assert report.errors[0].line in (1, None)


@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=12))
def test_duplicates_are_every_repeat_after_the_first(ids: list[str]) -> None:
    report = check([encode(request(i)) for i in ids])
    repeats = [n for n, i in enumerate(ids, 1) if i in ids[: n - 1]]
    assert [e.line for e in report.errors] == repeats


# -- reading requests back ---------------------------------------------------------------


def test_read_request_returns_the_body_as_sent() -> None:
    line = b'{"custom_id": "q", "method": "POST", "url": "/v1/embeddings", "body": {"model": "e", "input": "x"}}\n'
    found = read_request(line, 7, "/v1/embeddings")
    assert found is not None
    assert (found.custom_id, found.endpoint) == ("q", "/v1/embeddings")
    assert bytes(found.body) == b'{"model": "e", "input": "x"}'
    assert read_request(b"\n", 8, "/v1/embeddings") is None


@pytest.mark.parametrize("line", [b"{", b"[]", b'{"body": {}}', b'{"custom_id": "a"}'])
def test_read_request_refuses_a_line_that_is_not_a_request(line: bytes) -> None:
    with pytest.raises(InvalidInput, match="line 4 "):
        read_request(line, 4, CHAT)


# -- result lines ------------------------------------------------------------------------


def test_an_output_line_has_openais_shape() -> None:
    body = {"id": "chatcmpl-1", "object": "chat.completion", "choices": []}
    line = output_line("0001", "req-1", 200, body, request_id="req_abc")
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    decoded = json.loads(line)
    assert list(decoded) == ["id", "custom_id", "response", "error"]
    assert decoded == {
        "id": "batch_req_0001",
        "custom_id": "req-1",
        "response": {"status_code": 200, "request_id": "req_abc", "body": body},
        "error": None,
    }
    assert list(decoded["response"]) == ["status_code", "request_id", "body"]


def test_the_request_id_defaults_to_the_task_id_and_raw_bodies_pass_through() -> None:
    line = output_line("t1", "c", 200, msgspec.Raw(b'{"a": 1}'))
    assert line == (
        b'{"id":"batch_req_t1","custom_id":"c","response":'
        b'{"status_code":200,"request_id":"t1","body":{"a": 1}},"error":null}\n'
    )
    assert request_line_id("t1") == "batch_req_t1"


def test_an_error_line_has_no_response() -> None:
    line = error_line("t2", "c2", "batch_expired", EXPIRED_MESSAGE)
    assert json.loads(line) == {
        "id": "batch_req_t2",
        "custom_id": "c2",
        "response": None,
        "error": {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        },
    }


def line_of(**task: Any) -> tuple[Outcome, bool, dict[str, Any]]:
    found = result_line(task_id="t", custom_id="c", **task)
    return found.outcome, found.to_output, json.loads(found.line)


@pytest.mark.parametrize("code", [200, 201, 204, 299])
def test_a_2xx_result_goes_to_the_output_file(code: int) -> None:
    ended, to_output, line = line_of(status="succeeded", status_code=code, body={"ok": 1})
    assert (ended, to_output) == (Outcome.COMPLETED, True)
    assert line["response"] == {"status_code": code, "request_id": "t", "body": {"ok": 1}}
    assert line["error"] is None


@pytest.mark.parametrize("code", [100, 302, 400, 404, 429, 500, 503])
def test_another_status_goes_to_the_error_file_in_the_same_shape(code: int) -> None:
    body = {"error": {"message": "bad", "type": "invalid_request_error"}}
    ended, to_output, line = line_of(status="succeeded", status_code=code, body=body)
    assert (ended, to_output) == (Outcome.FAILED, False)
    assert line["response"] == {"status_code": code, "request_id": "t", "body": body}
    assert line["error"] is None


def test_a_succeeded_task_without_a_status_code_counts_as_200() -> None:
    ended, to_output, line = line_of(status="succeeded", body=None)
    assert (ended, to_output, line["response"]["status_code"]) == (Outcome.COMPLETED, True, 200)


def test_a_failed_task_writes_its_error() -> None:
    ended, to_output, line = line_of(
        status="failed", error_code="lease_expired", error_message="lease expired"
    )
    assert (ended, to_output) == (Outcome.FAILED, False)
    assert line["response"] is None
    assert line["error"] == {"code": "lease_expired", "message": "lease expired"}
    _, _, line = line_of(status="failed", error_message="boom")
    assert line["error"] == {"code": "task_failed", "message": "boom"}
    _, _, line = line_of(status="failed")
    assert line["error"]["code"] == "task_failed"
    assert line["error"]["message"]


def test_a_failed_task_with_an_upstream_response_keeps_the_response() -> None:
    ended, _, line = line_of(status="failed", status_code=503, body={"error": "busy"})
    assert ended is Outcome.FAILED
    assert line["response"]["status_code"] == 503
    assert line["error"] is None


@pytest.mark.parametrize("status", ["cancelled", "queued", "scheduled", "running", ""])
def test_requests_never_run_are_cancelled_or_expired_with_the_batch(status: str) -> None:
    ended, to_output, line = line_of(status=status)
    assert (ended, to_output) == (Outcome.NOT_RUN, False)
    assert line["error"] == {"code": "batch_cancelled", "message": CANCELLED_MESSAGE}
    _, _, line = line_of(status=status, batch_expired=True)
    assert line["error"] == {"code": "batch_expired", "message": EXPIRED_MESSAGE}


def test_a_task_that_expired_is_a_batch_expired_line() -> None:
    ended, _, line = line_of(status="expired")
    assert ended is Outcome.NOT_RUN
    assert line["error"]["code"] == "batch_expired"


def test_results_from_before_the_end_are_kept_when_the_batch_expires() -> None:
    ended, to_output, _ = line_of(status="succeeded", status_code=200, batch_expired=True)
    assert (ended, to_output) == (Outcome.COMPLETED, True)


@pytest.mark.parametrize("status", list(TaskStatus))
def test_outcome_agrees_with_result_line(status: TaskStatus) -> None:
    for code in (None, 200, 500):
        assert outcome(status, code) is line_of(status=status, status_code=code)[0]


def test_a_decimal_body_is_named_as_such() -> None:
    error = only_error([encode(request(body=2.5))])
    assert (
        error.message == "Invalid type for 'body': expected an object, but got a decimal instead."
    )


def test_a_task_cancelled_after_it_answered_counts_by_its_answer() -> None:
    from conveyor.domain.batch_lines import Outcome, outcome

    assert outcome("cancelled", 200) is Outcome.COMPLETED
    assert outcome("cancelled", 500) is Outcome.FAILED
    assert outcome("cancelled", None) is Outcome.NOT_RUN
