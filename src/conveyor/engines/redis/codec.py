"""Tasks in the Redis engine: a task's hash read back as a Task, a NewTask as script arguments,
and the state a lifecycle decision is made on.

Hash fields: id, s (status), lv, seq, x (the fields no script reads and nothing changes
after put, in one JSON array: endpoint, response mode, timeout_s, custom_id, max_attempts,
created_at; `fixed`), d (data JSON), cb, bid, g, md, at, bo (backoff JSON), ra, sa, fa
(completed_at), ea (expires_at), rs (result JSON), rc (result code), er (error JSON), li
(lease id), wi, le (lease expiry), ls (lease_s), cr (cancel requested), fp (fingerprint),
cba (callback attempts). A field is absent for None, and at, cr and cba for 0, fp for ''
(fewer fields: each one costs Redis on every HSET and HMGET of the hash). Times are stored
as Python's repr of the float, so they read back exactly (JSON's floats too: msgspec
writes the shortest text that reads back as the same double).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec

from conveyor.domain.retry import Backoff
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import NewTask, ResponseMode, Task, TaskError, TaskResult

Arg = str | bytes | int | float

_any = msgspec.json.Decoder().decode
_result = msgspec.json.Decoder(TaskResult).decode
_error = msgspec.json.Decoder(TaskError).decode
_backoff = msgspec.json.Decoder(Backoff).decode
_fixed = msgspec.json.Decoder(
    tuple[str, str, float | None, str | None, int, float]  # x: ep rm to cid ma ca
).decode
encode = msgspec.json.Encoder().encode
# put's rows: text only (Lua's cmsgpack reads no bin, and a Lua number would be stored
# as Redis formats it, not as Python does)
_pack = msgspec.msgpack.Encoder().encode

STATUSES = {status.value.encode(): status for status in TaskStatus}
MODES = {mode.value.encode(): mode for mode in ResponseMode}

_backoffs: dict[bytes, Backoff] = {}
_encoded_backoffs: dict[Backoff, str] = {}


def decode_backoff(raw: bytes) -> Backoff:
    """A stored backoff; most tasks share their queue's, so decoded ones are kept."""
    backoff = _backoffs.get(raw)
    if backoff is None:
        if len(_backoffs) > 1_000:
            _backoffs.clear()
        backoff = _backoffs[raw] = _backoff(raw)
    return backoff


def encode_backoff(backoff: Backoff) -> str:
    """A backoff as stored (JSON); most tasks share their queue's, so encoded ones are kept."""
    raw = _encoded_backoffs.get(backoff)
    if raw is None:
        if len(_encoded_backoffs) > 1_000:
            _encoded_backoffs.clear()
        raw = _encoded_backoffs[backoff] = encode(backoff).decode()
    return raw


def fields(flat: Sequence[bytes] | dict[bytes, bytes]) -> dict[bytes, bytes]:
    """An HGETALL reply as a dict (redis-py makes one; a script's reply is flat)."""
    if isinstance(flat, dict):
        return flat
    it = iter(flat)
    return dict(zip(it, it, strict=True))


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _float(value: bytes | None) -> float | None:
    return None if value is None else float(value)


def to_task(queue: str, flat: Sequence[bytes] | dict[bytes, bytes]) -> Task:
    """The Task a hash (as HGETALL answers it) holds."""
    f = fields(flat)
    get = f.get
    metadata = get(b"md")
    result = get(b"rs")
    error = get(b"er")
    endpoint, mode, timeout_s, custom_id, max_attempts, created_at = _fixed(f[b"x"])
    return Task(
        f[b"id"].decode(),
        queue,
        int(f[b"lv"]),
        endpoint,
        _any(f[b"d"]),
        STATUSES[f[b"s"]],
        MODES[mode.encode()],
        _text(get(b"cb")),
        timeout_s,
        custom_id,
        _text(get(b"bid")),
        f[b"g"].decode(),
        None if metadata is None else _any(metadata),
        int(get(b"at") or 0),
        max_attempts,
        decode_backoff(f[b"bo"]),
        float(f[b"ra"]),
        created_at,
        _float(get(b"sa")),
        _float(get(b"fa")),
        _float(get(b"ea")),
        None if result is None else _result(result),
        None if error is None else _error(error),
        _text(get(b"li")),
        _text(get(b"wi")),
        _float(get(b"le")),
        get(b"cr") == b"1",
    )


# A task as the scripts answer it (scripts.py's ROW): HMGET of these fields, which are the
# Task's in order (the queue is the caller's), None for an absent one. Positional, so a
# reply is read without building a dict first.
ROW = (
    "id", "s", "lv", "x", "d", "cb", "bid", "g", "md", "at", "bo", "ra", "sa", "fa", "ea",
    "rs", "er", "li", "wi", "le", "cr",
)  # fmt: skip


def row_task(queue: str, row: Sequence[Any]) -> Task:
    """The Task a reply row (ROW) holds."""
    (
        task_id, status, level, fixed, data, callback_url, batch_id, group, metadata,
        attempts, backoff, run_at, started_at, completed_at, expires_at, result, error,
        lease_id, worker_id, lease_expires_at, cancel,
    ) = row  # fmt: skip
    endpoint, mode, timeout_s, custom_id, max_attempts, created_at = _fixed(fixed)
    return Task(
        task_id.decode(),
        queue,
        int(level),
        endpoint,
        _any(data),
        STATUSES[status],
        MODES[mode.encode()],
        None if callback_url is None else callback_url.decode(),
        timeout_s,
        custom_id,
        None if batch_id is None else batch_id.decode(),
        group.decode(),
        None if metadata is None else _any(metadata),
        int(attempts or 0),
        max_attempts,
        decode_backoff(backoff),
        float(run_at),
        created_at,
        None if started_at is None else float(started_at),
        None if completed_at is None else float(completed_at),
        None if expires_at is None else float(expires_at),
        None if result is None else _result(result),
        None if error is None else _error(error),
        None if lease_id is None else lease_id.decode(),
        None if worker_id is None else worker_id.decode(),
        None if lease_expires_at is None else float(lease_expires_at),
        cancel == b"1",
    )


def _optional_text(value: str | None) -> str:
    # '' stands for None, so a present value (maybe empty) gets a one-letter prefix
    return "" if value is None else "v" + value


def _time(value: float | None) -> str:
    return "" if value is None else repr(value)


def fixed(t: NewTask) -> str:
    """The `x` field: what no script reads and nothing changes after put, as JSON."""
    return encode(
        (t.endpoint, t.response_mode.value, t.timeout_s, t.custom_id, t.max_attempts, t.created_at)
    ).decode()


def put_args(tasks: Sequence[NewTask]) -> list[Arg]:
    """The PUT script's arguments for `tasks`, after the prefix: their small fields packed
    in one MessagePack array (one argument, not nine per task), then each one's data and
    metadata JSON."""
    rows = []
    args: list[Arg] = [b""]
    for t in tasks:
        rows.append(
            (
                t.task_id,
                str(t.level),
                t.status.value,
                fixed(t),
                _optional_text(t.callback_url),
                _optional_text(t.batch_id),
                t.group,
                encode_backoff(t.backoff),
                repr(t.run_at),
                _time(t.expires_at),
                t.fingerprint,
            )
        )
        args += (t.data_json, t.metadata_json or b"")
    args[0] = _pack(rows)
    return args


class State:
    """A task's state as read (the DECIDE fields), as `lifecycle` sees it.

    A decision made on it is written with all of these fields as the expectation, so the
    write is refused if any of them moved in between.
    """

    __slots__ = (
        "_backoff",
        "_expiry",
        "attempts",
        "cancel_requested",
        "lease_expires_at",
        "lease_id",
        "lease_s",
        "max_attempts",
        "status",
        "task_id",
    )

    def __init__(self, task_id: str, values: Sequence[bytes | None]) -> None:
        status, lease_id, expiry, cancel, attempts, fixed, backoff, lease_s = values
        assert status is not None
        assert backoff is not None
        assert fixed is not None
        self.task_id = task_id
        self.status = STATUSES[status]
        self.lease_id = _text(lease_id)
        self._expiry = expiry or b""
        self.lease_expires_at = _float(expiry)
        self.cancel_requested = cancel == b"1"
        self.attempts = int(attempts or 0)
        self.max_attempts = _fixed(fixed)[4]
        self._backoff = backoff
        self.lease_s = _float(lease_s)

    @property
    def backoff(self) -> Backoff:
        return decode_backoff(self._backoff)

    def expect(self) -> list[Arg]:
        """Status, lease id, cancel flag, attempts, lease expiry; no time check."""
        return [
            self.status.value,
            self.lease_id or "",
            "1" if self.cancel_requested else "0",
            self.attempts,
            self._expiry,
            "",
        ]


class Unknown(Exception):
    """A decision read a field that a presumed state does not know: read the task first."""


class Presumed:
    """The state a request presumes (a worker's complete presumes its lease is current).

    A decision made on it is written with the presumption as the expectation, and the script
    refuses if the task is otherwise; then the engine reads the task and decides again. A
    decision that reads a field the presumption does not cover raises Unknown.
    """

    __slots__ = ("_attempt", "_cancel", "_lease", "_unexpired_at", "status", "task_id")

    def __init__(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        lease_id: str | None = None,
        cancel_requested: bool | None = None,
        unexpired_at: float | None = None,
        attempt: Attempt | None = None,
    ) -> None:
        self.task_id = task_id
        self.status = status
        self._lease = lease_id
        self._cancel = cancel_requested
        self._unexpired_at = unexpired_at
        self._attempt = attempt

    @property
    def lease_id(self) -> str | None:
        if self._lease is None:
            raise Unknown("lease_id")
        return self._lease

    @property
    def lease_expires_at(self) -> float | None:
        if self._unexpired_at is None:
            raise Unknown("lease_expires_at")
        return None  # presumed current at `unexpired_at`: the script checks it

    @property
    def cancel_requested(self) -> bool:
        if self._cancel is None:
            raise Unknown("cancel_requested")
        return self._cancel

    @property
    def attempts(self) -> int:
        if self._attempt is None:
            raise Unknown("attempts")
        return self._attempt.attempts

    @property
    def max_attempts(self) -> int:
        if self._attempt is None:
            raise Unknown("max_attempts")
        return self._attempt.max_attempts

    @property
    def backoff(self) -> Backoff:
        if self._attempt is None:
            raise Unknown("backoff")
        return self._attempt.backoff

    def expect(self) -> list[Arg]:
        return [
            self.status.value,
            "*" if self._lease is None else self._lease,
            "*" if self._cancel is None else ("1" if self._cancel else "0"),
            "*" if self._attempt is None else str(self._attempt.attempts),
            "*",
            "" if self._unexpired_at is None else self._unexpired_at,
        ]


class Attempt(NamedTuple):
    """What a fail decides on besides the lease, as a take handed it out: attempts,
    max_attempts and backoff do not change while one lease holds (SETTLE checks the
    attempts anyway)."""

    attempts: int
    max_attempts: int
    backoff: Backoff


class Attempts:
    """The attempts this process handed out, by task id, until settled (bounded), so that a
    worker's fail needs no read before its SETTLE."""

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = limit
        self._by_task: dict[str, tuple[str | None, int, int, Backoff]] = {}

    def remember(self, tasks: Sequence[Task]) -> None:
        by_task = self._by_task
        if len(by_task) > self._limit:
            by_task.clear()
        for t in tasks:
            by_task[t.task_id] = (t.lease_id, t.attempts, t.max_attempts, t.backoff)

    def pop(self, task_id: str, lease_id: str) -> Attempt | None:
        """The attempt under `lease_id`, forgotten; None if this process did not hand it out."""
        held = self._by_task.pop(task_id, None)
        if held is None or held[0] != lease_id:
            return None
        return Attempt(held[1], held[2], held[3])


def outcome_args(
    status: TaskStatus,
    run_at: float | None,
    completed_at: float | None,
    result: TaskResult | None,
    error: TaskError | None,
) -> list[Arg]:
    """An outcome as SETTLE's six outcome arguments."""
    return [
        status.value,
        "" if run_at is None else run_at,
        "" if completed_at is None else completed_at,
        b"" if result is None else encode(result),
        "" if result is None else result.status_code,
        b"" if error is None else encode(error),
    ]
