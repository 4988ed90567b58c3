"""Vacuuming the engine's own tables when dead rows pile up (part of the sweep).

A queue rewrites its rows all day: every take and every completion leaves a dead version
of a task behind, and every counter update a dead counter row. PostgreSQL's autovacuum
reclaims them when it runs, but it can be tuned too lazily for a queue's churn, or be off
altogether (the test machine's server runs with `autovacuum = off`); then the tables and
their indexes grow without bound and every scan wades through dead entries. So after a
sweep, at most every CHECK_S, the engine reads the statistics of its churning tables, and
VACUUMs those whose dead rows exceed DEAD_MIN + DEAD_FRACTION of their live ones. Where
autovacuum keeps up, the threshold is never reached. One server at a time vacuums a
schema (a session advisory lock, tried, not waited for).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from conveyor.engines.postgres import queries as q

log = logging.getLogger(__name__)

CHECK_S = 10.0
DEAD_MIN = 5_000
DEAD_FRACTION = 0.2
TABLES = ("tasks", "counts", "batch_counts", "events")


class Vacuum:
    """Decides when the schema's tables need a VACUUM, and runs it on a given connection."""

    def __init__(self, schema: str) -> None:
        self._schema = schema
        self._next_check = 0.0
        self.runs = 0  # VACUUMs this engine ran (tests read it)

    def due(self) -> bool:
        """True when it is time to look at the statistics again."""
        return time.monotonic() >= self._next_check

    async def run(self, conn: Any) -> list[str]:
        """VACUUM the tables with too many dead rows; the ones vacuumed."""
        self._next_check = time.monotonic() + CHECK_S
        rows = await conn.fetch(q.DEAD_ROWS, self._schema, list(TABLES))
        tables = [name for name, live, dead in rows if dead > DEAD_MIN + DEAD_FRACTION * live]
        if not tables:
            return []
        key = f"conveyor-vacuum:{self._schema}"
        if not await conn.fetchval(q.TRY_VACUUM_LOCK, key):
            return []  # another server is at it
        try:
            for table in tables:
                await conn.execute(f"VACUUM {table}")
        finally:
            await conn.execute(q.VACUUM_UNLOCK, key)
        self.runs += len(tables)
        log.info("vacuumed %s in schema %s", ", ".join(tables), self._schema)
        return tables
