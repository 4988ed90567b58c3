"""Every hot PostgreSQL statement walks the index meant for it, and a take costs the same
with 1,000 or 100,000 tasks queued (asserted on the plans and the pages they touch)."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from conveyor.engines import create_engine
from conveyor.engines.postgres import queries as q
from tests.conftest import POSTGRES_URL, drop_postgres_schemas, require_server

NOW = 1_000_000.0
# Tasks of every kind: most queued, in two queues, three levels, fifty groups, some in
# batches; some scheduled, running, finished (a few owing callbacks), with deadlines.
FILL = """
INSERT INTO tasks (
    task_id, queue, level, status, grp, run_at, expires_at, max_attempts, backoff,
    lease_expires_at, created_at, completed_at, fingerprint, endpoint, data, response_mode,
    batch_id, callback_due_at
)
SELECT
    'p' || lpad(i::text, 9, '0'),
    CASE WHEN i % 11 = 0 THEN 'other' ELSE 'q' END,
    i % 3,
    s.status,
    'g' || (i % 50),
    CASE WHEN s.status = 1 THEN $2 + i ELSE $2 - $1 + i END,
    CASE WHEN i % 5 = 0 AND s.status <= 2 THEN $2 + i END,
    3, '{}',
    CASE WHEN s.status = 2 THEN $2 + i END,
    $2 - $1 + i,
    CASE WHEN s.status >= 3 THEN $2 - $1 + i END,
    '', '', '{}', 'callback',
    CASE WHEN i % 4 = 0 THEN 'b' || (i % 20) END,
    CASE WHEN s.status >= 3 AND i % 3 = 0 THEN $2 + i END
FROM generate_series(1, $1) AS i
CROSS JOIN LATERAL (
    SELECT CASE i % 10 WHEN 6 THEN 1 WHEN 7 THEN 2 WHEN 8 THEN 3 WHEN 9 THEN 4 ELSE 0 END
) AS s(status)
"""
EVENTS = """
INSERT INTO events (task_seq, event_id, event, data, created_at)
SELECT seq, n, 'progress', '{}', 0 FROM tasks CROSS JOIN generate_series(1, 3) AS n
WHERE seq % 10 = 7
"""
QUEUE = "INSERT INTO queues (name, config, paused, retention_s) VALUES ($1, '{}', false, 60)"

TAKE = (["q"], [1], [10], list(range(10)), 10)  # OLDEST_BY_SOURCE: q's ten levels, size 10
SEQS = list(range(1, 100_000, 100))  # a thousand tasks spread over the table

# listings run as statements prepared afresh (store.fetch_planned), never on a generic plan
PLANNED_EACH_TIME = {"LIST_QUEUED", "LIST_BY_STATUS", "BATCH_PAGE"}
# statement -> (its parameters, the indexes its plan must use)
EXPECTED: dict[str, tuple[tuple[Any, ...], set[str]]] = {
    "OLDEST_BY_SOURCE": (TAKE, {"ix_ready"}),
    "OLDEST_BY_GROUP": ((["q"], [0], ["g3"], 10), {"ix_ready_group"}),
    "LANES_WITH_WORK": ((["q", "q"], [0, 1]), {"ix_ready"}),
    "GROUPS_FROM": ((["q"], [0], [""], 11), {"ix_ready_group"}),
    "QUEUES_RUNNING": ((["q"],), {"ix_listing"}),
    "ANY_RUNNING": (("q",), set()),  # ix_listing or ix_leases: both hold running tasks only
    "CLAIM": ((NOW, "w", NOW + 60, 60.0, [1, 2, 3]), {"tasks_pkey"}),
    "CLAIM[1000]": ((NOW, "w", NOW + 60, 60.0, SEQS), {"tasks_pkey"}),
    "SETTLE": ((5, 3, None, NOW, b"{}", None, 200, NOW), {"tasks_pkey"}),
    "SETTLE_MANY[1000]": (
        (
            SEQS,
            [3] * 1000,
            [None] * 1000,
            [NOW] * 1000,
            [b"{}"] * 1000,
            [None] * 1000,
            [200] * 1000,
            [NOW] * 1000,
        ),
        {"tasks_pkey"},
    ),
    "SELECT_STATES[1000]": (([f"p{i:09d}" for i in SEQS],), {"tasks_task_id_key"}),
    "MARK_CANCEL_MANY": ((SEQS,), {"tasks_pkey"}),
    "EXTEND_LEASE": ((5, NOW), {"tasks_pkey"}),
    "DELETE_EVENTS": ((SEQS[:10],), {"events_pkey"}),
    "SELECT_STATE": (("p000000005",), {"tasks_task_id_key"}),
    "SELECT_STATES": ((["p000000005", "p000000015"],), {"tasks_task_id_key"}),
    "SELECT_TASK": (("p000000005",), {"tasks_task_id_key"}),
    "PROMOTE": ((NOW + 20, 10_000), {"ix_scheduled"}),
    "PAST_DEADLINE": ((NOW + 20, 10_000), {"ix_deadlines"}),
    "EXPIRED_LEASES": ((NOW + 20, 10_000), {"ix_leases"}),
    "PURGE": ((NOW - 1, 10_000), {"ix_finished"}),
    "NEXT_DUE": ((), {"ix_scheduled", "ix_leases", "ix_deadlines"}),
    "CLAIM_CALLBACKS": ((NOW + 90, NOW + 20, 100), {"ix_callbacks"}),
    "LIST_QUEUED": (("q", 500, 101, 9), {"ix_ready"}),
    "LIST_BY_STATUS": (("q", 500, 101, [1, 2, 3]), {"ix_listing"}),
    "OLDEST_RUN_AT": (("q", [0, 1, 2]), {"ix_ready"}),
    "BATCH_PAGE": (("b4", 500, 1001), {"ix_batch_order"}),
    "BATCH_TO_CANCEL": (("b4", 500), {"ix_batch_unfinished"}),
    # the verbs in one statement (fast.py)
    "PUT_NEW": (
        (
            *(["n1"], ["q"], [0], [0], [""], [NOW], [None], [3], [b"{}"], [NOW]),
            *([""], [""], [b"{}"], ["callback"], [None], [None], [None], ["b1"], [None]),
            ["q"],
            3,
        ),
        set(),  # no scan of tasks: an insert and its counts
    ),
    "TAKE_IN_LIST_ORDER": ((*TAKE, NOW, "w", NOW + 60, 60.0, 3), {"ix_ready", "tasks_pkey"}),
    "SETTLE_HELD": (
        ("p000000007", "l", NOW, 3, None, NOW, b"{}", None, 200, NOW, 3, 1),
        {"tasks_task_id_key"},
    ),
    "COMPLETE_HELD_MANY[1000]": (
        (
            [f"p{i:09d}" for i in SEQS],
            ["l"] * 1000,
            [3] * 1000,
            [b"{}"] * 1000,
            [200] * 1000,
            NOW,
            [1] * 1000,
            3,
        ),
        {"tasks_task_id_key", "tasks_pkey"},
    ),
    "COMPLETE_HELD_ROWS[1000]": (
        (
            [f"p{i:09d}" for i in SEQS],
            ["l"] * 1000,
            [3] * 1000,
            [b"{}"] * 1000,
            [200] * 1000,
            NOW,
            [1] * 1000,
            3,
        ),
        {"tasks_task_id_key", "tasks_pkey"},
    ),
    "EXTEND_HELD": (("p000000007", "l", NOW, None), {"tasks_task_id_key"}),
    "PEEK_STATE": (("p000000005",), {"tasks_task_id_key"}),
}


def _run(coroutine: Any) -> Any:
    """Run a coroutine to the end in a thread of its own (fixtures here are synchronous)."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(coroutine)))
    thread.start()
    thread.join()
    return result[0] if result else None


async def _fill(schema: str, tasks: int) -> None:
    engine = create_engine(f"{POSTGRES_URL}?schema={schema}")
    await engine.open()  # creates the schema
    await engine.close()
    conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": schema})
    try:
        await conn.execute(QUEUE, "q")
        await conn.execute(QUEUE, "other")
        await conn.execute(FILL, tasks, NOW)
        await conn.execute(EVENTS)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def stores() -> Iterator[dict[int, str]]:
    """Two schemas alike but for size: 1,000 and 100,000 tasks."""
    require_server("PostgreSQL", POSTGRES_URL)
    schemas = {n: f"t_plans_{n}_{secrets.token_hex(4)}" for n in (1_000, 100_000)}
    try:
        for n, schema in schemas.items():
            _run(_fill(schema, n))
        yield schemas
    finally:
        drop_postgres_schemas(list(schemas.values()))


async def explain(
    schema: str, sql: str, args: tuple[Any, ...], *, analyze: bool, generic: bool = False
) -> Any:
    """The plan of `sql` (run, then rolled back, if `analyze`), as PostgreSQL's JSON.

    `generic`: the plan made without the parameters' values, which PostgreSQL may keep
    for a prepared statement (asyncpg prepares every statement) after a few executions.
    """
    settings = {"search_path": schema, "plan_cache_mode": "force_generic_plan"}
    conn = await asyncpg.connect(POSTGRES_URL, server_settings=settings)
    try:
        options = "ANALYZE, BUFFERS, " if analyze else ""
        tx = conn.transaction()
        await tx.start()
        try:
            if generic:  # an SQL-level PREPARE: EXPLAIN EXECUTE shows the plan it keeps
                await conn.execute(f"PREPARE s AS {sql}")
                values = ", ".join(literal(arg) for arg in args)
                statement = f"EXECUTE s({values})" if args else "EXECUTE s"
                raw = await conn.fetchval(f"EXPLAIN ({options}FORMAT JSON) {statement}")
            else:  # parameters bound: planned with their values
                raw = await conn.fetchval(f"EXPLAIN ({options}FORMAT JSON) {sql}", *args)
        finally:
            await tx.rollback()
    finally:
        await conn.close()
    return json.loads(raw)[0]


def literal(value: Any) -> str:
    """A parameter as SQL text, for EXECUTE (an untyped literal takes the parameter's type)."""
    if value is None:
        return "NULL"
    if isinstance(value, list):
        return "'{" + ",".join(_element(v) for v in value) + "}'"
    if isinstance(value, bytes):
        return f"'\\x{value.hex()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _element(value: Any) -> str:
    """An array element in PostgreSQL's array text."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f'"\\\\x{value.hex()}"'
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a plan, depth first."""
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def shape(plan: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(node["Node Type"], node.get("Index Name")) for node in nodes(plan)]


@pytest.mark.parametrize(
    ("name", "generic"),
    [
        pytest.param(name, generic, id=f"{name}-{'generic' if generic else 'custom'}")
        for name in sorted(EXPECTED)
        for generic in (False, True)
        if not (generic and name in PLANNED_EACH_TIME)
    ],
)
async def test_statement_uses_its_index(stores: dict[int, str], name: str, generic: bool) -> None:
    args, indexes = EXPECTED[name]
    sql = getattr(q, name.partition("[")[0])
    plan = (await explain(stores[100_000], sql, args, analyze=False, generic=generic))["Plan"]
    used = {node.get("Index Name") for node in nodes(plan)}
    assert indexes <= used, shape(plan)
    scans = [
        n for n in nodes(plan) if n["Node Type"] == "Seq Scan" and n["Relation Name"] == "tasks"
    ]
    assert not scans, shape(plan)


async def test_a_take_costs_the_same_with_1000_or_100000_queued(stores: dict[int, str]) -> None:
    small, big = [
        await explain(stores[n], q.OLDEST_BY_SOURCE, TAKE, analyze=True) for n in (1_000, 100_000)
    ]
    assert shape(small["Plan"]) == shape(big["Plan"])
    assert small["Plan"]["Actual Rows"] == big["Plan"]["Actual Rows"] == 10

    def pages(plan: dict[str, Any]) -> int:
        return int(plan["Shared Hit Blocks"] + plan["Shared Read Blocks"])

    # the index is a level or two deeper, nothing more: no page per queued task
    assert pages(big["Plan"]) <= pages(small["Plan"]) + 12, (
        pages(small["Plan"]),
        pages(big["Plan"]),
    )
    claim = await explain(stores[100_000], q.CLAIM, EXPECTED["CLAIM"][0], analyze=True)
    assert pages(claim["Plan"]) < 100
    args = EXPECTED["TAKE_IN_LIST_ORDER"][0]
    small, big = [
        await explain(stores[n], q.TAKE_IN_LIST_ORDER, args, analyze=True) for n in (1_000, 100_000)
    ]
    assert small["Plan"]["Actual Rows"] == big["Plan"]["Actual Rows"] == 10
    # the same, with the ten claimed rows entered in indexes a level or two deeper
    assert pages(big["Plan"]) <= pages(small["Plan"]) + 12 + 10 * 4, (
        pages(small["Plan"]),
        pages(big["Plan"]),
    )
