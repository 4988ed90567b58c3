"""Creating a batch: the checks on `POST /v1/batches` and the BatchSpec they produce.

OpenAI's rules, with its error codes (an InvalidInput whose `code` is set per instance, so
the HTTP layer answers `invalid_value`, `invalid_type`, ... as OpenAI does), plus
Conveyor's extensions:

- `completion_window` is `24h` or any `Nm`, `Nh`, `Nd` with N >= 1, from one minute up to
  MAX_WINDOW_S (30 days, the longest a batch file lives by default);
- the tasks go to the queue named by the `X-Conveyor-Queue` header, else `metadata.queue`,
  else the server's default batch queue, at `metadata.level` (a string of digits, default 1).
  The level is checked here against MAX_LEVEL_LIMIT only; the service checks it against the
  chosen queue's own `max_level` once it knows the queue (`queues.validate_level`).
"""

from __future__ import annotations

import re

import msgspec

from conveyor.domain.queues import MAX_LEVEL_LIMIT, validate_queue_name
from conveyor.errors import InvalidInput

# endpoint -> the product name OpenAI puts in front of a line's error message
ENDPOINTS: dict[str, str] = {
    "/v1/responses": "Responses",
    "/v1/chat/completions": "Chat Completions",
    "/v1/embeddings": "Embeddings",
    "/v1/completions": "Completions",
    "/v1/moderations": "Moderations",
}
WINDOW_UNITS = {"m": 60, "h": 3_600, "d": 86_400}
MAX_WINDOW_S = 30 * 86_400
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MIN_OUTPUT_EXPIRES_S = 3_600
MAX_OUTPUT_EXPIRES_S = 2_592_000
DEFAULT_BATCH_QUEUE = "batch"
DEFAULT_BATCH_LEVEL = 1

_WINDOW = re.compile(r"([1-9][0-9]{0,6})([mhd])")


class BatchSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A checked `POST /v1/batches`, with Conveyor's queue and level resolved."""

    input_file_id: str
    endpoint: str
    completion_window: str
    window_s: int
    metadata: dict[str, str] | None = None
    output_expires_after_s: int | None = None
    queue: str = DEFAULT_BATCH_QUEUE
    level: int = DEFAULT_BATCH_LEVEL


def input_error(message: str, *, param: str | None, code: str) -> InvalidInput:
    """An InvalidInput carrying OpenAI's error `code` (e.g. `invalid_value`) instead of its own."""
    exc = InvalidInput(message, param=param)
    exc.code = code
    return exc


def missing(param: str) -> InvalidInput:
    """OpenAI's error for a required parameter left out."""
    return input_error(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def json_type(value: object) -> str:
    """The JSON type of a decoded value, with its article, as OpenAI names it in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def wrong_type(param: str, expected: str, value: object) -> InvalidInput:
    """OpenAI's `invalid_type` error: 'expected a string, but got an integer instead'."""
    return input_error(
        f"Invalid type for '{param}': expected {expected}, but got {json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def parse_window(window: object) -> int:
    """Seconds in a completion window: `24h`, or Conveyor's `Nm`/`Nh`/`Nd`, up to 30 days."""
    if window is None:
        raise missing("completion_window")
    if not isinstance(window, str):
        raise wrong_type("completion_window", "a string", window)
    found = _WINDOW.fullmatch(window)
    seconds = int(found.group(1)) * WINDOW_UNITS[found.group(2)] if found else 0
    if not 0 < seconds <= MAX_WINDOW_S:
        raise input_error(
            f"Invalid value: {window!r:.80}. Supported values are: '24h', and in Conveyor any"
            " 'Nm', 'Nh' or 'Nd' window from 1 minute to 30 days (e.g. '90m', '2d').",
            param="completion_window",
            code="invalid_value",
        )
    return seconds


def _endpoint(endpoint: object) -> str:
    if endpoint is None:
        raise missing("endpoint")
    if not isinstance(endpoint, str):
        raise wrong_type("endpoint", "a string", endpoint)
    if endpoint not in ENDPOINTS:
        *first, last = (f"'{name}'" for name in ENDPOINTS)
        raise input_error(
            f"Invalid value: {endpoint!r:.80}. Supported values are: {', '.join(first)}, and {last}.",
            param="endpoint",
            code="invalid_value",
        )
    return endpoint


def _input_file_id(file_id: object) -> str:
    if file_id is None:
        raise missing("input_file_id")
    if not isinstance(file_id, str):
        raise wrong_type("input_file_id", "a string", file_id)
    if not file_id:
        raise input_error(
            "Invalid 'input_file_id': empty string.", param="input_file_id", code="invalid_value"
        )
    return file_id


def validate_metadata(metadata: object) -> dict[str, str] | None:
    """OpenAI's metadata: at most 16 pairs, keys of <= 64 characters, string values <= 512."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise wrong_type("metadata", "an object", metadata)
    if len(metadata) > MAX_METADATA_PAIRS:
        raise input_error(
            f"Invalid 'metadata': too many properties. Expected an object with at most"
            f" {MAX_METADATA_PAIRS} properties, but got an object with {len(metadata)}"
            " properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or len(key) > MAX_METADATA_KEY:
            raise input_error(
                f"Invalid 'metadata': key too long. Expected keys of at most {MAX_METADATA_KEY}"
                f" characters, but got {str(key)[:80]!r} instead.",
                param="metadata",
                code="invalid_value",
            )
        param = f"metadata.{key}"
        if not isinstance(value, str):
            raise wrong_type(param, "a string", value)
        if len(value) > MAX_METADATA_VALUE:
            raise input_error(
                f"Invalid '{param}': string too long. Expected a string with maximum length"
                f" {MAX_METADATA_VALUE}, but got a string with length {len(value)} instead.",
                param=param,
                code="string_above_max_length",
            )
    return metadata


def validate_output_expires_after(value: object) -> int | None:
    """Seconds the output and error files live: `{anchor: created_at, seconds: 3600-2592000}`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise wrong_type("output_expires_after", "an object", value)
    anchor, seconds = value.get("anchor"), value.get("seconds")
    if anchor is None:
        raise missing("output_expires_after.anchor")
    if anchor != "created_at":
        raise input_error(
            f"Invalid value: {anchor!r:.80}. Supported values are: 'created_at'.",
            param="output_expires_after.anchor",
            code="invalid_value",
        )
    param = "output_expires_after.seconds"
    if seconds is None:
        raise missing(param)
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise wrong_type(param, "an integer", seconds)
    if not MIN_OUTPUT_EXPIRES_S <= seconds <= MAX_OUTPUT_EXPIRES_S:
        below = seconds < MIN_OUTPUT_EXPIRES_S
        raise input_error(
            f"Invalid '{param}': integer {'below minimum' if below else 'above maximum'} value."
            f" Expected a value {'>=' if below else '<='}"
            f" {MIN_OUTPUT_EXPIRES_S if below else MAX_OUTPUT_EXPIRES_S}, but got {seconds}"
            " instead.",
            param=param,
            code="integer_below_min_value" if below else "integer_above_max_value",
        )
    return seconds


def _queue(header: str | None, metadata: dict[str, str] | None, default: str) -> str:
    name, param = (header, "queue") if header is not None else (None, "")
    if name is None and metadata is not None and "queue" in metadata:
        name, param = metadata["queue"], "metadata.queue"
    if name is None:
        return default
    try:
        return validate_queue_name(name, param)
    except InvalidInput as exc:
        raise input_error(exc.message, param=param, code="invalid_value") from None


def _level(metadata: dict[str, str] | None) -> int:
    text = None if metadata is None else metadata.get("level")
    if text is None:
        return DEFAULT_BATCH_LEVEL
    # isdigit alone admits '²' and other digits int() refuses or reads differently
    if not (text.isascii() and text.isdigit() and len(text) <= 2) or int(text) > MAX_LEVEL_LIMIT:
        raise input_error(
            f"Invalid 'metadata.level': expected a level from 0 to {MAX_LEVEL_LIMIT} written"
            f" in digits, as in '1', but got {text!r:.80} instead.",
            param="metadata.level",
            code="invalid_value",
        )
    return int(text)


def validate_create(
    *,
    input_file_id: object,
    endpoint: object,
    completion_window: object,
    metadata: object = None,
    output_expires_after: object = None,
    queue: str | None = None,
    default_queue: str = DEFAULT_BATCH_QUEUE,
) -> BatchSpec:
    """Check a `POST /v1/batches` body (absent fields as None); raise InvalidInput.

    `queue` is the `X-Conveyor-Queue` header, which wins over `metadata.queue`.
    """
    file_id = _input_file_id(input_file_id)
    checked_endpoint = _endpoint(endpoint)
    window_s = parse_window(completion_window)
    checked_metadata = validate_metadata(metadata)
    return BatchSpec(
        input_file_id=file_id,
        endpoint=checked_endpoint,
        completion_window=str(completion_window),  # parse_window took only a string
        window_s=window_s,
        metadata=checked_metadata,
        output_expires_after_s=validate_output_expires_after(output_expires_after),
        queue=_queue(queue, checked_metadata, default_queue),
        level=_level(checked_metadata),
    )
