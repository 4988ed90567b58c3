"""A batch's lines: checking the input file, reading its requests, writing result lines.

The service reads the input file twice, streaming. Pass one feeds every line to a
LineValidator, which keeps no bodies: its only per-line state is the set of custom_ids
seen, and it lists at most `max_errors` errors (then one `too_many_errors` entry counting
the rest), so a file of a million bad lines costs no more than a million good ones. No
task may be created unless the whole file is valid, hence pass two: `read_request` turns
each line into what its task needs, the body kept as the raw JSON it was sent as (a
`msgspec.Raw`, which `tasks.encode_json` stores without encoding again). `feed` returns
the same for a valid line, for a caller that can afford to hold a small file's requests.

Codes where OpenAI is silent or unconfirmed: a line that is JSON but not an object gets
`invalid_json_line`; a method other than POST `invalid_value` (param `method`); a
custom_id that is not a string, or a body that is not an object, `invalid_type`; a
custom_id over 512 characters or a body over 16 MiB `invalid_value`; a model that is not
a string `invalid_type` (param `body.model`); `duplicate_custom_id`, `model_mismatch`
(param `body.model`), `empty_file` and `too_many_tasks` as other implementations use them.
Each line gets at most one error, the first found in this order: JSON, custom_id,
duplicate, method, url, body, stream, model, model mismatch.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NamedTuple

import msgspec

from conveyor.domain.batch_specs import ENDPOINTS, input_error, json_type
from conveyor.domain.batches import BatchError
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import MAX_DATA_BYTES, MAX_TEXT

DEFAULT_MAX_REQUESTS = 50_000
MAX_LISTED_ERRORS = 1_000
REQUEST_ID_PREFIX = "batch_req_"
CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
FAILED_CODE = "task_failed"
FAILED_MESSAGE = "The request failed without a message."

_BOM = b"\xef\xbb\xbf"
_ABSENT = msgspec.Raw(b"")


class _Line(msgspec.Struct):
    custom_id: Any = None
    method: Any = None
    url: Any = None
    body: msgspec.Raw = _ABSENT


class _Body(msgspec.Struct):
    model: Any = None
    stream: Any = None


_line_decoder = msgspec.json.Decoder(_Line)
_body_decoder = msgspec.json.Decoder(_Body)


class RequestLine(msgspec.Struct, frozen=True):
    """What one input line's task needs: its custom_id, endpoint and body as raw JSON."""

    custom_id: str
    endpoint: str
    body: msgspec.Raw


class LineReport(NamedTuple):
    """What a LineValidator found: the errors (empty if valid), requests and their model."""

    errors: tuple[BatchError, ...]
    total: int
    model: str | None

    @property
    def valid(self) -> bool:
        """True if the file holds no error: the batch may start."""
        return not self.errors


def _error(line: int, code: str, message: str, param: str | None = None) -> BatchError:
    return BatchError(code=code, message=message, param=param, line=line)


def _missing(line: int, param: str) -> BatchError:
    return _error(
        line, "missing_required_parameter", f"Missing required parameter: '{param}'.", param
    )


def _wrong_type(line: int, param: str, expected: str, got: str) -> BatchError:
    message = f"Invalid type for '{param}': expected {expected}, but got {got} instead."
    return _error(line, "invalid_type", message, param)


_RAW_TYPES = {ord("["): "an array", ord('"'): "a string", ord("t"): "a boolean"}
_RAW_TYPES |= {ord("f"): "a boolean", ord("n"): "null"}


def _raw_type(raw: msgspec.Raw) -> str:
    """The JSON type of a raw value that is not an object, as `json_type` names it."""
    found = _RAW_TYPES.get(memoryview(raw)[0])
    if found is None:  # a number: short, as nothing else starts with a digit or '-'
        return "a decimal" if any(c in bytes(raw) for c in b".eE") else "an integer"
    return found


def _decode(line: bytes, n: int) -> _Line | BatchError | None:
    if line.startswith(_BOM):  # editors on Windows start a UTF-8 file with one
        line = line[3:]
    if not line or line.isspace():
        return None
    try:
        return _line_decoder.decode(line)
    except msgspec.ValidationError:  # JSON, but not an object
        return _error(n, "invalid_json_line", "This line is not a JSON object.")
    except msgspec.DecodeError:
        return _error(n, "invalid_json_line", "This line is not parseable as valid JSON.")


def _check(parsed: _Line, n: int, endpoint: str) -> BatchError | str:
    """The line's first error after its custom_id, else the model it names."""
    if parsed.method is None:
        return _missing(n, "method")
    if parsed.method != "POST":
        return _error(
            n,
            "invalid_value",
            f"Invalid value: {parsed.method!r:.80}. The Batch API supports only 'POST'.",
            "method",
        )
    if parsed.url is None:
        return _missing(n, "url")
    if parsed.url != endpoint:
        return _error(
            n,
            "invalid_url",
            "The URL provided for this request does not match the batch endpoint.",
            "url",
        )
    body = parsed.body
    if not body or (len(body) == 4 and bytes(body) == b"null"):
        return _missing(n, "body")
    if len(body) > MAX_DATA_BYTES:
        return _error(
            n,
            "invalid_value",
            f"The request body is {len(body)} bytes; the limit is {MAX_DATA_BYTES}.",
            "body",
        )
    try:
        fields = _body_decoder.decode(body)
    except msgspec.ValidationError:
        return _wrong_type(n, "body", "an object", _raw_type(body))
    if fields.stream is True:
        return _error(
            n,
            "streaming_unsupported",
            f"{ENDPOINTS[endpoint]}: Streaming is not supported in the Batch API.",
            "body.stream",
        )
    if fields.model is None or fields.model == "":
        return _error(n, "invalid_request", "Model parameter is required.", "body.model")
    if not isinstance(fields.model, str):
        return _wrong_type(n, "body.model", "a string", json_type(fields.model))
    return fields.model


class LineValidator:
    """Checks an input file line by line, streaming; `finish` says what was wrong with it."""

    def __init__(
        self,
        endpoint: str,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        max_errors: int = MAX_LISTED_ERRORS,
    ) -> None:
        if endpoint not in ENDPOINTS:
            raise input_error(
                f"unknown batch endpoint {endpoint!r}", param="endpoint", code="invalid_value"
            )
        self.endpoint = endpoint
        self.max_requests = max_requests
        self.max_errors = max_errors
        self.count = 0
        self.model: str | None = None
        self._errors: list[BatchError] = []
        self._unlisted = 0
        self._custom_ids: set[str] = set()

    @property
    def error_count(self) -> int:
        """Errors found so far, listed or not."""
        return len(self._errors) + self._unlisted

    def _add(self, error: BatchError) -> None:
        if len(self._errors) < self.max_errors:
            self._errors.append(error)
        else:
            self._unlisted += 1

    def feed(self, line: bytes, line_number: int) -> RequestLine | None:
        """Check line `line_number` (1-based); its request if valid, else None.

        Blank lines are skipped (they count as lines, not requests).
        """
        parsed = _decode(line, line_number)
        if parsed is None:
            return None
        self.count += 1
        if self.count == self.max_requests + 1:
            # the batch fails anyway: stop the one state that grows with the file
            self._custom_ids = set()
        if isinstance(parsed, BatchError):
            self._add(parsed)
            return None
        custom_id = parsed.custom_id
        if custom_id is None:
            self._add(_missing(line_number, "custom_id"))
            return None
        if not isinstance(custom_id, str):
            self._add(_wrong_type(line_number, "custom_id", "a string", json_type(custom_id)))
            return None
        if len(custom_id) > MAX_TEXT["custom_id"]:
            message = (
                f"custom_id is {len(custom_id)} characters; the limit is {MAX_TEXT['custom_id']}."
            )
            self._add(_error(line_number, "invalid_value", message, "custom_id"))
            return None
        if self.count <= self.max_requests:
            if custom_id in self._custom_ids:
                message = f"The custom_id {custom_id!r:.80} is used by an earlier line; each must be unique."
                self._add(_error(line_number, "duplicate_custom_id", message, "custom_id"))
                return None
            self._custom_ids.add(custom_id)
        found = _check(parsed, line_number, self.endpoint)
        if isinstance(found, BatchError):
            self._add(found)
            return None
        if self.model is None:
            self.model = found
        elif found != self.model:
            message = (
                f"The model {found!r:.80} differs from {self.model!r:.80}, the model of the"
                " file's first request; a batch uses one model."
            )
            self._add(_error(line_number, "model_mismatch", message, "body.model"))
            return None
        return RequestLine(custom_id, self.endpoint, parsed.body)

    def finish(self) -> LineReport:
        """The errors found (file-wide ones last), the number of requests and their model."""
        errors = list(self._errors)
        if self._unlisted:
            errors.append(
                BatchError(
                    code="too_many_errors",
                    message=f"{self._unlisted} more lines have errors; only the first"
                    f" {self.max_errors} are listed.",
                )
            )
        if self.count == 0:
            errors.append(BatchError(code="empty_file", message="The input file has no requests."))
        if self.count > self.max_requests:
            errors.append(
                BatchError(
                    code="too_many_tasks",
                    message=f"The input file has {self.count} requests; a batch holds at most"
                    f" {self.max_requests}.",
                )
            )
        return LineReport(tuple(errors), self.count, self.model)


def read_request(line: bytes, line_number: int, endpoint: str) -> RequestLine | None:
    """The request on a line of an already validated file; None for a blank line.

    Checks only what reading needs: a file that changed since validation raises InvalidInput.
    """
    parsed = _decode(line, line_number)
    if parsed is None:
        return None
    if isinstance(parsed, BatchError) or not isinstance(parsed.custom_id, str) or not parsed.body:
        raise input_error(
            f"line {line_number} of the input file is not a valid request",
            param="input_file_id",
            code="invalid_value",
        )
    return RequestLine(parsed.custom_id, endpoint, parsed.body)


# -- result lines ----------------------------------------------------------------------


class Outcome(StrEnum):
    """How a request ended, for `request_counts` and for which file its line goes to."""

    COMPLETED = "completed"  # a 2xx response: output file, counted as completed
    FAILED = "failed"  # another response or a worker error: error file, counted as failed
    NOT_RUN = "not_run"  # cancelled or expired before running: error file, counted in neither


class _Response(msgspec.Struct):
    status_code: int
    request_id: str
    body: Any


class _LineError(msgspec.Struct):
    code: str
    message: str


class _ResultLine(msgspec.Struct):
    id: str
    custom_id: str | None
    response: _Response | None
    error: _LineError | None


_encode = msgspec.json.Encoder().encode


def request_line_id(task_id: str) -> str:
    """The `batch_req_…` id of a request's result line; stable, so rewritten files match."""
    return REQUEST_ID_PREFIX + task_id


def output_line(
    task_id: str,
    custom_id: str | None,
    status_code: int,
    body: Any,
    request_id: str | None = None,
) -> bytes:
    """A result line with an HTTP response, newline-terminated; `body` may be msgspec.Raw.

    `response.request_id` is the upstream's request id when known, else the task id.
    """
    response = _Response(status_code, task_id if request_id is None else request_id, body)
    return _encode(_ResultLine(request_line_id(task_id), custom_id, response, None)) + b"\n"


def error_line(task_id: str, custom_id: str | None, code: str, message: str) -> bytes:
    """A result line for a request that got no HTTP response, newline-terminated."""
    error = _LineError(code, message)
    return _encode(_ResultLine(request_line_id(task_id), custom_id, None, error)) + b"\n"


def outcome(status: str, status_code: int | None = None) -> Outcome:
    """How a batch task in `status` (a TaskStatus) with that result status code ended.

    A task cancelled while it ran may still have finished its request (a worker's result
    that arrives after the cancel is kept): with a status code, it counts as answered.
    """
    if status == TaskStatus.SUCCEEDED or (status == TaskStatus.CANCELLED and status_code):
        return Outcome.COMPLETED if 200 <= (status_code or 200) < 300 else Outcome.FAILED
    if status == TaskStatus.FAILED:
        return Outcome.FAILED
    return Outcome.NOT_RUN


class ResultLine(NamedTuple):
    """A result line and how its request ended (which decides its file and its count)."""

    outcome: Outcome
    line: bytes

    @property
    def to_output(self) -> bool:
        """True if the line belongs in the output file, False for the error file."""
        return self.outcome is Outcome.COMPLETED


def result_line(
    *,
    task_id: str,
    custom_id: str | None,
    status: str,
    status_code: int | None = None,
    body: Any = None,
    error_code: str | None = None,
    error_message: str | None = None,
    batch_expired: bool = False,
    request_id: str | None = None,
) -> ResultLine:
    """A finished (or never run) batch task's line, and which file it goes to.

    A succeeded task writes its response (2xx to the output file, others to the error
    file); a failed one its response if it has one, else its error (code `task_failed`
    when it has none). Any other status (cancelled, expired, or never taken) means the
    request was not executed: `batch_expired` if the batch or the task expired, else
    `batch_cancelled`.
    """
    ended = outcome(status, status_code)
    if ended is not Outcome.NOT_RUN and (status_code is not None or status == TaskStatus.SUCCEEDED):
        line = output_line(task_id, custom_id, status_code or 200, body, request_id)
    elif ended is Outcome.FAILED:
        line = error_line(
            task_id, custom_id, error_code or FAILED_CODE, error_message or FAILED_MESSAGE
        )
    elif batch_expired or status == TaskStatus.EXPIRED:
        line = error_line(task_id, custom_id, "batch_expired", EXPIRED_MESSAGE)
    else:
        line = error_line(task_id, custom_id, "batch_cancelled", CANCELLED_MESSAGE)
    return ResultLine(ended, line)
