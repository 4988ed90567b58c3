"""The PostgreSQL engine's records (files, batches): compare-and-set on a version."""

from __future__ import annotations

from typing import Any

from conveyor.engines.engine import Record
from conveyor.engines.postgres import queries as q
from conveyor.engines.postgres.rows import to_record
from conveyor.errors import Conflict, NotFound


async def put(conn: Any, record: Record) -> Record:
    """Insert `record` as version 1. Raises Conflict if (kind, id) exists."""
    row = await conn.fetchrow(
        q.INSERT_RECORD,
        record.kind,
        record.id,
        record.project,
        record.created_at,
        record.body,
        record.active,
    )
    if row is None:
        raise Conflict(f"a {record.kind} record {record.id!r} exists already")
    return to_record(row)


async def replace(conn: Any, record: Record, expected_version: int) -> Record:
    """Compare and set body and active. Raises NotFound, Conflict."""
    row = await conn.fetchrow(
        q.REPLACE_RECORD, record.body, record.active, record.kind, record.id, expected_version
    )
    if row is not None:
        return to_record(row)
    current = await conn.fetchval(q.SELECT_RECORD_VERSION, record.kind, record.id)
    if current is None:
        raise NotFound(f"no {record.kind} record {record.id!r}")
    raise Conflict(
        f"{record.kind} record {record.id!r} is at version {current},"
        f" not {expected_version}: it changed since it was read"
    )


async def get(conn: Any, kind: str, record_id: str) -> Record | None:
    row = await conn.fetchrow(q.SELECT_RECORD, kind, record_id)
    return None if row is None else to_record(row)


async def list_page(
    conn: Any,
    kind: str,
    project: str,
    after: str | None,
    limit: int,
    newest_first: bool,
) -> list[Record]:
    limit = max(limit, 0)
    if not newest_first:
        rows = await conn.fetch(q.LIST_RECORDS_ASC, kind, project, after or "", limit)
    elif after is None:
        rows = await conn.fetch(q.LIST_RECORDS_NEWEST, kind, project, limit)
    else:
        rows = await conn.fetch(q.LIST_RECORDS_DESC, kind, project, after, limit)
    return [to_record(row) for row in rows]


async def active(conn: Any, kind: str, limit: int, after: str | None) -> list[Record]:
    rows = await conn.fetch(q.LIST_ACTIVE, kind, after or "", max(limit, 0))
    return [to_record(row) for row in rows]
