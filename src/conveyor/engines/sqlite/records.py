"""The SQLite engine's records (files, batches): writes as functions of a Tx, and reads."""

from __future__ import annotations

import sqlite3
from typing import Any

from conveyor.engines.engine import Record
from conveyor.engines.sqlite import queries as q
from conveyor.engines.sqlite.writer import Tx
from conveyor.errors import Conflict, NotFound


def to_record(row: tuple[Any, ...]) -> Record:
    """A record from its RECORD_COLUMNS."""
    kind, record_id, project, created_at, body, active, version = row
    return Record(kind, record_id, project, created_at, bytes(body), bool(active), version)


def put(record: Record, tx: Tx) -> Record:
    """Insert `record` as version 1. Raises Conflict if (kind, id) exists."""
    cursor = tx.conn.execute(
        q.INSERT_RECORD,
        (
            record.kind,
            record.id,
            record.project,
            record.created_at,
            record.body,
            int(record.active),
        ),
    )
    if cursor.rowcount != 1:
        raise Conflict(f"a {record.kind} record {record.id!r} exists already")
    return Record(
        record.kind, record.id, record.project, record.created_at, record.body, record.active, 1
    )


def replace(record: Record, expected_version: int, tx: Tx) -> Record:
    """Compare and set body and active. Raises NotFound, Conflict."""
    row = tx.conn.execute(
        q.REPLACE_RECORD,
        (record.body, int(record.active), record.kind, record.id, expected_version),
    ).fetchone()
    if row is not None:
        return to_record(row)
    current = tx.conn.execute(q.SELECT_RECORD_VERSION, (record.kind, record.id)).fetchone()
    if current is None:
        raise NotFound(f"no {record.kind} record {record.id!r}")
    raise Conflict(
        f"{record.kind} record {record.id!r} is at version {current[0]},"
        f" not {expected_version}: it changed since it was read"
    )


def delete(kind: str, record_id: str, tx: Tx) -> bool:
    """Delete the record; True if it existed."""
    return bool(tx.conn.execute(q.DELETE_RECORD, (kind, record_id)).rowcount)


def get(conn: sqlite3.Connection, kind: str, record_id: str) -> Record | None:
    row = conn.execute(q.SELECT_RECORD, (kind, record_id)).fetchone()
    return None if row is None else to_record(row)


def list_page(
    conn: sqlite3.Connection,
    kind: str,
    project: str,
    after: str | None,
    limit: int,
    newest_first: bool,
) -> list[Record]:
    limit = max(limit, 0)
    if not newest_first:
        rows = conn.execute(q.LIST_RECORDS_ASC, (kind, project, after or "", limit))
    elif after is None:
        rows = conn.execute(q.LIST_RECORDS_NEWEST, (kind, project, limit))
    else:
        rows = conn.execute(q.LIST_RECORDS_DESC, (kind, project, after, limit))
    return [to_record(row) for row in rows]


def active(conn: sqlite3.Connection, kind: str, limit: int, after: str | None) -> list[Record]:
    rows = conn.execute(q.LIST_ACTIVE, (kind, after or "", max(limit, 0)))
    return [to_record(row) for row in rows]
