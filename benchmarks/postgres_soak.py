"""A soak of the PostgreSQL engine: steady put/take/complete while retention purges, with
the size of every table and index sampled, to show they stop growing.

    python -m benchmarks.postgres_soak [--url postgresql://127.0.0.1:5432/test]
        [--minutes 10] [--rate 200] [--retention 60]

Tasks are put, taken and completed in batches of 50 at `--rate` tasks/s through
TaskService, with a Sweeper running (as a server does) and the queue's retention set to
`--retention` seconds, so finished tasks are purged as new ones finish. Every 30 s it prints
the live tuples of `tasks`, and the on-disk size of each table and index of the schema
(the engine's own vacuum reclaims the space the purges free). The schema is dropped at the
end.

It is a check as well as a figure: once retention has reached its steady state, every
relation should stop growing. Each relation's growth over the second half of the run is
compared with its size at the half-way mark; growth beyond GROWTH_TOLERANCE of that size
(and more than GROWTH_SLACK_BYTES, so that a page or two of a small index is not a
verdict) is reported as unbounded and the command exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time

import asyncpg

from conveyor.domain.queues import QueueConfig
from conveyor.domain.tasks import TaskResult, TaskSpec
from conveyor.engines import create_engine
from conveyor.engines.engine import Completion
from conveyor.service.maintenance import Sweeper
from conveyor.service.tasks import TaskService

SIZES = """
SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'i') ORDER BY c.relname
"""
LIVE = "SELECT n_live_tup, n_dead_tup FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'tasks'"
BATCH = 50
GROWTH_TOLERANCE = 0.10  # linear growth would add ~100 % over the second half of the run
GROWTH_SLACK_BYTES = 1 << 20
RESULT = TaskResult(status_code=200, body={"ok": True})


async def sample(
    conn: asyncpg.Connection, schema: str, elapsed_s: float, done: int
) -> dict[str, int]:
    sizes = {name: size for name, size in await conn.fetch(SIZES, schema)}
    live, dead = await conn.fetchrow(LIVE, schema) or (0, 0)
    total = sum(sizes.values())
    print(
        f"{elapsed_s:6.0f} s  {done:9,} tasks done  tasks live {live:7,} dead {dead:7,}"
        f"  all relations {total / 2**20:7.1f} MiB  (tasks {sizes.get('tasks', 0) / 2**20:.1f},"
        f" ix_ready {sizes.get('ix_ready', 0) / 2**20:.2f}, tasks_pkey"
        f" {sizes.get('tasks_pkey', 0) / 2**20:.2f})",
        flush=True,
    )
    return sizes


def unbounded(half: dict[str, int], last: dict[str, int]) -> list[str]:
    """The relations that grew over the second half beyond the tolerance."""
    grown = []
    for name, size in last.items():
        before = half.get(name, 0)
        growth = size - before
        if growth > GROWTH_SLACK_BYTES and growth > GROWTH_TOLERANCE * before:
            grown.append(name)
    return grown


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0, help="tasks per second")
    parser.add_argument("--retention", type=float, default=60.0, help="seconds")
    args = parser.parse_args()
    schema = f"soak_{secrets.token_hex(4)}"
    joiner = "&" if "?" in args.url else "?"
    engine = create_engine(f"{args.url}{joiner}schema={schema}")
    await engine.open()
    admin = await asyncpg.connect(args.url)
    try:
        service = TaskService(engine)
        await service.register_queue(QueueConfig(name="soak", retention_s=args.retention))
        specs = [TaskSpec(queue="soak", data={"n": n}) for n in range(BATCH)]
        start = time.monotonic()
        end = start + args.minutes * 60
        next_sample = start
        done = 0
        samples: list[dict[str, int]] = []
        async with Sweeper(engine):
            while (now := time.monotonic()) < end:
                if now >= next_sample:
                    samples.append(await sample(admin, schema, now - start, done))
                    next_sample += 30
                await service.put_many(specs)
                tasks = await service.take(["soak"], size=BATCH)
                await service.complete_many(
                    [Completion(t.task_id, t.lease_id or "", RESULT) for t in tasks]
                )
                done += len(tasks)
                await asyncio.sleep(max(0.0, start + done / args.rate - time.monotonic()))
        samples.append(await sample(admin, schema, time.monotonic() - start, done))
        half = samples[len(samples) // 2]
        print("growth over the second half, per relation (bytes):")
        for name, size in samples[-1].items():
            print(f"  {name:24} {size - half.get(name, 0):+12,}")
        grown = unbounded(half, samples[-1])
        if grown:
            print(f"FAIL: still growing after the steady state: {', '.join(grown)}")
            return 1
        print(
            f"OK: no relation grew more than {GROWTH_TOLERANCE:.0%} (or"
            f" {GROWTH_SLACK_BYTES >> 20} MiB) over the second half"
        )
        return 0
    finally:
        await engine.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
