"""Every hot SQLite query walks the index meant for it, never the whole table."""

from __future__ import annotations

import sqlite3

import pytest

from conveyor.engines.sqlite import queries as q

EXPECTED = {
    "OLDEST": "ix_ready",
    "OLDEST_IN_GROUP": "ix_ready_group",
    "FIRST_GROUP": "ix_ready_group",
    "NEXT_GROUP": "ix_ready_group",
    "ANY_RUNNING": "ix_listing",
    "SELECT_STATE": "sqlite_autoindex_tasks_1",
    "SELECT_TASK": "sqlite_autoindex_tasks_1",
    "NEXT_RUN_AT": "ix_scheduled",
    "NEXT_LEASE_EXPIRY": "ix_leases",
    "NEXT_DEADLINE": "ix_deadlines",
    "OLDEST_RUN_AT": "ix_ready",
    "LIST_QUEUED": "ix_ready",
    "LIST_BY_STATUS": "ix_listing",
    "EXPIRED_LEASES": "ix_leases",
    "PAST_DEADLINE": "ix_deadlines",
    "PROMOTE": "ix_scheduled",
    "PURGE": "ix_finished",
    "COUNT_BATCH_TASKS": "ix_batch_counts",
    "SELECT_BATCH_COUNTS": "PRIMARY KEY",
    "BATCH_PAGE": "ix_batch_order",
    "BATCH_TO_CANCEL": "ix_batch_counts",
}


@pytest.fixture(scope="module")
def conn() -> sqlite3.Connection:
    connection = sqlite3.connect(":memory:")
    connection.executescript(q.SCHEMA)
    return connection


@pytest.mark.parametrize(("name", "index"), sorted(EXPECTED.items()))
def test_query_uses_its_index(conn: sqlite3.Connection, name: str, index: str) -> None:
    sql: str = getattr(q, name)
    plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [1] * sql.count("?"))]
    assert any(index in step for step in plan), plan
    assert not any(step.startswith("SCAN tasks") and "INDEX" not in step for step in plan), plan


def test_claim_addresses_rows_by_seq(conn: sqlite3.Connection) -> None:
    sql = q.CLAIM.format(marks="?,?")
    plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [1] * sql.count("?"))]
    assert plan == ["SEARCH tasks USING INTEGER PRIMARY KEY (rowid=?)"]
