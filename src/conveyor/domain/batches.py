"""OpenAI-compatible batches: the Batch object, its statuses and the steps between them.

    validating ─┬─> in_progress ─┬─> finalizing ──> completed
                ├─> failed        ├─> cancelling ──> cancelled
                ├─> cancelling    └─> expired
                └─> expired

Every step is a pure function returning a new Batch; it stamps the timestamp of the status
it enters and keeps the earlier ones. `finalizing` precedes `completed` only, as at OpenAI.
A cancelled or expired batch keeps the results already produced: the service writes its
output and error files while the batch is still `cancelling` (or `in_progress`, for
expiry) and hands their ids to `finish_cancel` / `expire`, which enter the end state and
record the files in one step. A server that stops half-way through writing them finds the
batch still `cancelling` / `in_progress` on restart and writes them again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any

import msgspec

from conveyor.domain.batch_specs import BatchSpec
from conveyor.domain.ids import new_task_id
from conveyor.errors import InvalidInput, InvalidTransition


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the end states: nothing about the batch changes any more."""
        return self in FINISHED


FINISHED = frozenset(
    {BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)

TRANSITIONS: dict[BatchStatus, frozenset[BatchStatus]] = {
    # a batch may be cancelled, or outlive its window, while its file is still being read
    BatchStatus.VALIDATING: frozenset(
        {
            BatchStatus.IN_PROGRESS,
            BatchStatus.FAILED,
            BatchStatus.CANCELLING,
            BatchStatus.EXPIRED,
        }
    ),
    BatchStatus.IN_PROGRESS: frozenset(
        {BatchStatus.FINALIZING, BatchStatus.CANCELLING, BatchStatus.EXPIRED}
    ),
    # every request has ended: only the files are left to write, nothing left to cancel
    BatchStatus.FINALIZING: frozenset({BatchStatus.COMPLETED}),
    BatchStatus.CANCELLING: frozenset({BatchStatus.CANCELLED}),
    BatchStatus.FAILED: frozenset(),
    BatchStatus.COMPLETED: frozenset(),
    BatchStatus.EXPIRED: frozenset(),
    BatchStatus.CANCELLED: frozenset(),
}

# the timestamp each status stamps on entry (validating's is created_at)
STAMPS: dict[BatchStatus, str] = {
    BatchStatus.IN_PROGRESS: "in_progress_at",
    BatchStatus.FAILED: "failed_at",
    BatchStatus.FINALIZING: "finalizing_at",
    BatchStatus.COMPLETED: "completed_at",
    BatchStatus.EXPIRED: "expired_at",
    BatchStatus.CANCELLING: "cancelling_at",
    BatchStatus.CANCELLED: "cancelled_at",
}


class RequestCounts(msgspec.Struct, frozen=True, kw_only=True):
    """How many of the batch's requests there are, and how many have ended either way."""

    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchError(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of `errors.data`: what is wrong, and on which line of the input file."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(msgspec.Struct, frozen=True, kw_only=True):
    """OpenAI's `errors` list object."""

    object: str = "list"
    data: list[BatchError] = msgspec.field(default_factory=list)


class InputTokensDetails(msgspec.Struct, frozen=True, kw_only=True):
    """Of the input tokens, how many were read from the prompt cache."""

    cached_tokens: int = 0


class OutputTokensDetails(msgspec.Struct, frozen=True, kw_only=True):
    """Of the output tokens, how many went to reasoning."""

    reasoning_tokens: int = 0


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Tokens summed over the batch's responses, in OpenAI's batch `usage` shape."""

    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = InputTokensDetails()
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = OutputTokensDetails()
    total_tokens: int = 0


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """A batch: OpenAI's fields, in OpenAI's order, then Conveyor's own bookkeeping.

    Timestamps are Unix seconds. `to_wire` gives what clients see; the bookkeeping after
    `usage` stays in the store: the project that owns the batch, the queue and level its
    tasks go to (the queue name as the project knows it), how many tasks have been created
    so far (creation resumes from there after a crash), and how long the output files live.
    """

    id: str
    object: str = "batch"
    endpoint: str
    model: str | None = None
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus = BatchStatus.VALIDATING
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = RequestCounts()
    metadata: dict[str, str] | None = None
    usage: Usage | None = None
    # Conveyor's bookkeeping, never on the wire
    project: str = ""
    queue: str
    level: int
    tasks_created: int = 0
    output_expires_after_s: int | None = None


WIRE_FIELDS: tuple[str, ...] = Batch.__struct_fields__[: Batch.__struct_fields__.index("usage") + 1]


def new_batch_id() -> str:
    """`batch_` and a time-ordered id, so batches list newest first by id alone."""
    return "batch_" + new_task_id()


def new_batch(
    spec: BatchSpec,
    *,
    project: str,
    now: float,
    id_factory: Callable[[], str] = new_batch_id,
) -> Batch:
    """A batch as `POST /v1/batches` creates it: validating, expiring a window from now."""
    created_at = int(now)
    return Batch(
        id=id_factory(),
        endpoint=spec.endpoint,
        input_file_id=spec.input_file_id,
        completion_window=spec.completion_window,
        created_at=created_at,
        expires_at=created_at + spec.window_s,
        metadata=spec.metadata,
        project=project,
        queue=spec.queue,
        level=spec.level,
        output_expires_after_s=spec.output_expires_after_s,
    )


def to_wire(batch: Batch) -> dict[str, Any]:
    """The batch as OpenAI's JSON object: exactly its fields, unset ones as None."""
    builtins = msgspec.to_builtins(batch)
    return {name: builtins[name] for name in WIRE_FIELDS}


def _enter(batch: Batch, target: BatchStatus, now: float, **changes: Any) -> Batch:
    if target not in TRANSITIONS[batch.status]:
        raise InvalidTransition(f"batch {batch.id} is {batch.status}; it cannot become {target}")
    changes[STAMPS[target]] = int(now)
    return msgspec.structs.replace(batch, status=target, **changes)


def start(batch: Batch, total: int, model: str | None, now: float) -> Batch:
    """validating -> in_progress: the file is valid and holds `total` requests for `model`."""
    return _enter(
        batch,
        BatchStatus.IN_PROGRESS,
        now,
        model=model,
        request_counts=RequestCounts(total=total),
    )


def fail_validation(batch: Batch, errors: Iterable[BatchError], now: float) -> Batch:
    """validating -> failed, listing what is wrong with the input file."""
    return _enter(batch, BatchStatus.FAILED, now, errors=BatchErrors(data=list(errors)))


def begin_finalizing(batch: Batch, now: float) -> Batch:
    """in_progress -> finalizing: every request has ended; the files are being written."""
    return _enter(batch, BatchStatus.FINALIZING, now)


def complete(
    batch: Batch,
    output_file_id: str | None,
    error_file_id: str | None,
    usage: Usage | None,
    now: float,
) -> Batch:
    """finalizing -> completed, with the files (None for a side without lines) and usage."""
    return _enter(
        batch,
        BatchStatus.COMPLETED,
        now,
        output_file_id=output_file_id,
        error_file_id=error_file_id,
        usage=usage,
    )


def request_cancel(batch: Batch, now: float) -> Batch:
    """validating/in_progress -> cancelling; a cancelling or cancelled batch is returned as is.

    Any other status raises InvalidTransition (a Conflict, 409) with OpenAI's message.
    """
    if batch.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
        return batch
    if BatchStatus.CANCELLING not in TRANSITIONS[batch.status]:
        raise InvalidTransition(f"Cannot cancel a batch with status '{batch.status}'.")
    return _enter(batch, BatchStatus.CANCELLING, now)


def finish_cancel(
    batch: Batch,
    output_file_id: str | None,
    error_file_id: str | None,
    usage: Usage | None,
    now: float,
) -> Batch:
    """cancelling -> cancelled, keeping the results produced before: files and usage."""
    return _enter(
        batch,
        BatchStatus.CANCELLED,
        now,
        output_file_id=output_file_id,
        error_file_id=error_file_id,
        usage=usage,
    )


def expire(
    batch: Batch,
    output_file_id: str | None,
    error_file_id: str | None,
    usage: Usage | None,
    now: float,
) -> Batch:
    """validating/in_progress -> expired, keeping the results produced before the deadline."""
    return _enter(
        batch,
        BatchStatus.EXPIRED,
        now,
        output_file_id=output_file_id,
        error_file_id=error_file_id,
        usage=usage,
    )


def record_progress(
    batch: Batch,
    *,
    tasks_created: int | None = None,
    completed: int | None = None,
    failed: int | None = None,
) -> Batch:
    """The batch with its task-creation mark or request counts moved on; total is kept."""
    counts = batch.request_counts
    new_counts = RequestCounts(
        total=counts.total,
        completed=counts.completed if completed is None else completed,
        failed=counts.failed if failed is None else failed,
    )
    created = batch.tasks_created if tasks_created is None else tasks_created
    if min(created, new_counts.completed, new_counts.failed) < 0 or (
        new_counts.completed + new_counts.failed > new_counts.total
    ):
        raise InvalidInput(
            f"batch {batch.id}: counts must be >= 0 and completed + failed <= total,"
            f" got created={created} {msgspec.to_builtins(new_counts)}",
            param="request_counts",
        )
    return msgspec.structs.replace(batch, tasks_created=created, request_counts=new_counts)


# -- usage -----------------------------------------------------------------------------


class _UsageOnly(msgspec.Struct):
    usage: Any = None


_usage_decoder = msgspec.json.Decoder(_UsageOnly)


def _count(container: object, key: str) -> int:
    value = container.get(key) if isinstance(container, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def add_usage(total: Usage | None, response_body: Any) -> Usage | None:
    """`total` plus the usage a response body reports; `total` as is if it reports none.

    Reads every endpoint's shape: Responses (`input_tokens`, `output_tokens`,
    `*_tokens_details`), Chat Completions and Completions (`prompt_tokens`,
    `completion_tokens`, `prompt_tokens_details`, `completion_tokens_details`) and
    Embeddings (`prompt_tokens`, `total_tokens`). The body may be decoded or raw JSON bytes.
    """
    if isinstance(response_body, bytes | bytearray | memoryview | msgspec.Raw):
        try:
            usage = _usage_decoder.decode(response_body).usage
        except msgspec.DecodeError:
            return total
    else:
        usage = response_body.get("usage") if isinstance(response_body, dict) else None
    if not isinstance(usage, dict):
        return total
    if "input_tokens" in usage or "output_tokens" in usage:
        read = ("input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details")
    elif "prompt_tokens" in usage or "completion_tokens" in usage:
        read = (
            "prompt_tokens",
            "completion_tokens",
            "prompt_tokens_details",
            "completion_tokens_details",
        )
    else:
        return total
    input_tokens, output_tokens = _count(usage, read[0]), _count(usage, read[1])
    cached = _count(usage.get(read[2]), "cached_tokens")
    reasoning = _count(usage.get(read[3]), "reasoning_tokens")
    tokens = _count(usage, "total_tokens") or input_tokens + output_tokens
    base = total or Usage()
    return Usage(
        input_tokens=base.input_tokens + input_tokens,
        input_tokens_details=InputTokensDetails(
            cached_tokens=base.input_tokens_details.cached_tokens + cached
        ),
        output_tokens=base.output_tokens + output_tokens,
        output_tokens_details=OutputTokensDetails(
            reasoning_tokens=base.output_tokens_details.reasoning_tokens + reasoning
        ),
        total_tokens=base.total_tokens + tokens,
    )
