"""Tasks: what a producer asks for (TaskSpec), what is stored (NewTask) and read (Task)."""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import msgspec

from conveyor.domain.ids import new_task_id
from conveyor.domain.queues import (
    MAX_LEASE_S,
    QueueConfig,
    validate_level,
    validate_max_attempts,
    validate_queue_name,
    validate_seconds,
)
from conveyor.domain.retry import Backoff
from conveyor.domain.states import TaskStatus
from conveyor.errors import InvalidInput

MAX_TASK_TIMEOUT_S = 7 * 86_400.0
MAX_DELAY_S = 366 * 86_400.0
MAX_DATA_BYTES = 16 * 1024 * 1024
MAX_BULK_PUT = 10_000
MAX_TAKE_SIZE = 1_000
MAX_TEXT = {"endpoint": 512, "custom_id": 512, "batch_id": 128, "group": 256, "worker_id": 256}
MAX_CALLBACK_URL = 2048
TASK_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.:")


class ResponseMode(StrEnum):
    BLOCKING = "blocking"
    STREAMING = "streaming"
    CALLBACK = "callback"


class TaskResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a worker reports for a finished task, as an HTTP-like status and body."""

    status_code: int = 200
    body: Any = None


class TaskError(msgspec.Struct, frozen=True, kw_only=True):
    """Why an attempt failed."""

    message: str
    code: str | None = None


class Task(msgspec.Struct, frozen=True):
    """A task as stored, with its lease while it runs.

    Not keyword-only: the engines' read paths build it positionally, which is several
    times cheaper for 27 fields (tests/unit/test_field_order.py pins the order).
    """

    task_id: str
    queue: str
    level: int
    endpoint: str
    data: Any
    status: TaskStatus
    response_mode: ResponseMode
    callback_url: str | None
    timeout_s: float | None
    custom_id: str | None
    batch_id: str | None
    group: str
    metadata: dict[str, Any] | None
    attempts: int
    max_attempts: int
    backoff: Backoff
    run_at: float
    created_at: float
    started_at: float | None
    completed_at: float | None
    expires_at: float | None
    result: TaskResult | None
    error: TaskError | None
    lease_id: str | None
    worker_id: str | None
    lease_expires_at: float | None
    cancel_requested: bool


class TaskSpec(msgspec.Struct, kw_only=True):
    """A producer's request to put one task; `build_new_task` checks every field."""

    queue: str
    level: int = 0
    endpoint: str = ""
    data: Any = None
    response_mode: ResponseMode = ResponseMode.CALLBACK
    callback_url: str | None = None
    timeout_s: float | None = None
    delay_s: float | None = None
    run_at: float | None = None
    max_attempts: int | None = None
    backoff: Backoff | None = None
    task_id: str | None = None
    custom_id: str | None = None
    batch_id: str | None = None
    group: str | None = None
    metadata: dict[str, Any] | None = None


class NewTask(msgspec.Struct, frozen=True):
    """A validated task with every default resolved, ready for an engine to store as is.

    Built positionally by `build_new_task`, for speed (field order pinned by a test).
    """

    task_id: str
    queue: str
    level: int
    endpoint: str
    data_json: bytes
    status: TaskStatus
    response_mode: ResponseMode
    callback_url: str | None
    timeout_s: float | None
    custom_id: str | None
    batch_id: str | None
    group: str
    metadata_json: bytes | None
    max_attempts: int
    backoff: Backoff
    run_at: float
    created_at: float
    expires_at: float | None
    fingerprint: str


def task_from_new(new: NewTask, data: Any, metadata: dict[str, Any] | None) -> Task:
    """The Task a NewTask becomes once stored, before anyone has touched it."""
    return Task(
        task_id=new.task_id,
        queue=new.queue,
        level=new.level,
        endpoint=new.endpoint,
        data=data,
        status=new.status,
        response_mode=new.response_mode,
        callback_url=new.callback_url,
        timeout_s=new.timeout_s,
        custom_id=new.custom_id,
        batch_id=new.batch_id,
        group=new.group,
        metadata=metadata,
        attempts=0,
        max_attempts=new.max_attempts,
        backoff=new.backoff,
        run_at=new.run_at,
        created_at=new.created_at,
        started_at=None,
        completed_at=None,
        expires_at=new.expires_at,
        result=None,
        error=None,
        lease_id=None,
        worker_id=None,
        lease_expires_at=None,
        cancel_requested=False,
    )


_msgspec_json = msgspec.json.Encoder().encode
_msgspec_decode = msgspec.json.Decoder().decode
_strict_json = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def _fast_json(value: object) -> bytes | None:
    """msgspec's encoding if it reads back as the same value, else None.

    msgspec is ~15x faster than the stdlib, but it quietly turns NaN into null and
    bytes, sets or datetimes into strings and lists; such values do not read back equal,
    and go to the strict encoder instead, which refuses them.
    """
    try:
        encoded = _msgspec_json(value)
        same = _msgspec_decode(encoded) == value
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.MsgspecError):
        return None
    return encoded if same else None


def _slow_json(value: object, param: str) -> bytes:
    try:
        return _strict_json.encode(value).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"{param} must be JSON-serialisable: {exc}", param=param) from None


def encode_json(value: object, param: str) -> bytes:
    """Strict JSON: NaN, infinities, bytes, sets and other non-JSON values are refused.

    A `msgspec.Raw` (JSON a decoder has already checked, e.g. from an HTTP body) is taken
    as it is, so the hot path does not encode twice.
    """
    if isinstance(value, msgspec.Raw):
        encoded = bytes(value)
    else:
        encoded = _fast_json(value) or _slow_json(value, param)
    if len(encoded) > MAX_DATA_BYTES:
        raise InvalidInput(
            f"{param} is {len(encoded)} bytes of JSON; the limit is {MAX_DATA_BYTES}", param=param
        )
    return encoded


def _text(value: object, param: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT[param]:
        raise InvalidInput(
            f"{param} must be a string of at most {MAX_TEXT[param]} characters, got {value!r:.80}",
            param=param,
        )
    return value


def validate_task_id(task_id: object) -> str:
    """Return a client-supplied task id if it is 1-128 safe characters, else raise."""
    if (
        not isinstance(task_id, str)
        or not 1 <= len(task_id) <= 128
        or not TASK_ID_CHARS.issuperset(task_id)
    ):
        raise InvalidInput(
            "task_id must be 1-128 characters of letters, digits, '_', '-', '.' or ':',"
            f" got {task_id!r:.80}",
            param="task_id",
        )
    return task_id


def _callback_url(spec: TaskSpec) -> str | None:
    url = spec.callback_url
    if url is None:  # without a URL the result is read, not pushed
        return None
    if not isinstance(url, str) or len(url) > MAX_CALLBACK_URL or not _is_http_url(url):
        raise InvalidInput(
            f"callback_url must be an http:// or https:// URL of at most {MAX_CALLBACK_URL}"
            f" characters, got {url!r:.80}",
            param="callback_url",
        )
    return url


def _is_http_url(url: str) -> bool:
    # a URL without a host, or with spaces or control characters, could only fail later,
    # at delivery, when nobody is left to tell
    if not url.isprintable() or any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
        return parts.scheme in ("http", "https") and bool(parts.hostname) and port_ok
    except ValueError:  # an unclosed IPv6 bracket, a port that is not 0-65535
        return False


def _run_at(spec: TaskSpec, now: float) -> float:
    if spec.delay_s is not None and spec.run_at is not None:
        raise InvalidInput("give delay_s or run_at, not both", param="delay_s")
    if spec.delay_s is not None:
        delay = validate_seconds(
            spec.delay_s, param="delay_s", low=0, high=MAX_DELAY_S, low_inclusive=True
        )
        return now + delay
    if spec.run_at is not None:
        if isinstance(spec.run_at, bool) or not isinstance(spec.run_at, int | float):
            raise InvalidInput(f"run_at must be Unix seconds, got {spec.run_at!r}", param="run_at")
        if not math.isfinite(spec.run_at) or spec.run_at > now + MAX_DELAY_S:
            raise InvalidInput(
                f"run_at must be within {MAX_DELAY_S / 86_400:g} days from now, got {spec.run_at}",
                param="run_at",
            )
        return max(float(spec.run_at), now)
    return now


def fingerprint(fields: dict[str, Any]) -> str:
    """A digest of a task's content, to tell an idempotent retry from a conflicting put."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def build_new_task(
    spec: TaskSpec,
    queue: QueueConfig,
    now: float,
    id_factory: Callable[[], str] = new_task_id,
) -> NewTask:
    """Check every field of `spec` and resolve its defaults from `queue`; raise InvalidInput."""
    validate_queue_name(spec.queue)
    level = validate_level(spec.level, queue.max_level)
    endpoint = _text(spec.endpoint, "endpoint") or ""
    try:
        response_mode = ResponseMode(spec.response_mode)
    except ValueError:
        raise InvalidInput(
            f"response_mode must be one of {', '.join(ResponseMode)}, got {spec.response_mode!r}",
            param="response_mode",
        ) from None
    timeout_s = (
        None
        if spec.timeout_s is None
        else validate_seconds(spec.timeout_s, param="timeout_s", low=0, high=MAX_TASK_TIMEOUT_S)
    )
    max_attempts = (
        queue.max_attempts
        if spec.max_attempts is None
        else validate_max_attempts(spec.max_attempts)
    )
    backoff = queue.backoff if spec.backoff is None else spec.backoff.validated()
    if spec.metadata is not None and not isinstance(spec.metadata, dict):
        raise InvalidInput("metadata must be a JSON object", param="metadata")
    data_json = encode_json(spec.data, "data")
    metadata_json = None if spec.metadata is None else encode_json(spec.metadata, "metadata")
    run_at = _run_at(spec, now)
    callback_url = _callback_url(spec)
    custom_id = _text(spec.custom_id, "custom_id")
    batch_id = _text(spec.batch_id, "batch_id")
    group = _text(spec.group, "group") or ""
    task_id = id_factory() if spec.task_id is None else validate_task_id(spec.task_id)
    # Only a client-supplied id can be put again; a minted one is new by construction, so
    # the digest that tells an idempotent retry from a conflict is needed for the former only.
    content = spec.task_id and {
        "queue": spec.queue,
        "level": level,
        "endpoint": endpoint,
        "data": data_json.decode(),
        "response_mode": str(response_mode),
        "callback_url": callback_url,
        "timeout_s": timeout_s,
        "custom_id": custom_id,
        "batch_id": batch_id,
        "group": group,
        "metadata": None if metadata_json is None else metadata_json.decode(),
        "max_attempts": max_attempts,
        "backoff": msgspec.to_builtins(backoff),
        # as asked, not as resolved: a retried put with the same delay_s is the same put
        "delay_s": None if spec.delay_s is None else float(spec.delay_s),
        "run_at": None if spec.run_at is None else float(spec.run_at),
    }
    return NewTask(
        task_id,
        spec.queue,
        level,
        endpoint,
        data_json,
        TaskStatus.SCHEDULED if run_at > now else TaskStatus.QUEUED,
        response_mode,
        callback_url,
        timeout_s,
        custom_id,
        batch_id,
        group,
        metadata_json,
        max_attempts,
        backoff,
        run_at,
        now,
        None if timeout_s is None else now + timeout_s,
        fingerprint(content) if content else "",
    )


def validate_lease_s(value: object, param: str = "process_timeout") -> float:
    """Return a lease duration in seconds, in (0, MAX_LEASE_S], else raise InvalidInput."""
    return validate_seconds(value, param=param, low=0, high=MAX_LEASE_S)


def validate_result(result: object) -> TaskResult:
    """Return `result` if it is a TaskResult with a plausible status code, else raise."""
    if not isinstance(result, TaskResult):
        raise InvalidInput("result must be {status_code, body}", param="result")
    code = result.status_code
    if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
        raise InvalidInput(
            f"result.status_code must be an HTTP status from 100 to 599, got {code!r}",
            param="result.status_code",
        )
    encode_json(result.body, "result.body")
    return result


def after_failure(
    *,
    attempts: int,
    max_attempts: int,
    backoff: Backoff,
    retry: bool,
    retry_after_s: float | None,
    now: float,
    rng: random.Random | None = None,
) -> tuple[TaskStatus, float]:
    """Where a failed attempt sends its task: dead letter, or back with a delay.

    Returns the next status (failed, queued or scheduled) and the time it may run again.
    """
    if not retry or attempts >= max_attempts:
        return TaskStatus.FAILED, now
    delay = backoff.delay_s(attempts, rng) if retry_after_s is None else retry_after_s
    if delay <= 0:
        return TaskStatus.QUEUED, now
    return TaskStatus.SCHEDULED, now + delay


def after_lease_expiry(*, attempts: int, max_attempts: int) -> TaskStatus:
    """A lease that expires sends the task back at once, or to the dead letter when spent."""
    return TaskStatus.FAILED if attempts >= max_attempts else TaskStatus.QUEUED


LEASE_EXPIRED_ERROR = TaskError(
    message="lease expired before the task finished", code="lease_expired"
)
DEADLINE_ERROR = TaskError(message="task deadline passed before it finished", code="expired")
