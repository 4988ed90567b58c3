"""Rows read back as domain values: tasks as SQLite reads them, and records."""

from __future__ import annotations

from conveyor.engines._rows import Row, RowState, decode_any, decode_backoff, encode, to_task
from conveyor.engines.engine import Record

__all__ = [
    "Row",
    "RowState",
    "decode_any",
    "decode_backoff",
    "encode",
    "to_record",
    "to_task",
]


def to_record(row: Row) -> Record:
    """A record from its RECORD_COLUMNS."""
    kind, record_id, project, created_at, body, active, version = row
    return Record(kind, record_id, project, created_at, bytes(body), active, version)
