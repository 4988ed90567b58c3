"""The PostgreSQL engine's queues: their configs, and the counts that make their stats."""

from __future__ import annotations

from typing import Any

import msgspec

from conveyor.domain.queues import QueueConfig, QueueUpdate
from conveyor.domain.states import TaskStatus
from conveyor.engines.engine import LevelStats
from conveyor.engines.postgres import queries as q
from conveyor.engines.postgres.queries import STATUSES
from conveyor.engines.postgres.rows import encode
from conveyor.engines.postgres.tx import Tx
from conveyor.errors import Conflict, NotFound

decode_config = msgspec.json.Decoder(QueueConfig).decode


async def register(tx: Tx, config: QueueConfig, *, replace: bool, now: float) -> QueueConfig:
    """Create the queue, or replace its defaults (keeping created_at) if `replace`."""
    created = msgspec.structs.replace(config, created_at=now)
    inserted = await tx.conn.fetchval(
        q.INSERT_QUEUE, config.name, encode(created), config.paused, config.retention_s
    )
    if inserted is not None:
        return created
    existing = await locked(tx, config.name)
    if not replace:
        return existing
    return await _store(
        tx, msgspec.structs.replace(config, created_at=existing.created_at), existing
    )


async def update(tx: Tx, name: str, change: QueueUpdate) -> QueueConfig:
    """Apply `change`. Raises NotFound, InvalidInput."""
    existing = await locked(tx, name)
    return await _store(tx, change.apply(existing), existing)


async def _store(tx: Tx, config: QueueConfig, existing: QueueConfig) -> QueueConfig:
    await tx.conn.execute(
        q.UPDATE_QUEUE, config.name, encode(config), config.paused, config.retention_s
    )
    if existing.paused and not config.paused:
        tx.work.add(config.name)  # takers waiting on it look again
    return config


async def locked(tx: Tx, name: str) -> QueueConfig:
    """The queue's config, its row locked until the transaction ends. Raises NotFound."""
    raw = await tx.conn.fetchval(q.SELECT_QUEUE_FOR_UPDATE, name)
    if raw is None:
        raise NotFound(f"queue {name!r} does not exist")
    return decode_config(raw)


async def levels(conn: Any, name: str, now: float) -> list[LevelStats]:
    """Counts per level and state (the slots added up), and the oldest queued task's age."""
    counts: dict[int, dict[TaskStatus, int]] = {}
    for level, status, n in await conn.fetch(q.SELECT_QUEUE_COUNTS, name):
        counts.setdefault(level, {})[STATUSES[status]] = n
    queued = [lv for lv in sorted(counts) if counts[lv].get(TaskStatus.QUEUED)]
    oldest = dict(await conn.fetch(q.OLDEST_RUN_AT, name, queued)) if queued else {}
    return [
        LevelStats(
            level=level,
            counts=counts[level],
            oldest_queued_age_s=None if level not in oldest else now - oldest[level],
        )
        for level in sorted(counts)
    ]


async def obliterate(tx: Tx, name: str, *, force: bool) -> int:
    """Delete the queue and everything of it; the tasks deleted. Raises NotFound, Conflict."""
    await locked(tx, name)  # puts to it wait, then find it gone
    if not force and await tx.conn.fetchval(q.ANY_RUNNING, name):
        raise Conflict(f"queue {name!r} has running tasks; pass force to obliterate it anyway")
    await tx.conn.execute(q.DELETE_QUEUE_EVENTS, name)
    await tx.conn.execute(q.DELETE_QUEUE_BATCH_COUNTS, name)  # a batch has one queue
    status = await tx.conn.execute(q.DELETE_QUEUE_TASKS, name)
    await tx.conn.execute(q.DELETE_QUEUE_COUNTS, name)
    await tx.conn.execute(q.DELETE_QUEUE, name)
    return int(status.rpartition(" ")[2])
