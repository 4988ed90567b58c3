"""Rows of the relational engines' tasks table (SQLite, PostgreSQL) read back as domain values.

Both engines store the same columns in the same order (their queries.py select
STATE_COLUMNS or TASK_COLUMNS) and the status as the same small integer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from conveyor.domain.queues import Lane
from conveyor.domain.retry import Backoff
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import NewTask, ResponseMode, Task, TaskError, TaskResult

# statuses as stored: small integers, so that the partial indexes on them stay small
STATUS_CODES: dict[TaskStatus, int] = {
    TaskStatus.QUEUED: 0,
    TaskStatus.SCHEDULED: 1,
    TaskStatus.RUNNING: 2,
    TaskStatus.SUCCEEDED: 3,
    TaskStatus.FAILED: 4,
    TaskStatus.CANCELLED: 5,
    TaskStatus.EXPIRED: 6,
}
STATUSES: list[TaskStatus] = sorted(STATUS_CODES, key=STATUS_CODES.__getitem__)

_backoff = msgspec.json.Decoder(Backoff)
_result = msgspec.json.Decoder(TaskResult)
_error = msgspec.json.Decoder(TaskError)
_any = msgspec.json.Decoder()
encode = msgspec.json.Encoder().encode
decode_any = _any.decode

Row = Sequence[Any]  # a sqlite3 tuple or an asyncpg Record, read by position

_backoffs: dict[bytes, Backoff] = {}


def decode_backoff(raw: bytes) -> Backoff:
    """A stored backoff; most tasks share their queue's, so decoded ones are kept."""
    backoff = _backoffs.get(raw)
    if backoff is None:
        if len(_backoffs) > 1_000:
            _backoffs.clear()
        backoff = _backoffs[raw] = _backoff.decode(raw)
    return backoff


class RowState:
    """A row selected with STATE_COLUMNS (or TASK_COLUMNS), as `lifecycle` sees it."""

    __slots__ = (
        "attempts",
        "backoff_json",
        "batch_id",
        "cancel_requested",
        "lease_expires_at",
        "lease_id",
        "level",
        "max_attempts",
        "queue",
        "result_code",
        "row",
        "seq",
        "status",
        "task_id",
    )

    def __init__(self, row: Row) -> None:
        self.row = row
        self.seq: int = row[0]
        self.task_id: str = row[1]
        self.queue: str = row[2]
        self.level: int = row[3]
        self.status: TaskStatus = STATUSES[row[4]]
        self.attempts: int = row[8]
        self.max_attempts: int = row[9]
        self.backoff_json: bytes = row[10]
        self.lease_id: str | None = row[11]
        self.lease_expires_at: float | None = row[12]
        self.cancel_requested: bool = bool(row[15])
        self.batch_id: str | None = row[16]
        self.result_code: int | None = row[17]

    def after(self, outcome_status: TaskStatus) -> RowState:
        """This task as a settle to `outcome_status` leaves it: moved, lease ended."""
        moved = RowState(self.row)
        moved.status = outcome_status
        moved.lease_id = None
        moved.lease_expires_at = None
        return moved

    @property
    def backoff(self) -> Backoff:
        return decode_backoff(self.backoff_json)

    @property
    def lane(self) -> Lane:
        return Lane(self.queue, self.level)

    @property
    def lease_s(self) -> float | None:
        value: float | None = self.row[13]
        return value


def to_task(row: Row) -> Task:
    """A Task from a row selected with TASK_COLUMNS."""
    metadata, result, error = row[27], row[28], row[29]
    return Task(  # positional, in Task's field order
        row[1],  # task_id
        row[2],  # queue
        row[3],  # level
        row[21],  # endpoint
        _any.decode(row[22]),  # data
        STATUSES[row[4]],  # status
        ResponseMode(row[23]),  # response_mode
        row[24],  # callback_url
        row[25],  # timeout_s
        row[26],  # custom_id
        row[16],  # batch_id
        row[5],  # group
        None if metadata is None else _any.decode(metadata),
        row[8],  # attempts
        row[9],  # max_attempts
        decode_backoff(row[10]),
        row[6],  # run_at
        row[18],  # created_at
        row[19],  # started_at
        row[20],  # completed_at
        row[7],  # expires_at
        None if result is None else _result.decode(result),
        None if error is None else _error.decode(error),
        row[11],  # lease_id
        row[14],  # worker_id
        row[12],  # lease_expires_at
        bool(row[15]),  # cancel_requested
    )


INSERT_WIDTH = 19  # the values of one new task's row, as new_rows gives them


def new_rows(tasks: Sequence[NewTask]) -> list[tuple[Any, ...]]:
    """Each new task's values in the order both engines insert them (their INSERT_TASK
    and PUT_NEW); a backoff policy is encoded once however many tasks share it."""
    backoffs: dict[Any, bytes] = {}
    return [
        (
            t.task_id,
            t.queue,
            t.level,
            STATUS_CODES[t.status],
            t.group,
            t.run_at,
            t.expires_at,
            t.max_attempts,
            backoffs.get(t.backoff) or backoffs.setdefault(t.backoff, encode(t.backoff)),
            t.created_at,
            t.fingerprint,
            t.endpoint,
            t.data_json,
            t.response_mode.value,
            t.callback_url,
            t.timeout_s,
            t.custom_id,
            t.batch_id,
            t.metadata_json,
        )
        for t in tasks
    ]
