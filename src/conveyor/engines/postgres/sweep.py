"""One maintenance pass over the store, in one transaction; safe with many servers sweeping."""

from __future__ import annotations

from conveyor.domain import lifecycle
from conveyor.domain.states import TaskStatus
from conveyor.engines.engine import SweepReport
from conveyor.engines.postgres import queries as q
from conveyor.engines.postgres.rows import RowState
from conveyor.engines.postgres.settle import ended_as, settle_many
from conveyor.engines.postgres.tx import Tx

SWEEP_BATCH = 10_000


async def sweep(tx: Tx, now: float) -> SweepReport:
    """Promote due tasks, expire deadlines and leases, purge past retention.

    Each step handles at most SWEEP_BATCH tasks (per queue, for retention), so one pass
    never holds its rows long; a pass that hit a limit reports itself due again at once.
    Every step skips rows another transaction holds: a task being completed, or taken by
    another server's sweep, is left to that transaction.
    """
    conn = tx.conn
    report = SweepReport()
    full = False
    promoted = await conn.fetch(q.PROMOTE, now, SWEEP_BATCH)
    for queue, level in promoted:
        tx.moved(queue, level, TaskStatus.SCHEDULED, TaskStatus.QUEUED)
    report.promoted = len(promoted)
    full |= len(promoted) == SWEEP_BATCH
    past = [RowState(row) for row in await conn.fetch(q.PAST_DEADLINE, now, SWEEP_BATCH)]
    await settle_many(tx, [(state, lifecycle.deadline_passed(now)) for state in past])
    report.expired = len(past)
    full |= len(past) == SWEEP_BATCH
    lapsed = [RowState(row) for row in await conn.fetch(q.EXPIRED_LEASES, now, SWEEP_BATCH)]
    writes = [(state, lifecycle.lease_expired(state, now)) for state in lapsed]
    await settle_many(tx, writes)
    for _, outcome in writes:
        report.lease_expired(outcome.status)
    full |= len(lapsed) == SWEEP_BATCH
    purged = await conn.fetch(q.PURGE, now, SWEEP_BATCH)
    for _, queue, level, code, batch_id, result_code in purged:
        status = q.STATUSES[code]
        tx.moved(queue, level, status, None)
        if batch_id is not None:
            tx.batch_moved(batch_id, ended_as(status, result_code), None, total=-1)
    if purged:
        await conn.execute(q.DELETE_EVENTS, [row[0] for row in purged])
    report.purged = len(purged)
    full |= len(purged) >= SWEEP_BATCH
    times = [t for t in await conn.fetchrow(q.NEXT_DUE) if t is not None]
    # a sweep that hit its batch limit has more to do at once
    report.next_due_at = now if full else (min(times) if times else None)
    return report
