"""One maintenance pass over the store, in one transaction."""

from __future__ import annotations

from collections.abc import Mapping

from conveyor.domain import lifecycle
from conveyor.domain.queues import QueueConfig
from conveyor.domain.states import TaskStatus
from conveyor.engines.engine import SweepReport
from conveyor.engines.sqlite import batch_counts
from conveyor.engines.sqlite import queries as q
from conveyor.engines.sqlite.rows import RowState
from conveyor.engines.sqlite.settle import settle
from conveyor.engines.sqlite.writer import Tx

SWEEP_BATCH = 10_000


def sweep(tx: Tx, now: float, configs: Mapping[str, QueueConfig]) -> SweepReport:
    """Promote due tasks, expire deadlines and leases, purge past retention.

    Each step handles at most SWEEP_BATCH tasks, so one pass never holds the writer long;
    a pass that hit a limit reports itself due again at once.
    """
    conn = tx.conn
    report = SweepReport()
    full = False
    promoted = conn.execute(q.PROMOTE, (now, SWEEP_BATCH)).fetchall()
    for queue, level in promoted:
        tx.moved(queue, level, TaskStatus.SCHEDULED, TaskStatus.QUEUED)
    report.promoted = len(promoted)
    full |= len(promoted) == SWEEP_BATCH
    past = conn.execute(q.PAST_DEADLINE, (now, SWEEP_BATCH)).fetchall()
    for row in past:
        settle(tx, RowState(row), lifecycle.deadline_passed(now))
    report.expired = len(past)
    full |= len(past) == SWEEP_BATCH
    lapsed = conn.execute(q.EXPIRED_LEASES, (now, SWEEP_BATCH)).fetchall()
    for row in lapsed:
        state = RowState(row)
        outcome = lifecycle.lease_expired(state, now)
        settle(tx, state, outcome)
        report.lease_expired(outcome.status)
    full |= len(lapsed) == SWEEP_BATCH
    for name, config in configs.items():
        purged = conn.execute(q.PURGE, (name, now - config.retention_s, SWEEP_BATCH)).fetchall()
        batched: batch_counts.Delta = {}
        for _, level, code, batch_id, result_code in purged:
            status = q.STATUSES[code]
            tx.moved(name, level, status, None)
            ended = batch_counts.ended_as(status, result_code)
            batch_counts.note_change(batched, batch_id, ended, None, total=-1)
        batch_counts.apply(conn, batched)
        conn.executemany(q.DELETE_EVENTS, [(row[0],) for row in purged])
        report.purged += len(purged)
        full |= len(purged) == SWEEP_BATCH
    times = [
        row[0]
        for sql in (q.NEXT_RUN_AT, q.NEXT_LEASE_EXPIRY, q.NEXT_DEADLINE)
        if (row := conn.execute(sql).fetchone())[0] is not None
    ]
    # a sweep that hit its batch limit has more to do at once
    report.next_due_at = now if full else (min(times) if times else None)
    return report
