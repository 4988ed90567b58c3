"""The sweep and the callback outbox in Redis: one script per queue, every queue per call.

Sweeping is safe with many servers doing it at once: SWEEP promotes, expires and purges
atomically per queue, and an expired lease goes where `lifecycle.lease_expired` says only if
SETTLE finds it exactly as it was read (another server's sweep, or a late heartbeat or
complete, leaves it moved and this sweep lets it be).
"""

from __future__ import annotations

import logging

from conveyor.domain import lifecycle
from conveyor.domain.clock import Clock
from conveyor.engines.engine import DueCallback, SweepReport
from conveyor.engines.redis.client import Link
from conveyor.engines.redis.codec import State, encode, to_task
from conveyor.engines.redis.keys import Keys
from conveyor.engines.redis.settle import Settler, Step

log = logging.getLogger(__name__)

SWEEP_BATCH = 10_000
BATCH_KIND = "batch"  # the record kind of batches (service/batches.py)  # per queue and step, so one script never holds Redis for long


async def _queue_names(link: Link, keys: Keys) -> list[str]:
    return sorted(name.decode() for name in await link.call("SMEMBERS", keys.queues))


async def sweep(link: Link, keys: Keys, settler: Settler, clock: Clock) -> SweepReport:
    """Promote due tasks, expire deadlines and leases, purge past retention."""
    now = clock()
    report = SweepReport()
    names = await _queue_names(link, keys)
    # a batch still running keeps its finished tasks past retention: its files come from them
    running = await link.call("ZRANGE", f"{keys.records(BATCH_KIND)}active", 0, -1)
    deadline = lifecycle.deadline_passed(now)
    assert deadline.completed_at is not None
    assert deadline.error is not None
    batch = link.batch()
    for name in names:
        batch.script(
            "sweep",
            keys.queue(name),
            keys.prefix,
            now,
            SWEEP_BATCH,
            deadline.status.value,
            deadline.completed_at,
            encode(deadline.error),
            *running,
        )
    cleanup = link.batch()
    lapsed: list[tuple[str, str, State, Step]] = []
    times: list[float] = []
    full = False
    for name, reply in zip(names, await batch.run(), strict=True):
        if isinstance(reply, Exception):
            log.error("sweeping queue %r failed: %s", name, reply)
            continue
        promoted, expired, purged, emptied, leases, due, hit = reply
        report.promoted += int(promoted)
        report.expired += int(expired)
        report.purged += len(purged)
        if purged:
            cleanup.call("HDEL", keys.index, *purged)
        if emptied:
            cleanup.call("HDEL", keys.batches, *emptied)
        for raw_id, values in leases:
            state = State(raw_id.decode(), values)
            step = Step("settle", lifecycle.lease_expired(state, now))
            lapsed.append((name, state.task_id, state, step))
        times.extend(float(t) for t in due)
        full |= bool(hit)
    if lapsed:
        answers = await settler.apply_many(lapsed)
        for (_, _, _, step), (kind, _) in zip(lapsed, answers, strict=True):
            if kind == b"ok" and step.outcome is not None:
                report.lease_expired(step.outcome.status)
    await cleanup.run()
    # a sweep that hit its batch limit has more to do at once
    report.next_due_at = now if full else min(times, default=None)
    return report


async def claim_callbacks(
    link: Link, keys: Keys, clock: Clock, limit: int, hold_s: float
) -> list[DueCallback]:
    """Up to `limit` due callbacks across queues, each held for `hold_s`."""
    now = clock()
    names = await _queue_names(link, keys)
    batch = link.batch()
    for name in names:
        batch.call("ZCOUNT", f"{keys.queue(name)}cb", "-inf", now)
    claims = link.batch()
    claimed_from: list[str] = []
    left = limit
    for name, due in zip(names, await batch.run(), strict=True):
        if left <= 0:
            break
        if isinstance(due, int) and due > 0:
            take = min(due, left)
            claims.script("claim_callbacks", keys.queue(name), keys.prefix, now, now + hold_s, take)
            claimed_from.append(name)
            left -= take
    out: list[DueCallback] = []
    for name, reply in zip(claimed_from, await claims.run(), strict=True):
        if isinstance(reply, Exception):
            raise reply
        out.extend(DueCallback(to_task(name, flat), int(attempt)) for attempt, flat in reply)
    return out
