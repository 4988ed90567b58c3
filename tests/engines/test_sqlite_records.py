"""SQLite records: a schema-1 file gains the records table, records survive reopening,
and each records query walks its index."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conveyor.domain.ids import new_task_id
from conveyor.engines.engine import Record
from conveyor.engines.sqlite import SqliteEngine
from conveyor.engines.sqlite import queries as q


async def test_a_schema_1_store_gains_records_and_batch_columns(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    engine = SqliteEngine(path)
    await engine.open()
    await engine.close()
    conn = sqlite3.connect(path)  # make it the file an older Conveyor wrote
    conn.execute("DROP TABLE records")
    conn.execute("DROP INDEX ix_batch_order")
    conn.execute("DROP INDEX ix_batch_counts")
    conn.execute("ALTER TABLE tasks DROP COLUMN result_code")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()

    engine = SqliteEngine(path)
    await engine.open()
    try:
        stored = await engine.put_record(Record("file", new_task_id(), "", 1.0, b"{}"))
        assert await engine.get_record("file", stored.id) == stored
    finally:
        await engine.close()
    conn = sqlite3.connect(path)
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(tasks)")}
    conn.close()
    assert int(version) == q.SCHEMA_VERSION == 3
    assert "result_code" in columns  # schema 3
    assert {"ix_batch_order", "ix_batch_counts"} <= indexes


async def test_records_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    engine = SqliteEngine(path)
    await engine.open()
    stored = await engine.put_record(Record("batch", new_task_id(), "p", 2.5, b"[1]", True))
    replaced = await engine.replace_record(Record("batch", stored.id, "p", 2.5, b"[2]", True), 1)
    await engine.close()

    engine = SqliteEngine(path)
    await engine.open()
    try:
        assert await engine.get_record("batch", stored.id) == replaced
        assert await engine.list_active("batch") == [replaced]
        assert await engine.list_records("batch", "p") == [replaced]
    finally:
        await engine.close()


PLANS = {
    "SELECT_RECORD": "PRIMARY KEY",
    "SELECT_RECORD_VERSION": "PRIMARY KEY",
    "LIST_RECORDS_ASC": "ix_records",
    "LIST_RECORDS_DESC": "ix_records",
    "LIST_RECORDS_NEWEST": "ix_records",
    "LIST_ACTIVE": "ix_records_active",
}


@pytest.fixture(scope="module")
def conn() -> sqlite3.Connection:
    connection = sqlite3.connect(":memory:")
    connection.executescript(q.SCHEMA)
    return connection


@pytest.mark.parametrize(("name", "index"), sorted(PLANS.items()))
def test_records_query_uses_its_index(conn: sqlite3.Connection, name: str, index: str) -> None:
    sql: str = getattr(q, name)
    plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [1] * sql.count("?"))]
    assert any(index in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan  # no sort: the index's order
