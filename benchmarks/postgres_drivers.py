"""Which PostgreSQL driver the engine uses: asyncpg against psycopg 3 (async), measured.

    pip install 'psycopg[binary]'   # asyncpg is the engine's own dependency; psycopg is not
    python -m benchmarks.postgres_drivers [--url postgresql://127.0.0.1:5432/test] [--ops 5000]

Each driver runs the statements of one put + take + complete (the shape of the engine's
transactions: an insert; BEGIN, a SKIP LOCKED pick, a claiming UPDATE, COMMIT; BEGIN, a row
read FOR UPDATE, a settling UPDATE, COMMIT) over a throw-away schema, from `--workers`
concurrent connections, and prints cycles per second and the client's CPU time per cycle
(the steadier figure on a machine shared with other work). Both drivers prepare their
statements (psycopg from the first use, as asyncpg always does).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import psycopg

SCHEMA = """
CREATE TABLE tasks (
    seq bigserial PRIMARY KEY,
    status int NOT NULL,
    data bytea NOT NULL,
    lease_id text,
    result bytea
);
CREATE INDEX ix_ready ON tasks (seq) WHERE status = 0;
"""
PUT = "INSERT INTO tasks (status, data) VALUES (0, $1)"
PICK = "SELECT seq FROM tasks WHERE status = 0 ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"
CLAIM = (
    "UPDATE tasks SET status = 2, lease_id = md5(random()::text)"
    " WHERE seq = $1 RETURNING seq, lease_id, data"
)
READ = "SELECT status, lease_id FROM tasks WHERE seq = $1 FOR UPDATE"
SETTLE = "UPDATE tasks SET status = 3, result = $1, lease_id = NULL WHERE seq = $2"
DATA = b'{"messages":[{"role":"user","content":"hello"}]}'
RESULT = b'{"status_code":200,"body":{"ok":true}}'


def _psycopg(sql: str) -> str:
    # psycopg takes %s placeholders; every statement above numbers its parameters in order
    for n in range(9, 0, -1):
        sql = sql.replace(f"${n}", "%s")
    return sql


async def asyncpg_cycle(conn: asyncpg.Connection) -> None:
    await conn.execute(PUT, DATA)
    async with conn.transaction():
        seq = await conn.fetchval(PICK)
        if seq is None:
            return
        await conn.fetchrow(CLAIM, seq)
    async with conn.transaction():
        await conn.fetchrow(READ, seq)
        await conn.execute(SETTLE, RESULT, seq)


async def psycopg_cycle(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(_psycopg(PUT), (DATA,), prepare=True)
    async with conn.transaction():
        row = await (await conn.execute(_psycopg(PICK), prepare=True)).fetchone()
        if row is None:
            return
        seq = row[0]
        await (await conn.execute(_psycopg(CLAIM), (seq,), prepare=True)).fetchone()
    async with conn.transaction():
        await (await conn.execute(_psycopg(READ), (seq,), prepare=True)).fetchone()
        await conn.execute(_psycopg(SETTLE), (RESULT, seq), prepare=True)


async def measure(
    name: str,
    connect: Callable[[], Awaitable[Any]],
    cycle: Callable[[Any], Awaitable[None]],
    close: Callable[[Any], Awaitable[None]],
    ops: int,
    workers: int,
) -> float:
    conns = [await connect() for _ in range(workers)]
    try:
        for conn in conns:  # warm up: statements prepared, caches filled
            for _ in range(20):
                await cycle(conn)
        per_worker = ops // workers
        start = time.perf_counter()
        cpu = time.process_time()

        async def loop(conn: Any) -> None:
            for _ in range(per_worker):
                await cycle(conn)

        await asyncio.gather(*(loop(conn) for conn in conns))
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
    finally:
        for conn in conns:
            await close(conn)
    cycles = per_worker * workers
    rate = cycles / elapsed
    print(
        f"{name:10} {workers:3} connections: {rate:8.0f} put+take+complete/s,"
        f" {cpu / cycles * 1e6:6.0f} us of this process's CPU per cycle"
    )
    return rate


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--ops", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--synchronous-commit",
        default="off",
        help="off (default) leaves the disk's fsync out, so the drivers' own cost shows",
    )
    args = parser.parse_args()
    schema = f"bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(args.url)
    await admin.execute(f"CREATE SCHEMA {schema}; SET search_path = {schema}; {SCHEMA}")
    sync = args.synchronous_commit
    options = f"-c search_path={schema} -c synchronous_commit={sync}"

    async def a_connect() -> asyncpg.Connection:
        return await asyncpg.connect(
            args.url, server_settings={"search_path": schema, "synchronous_commit": sync}
        )

    async def a_close(conn: asyncpg.Connection) -> None:
        await conn.close()

    async def p_connect() -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(args.url, options=options, autocommit=True)

    async def p_close(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.close()

    try:
        for _ in range(args.rounds):
            for workers in (1, 8):
                await measure("asyncpg", a_connect, asyncpg_cycle, a_close, args.ops, workers)
                await measure("psycopg", p_connect, psycopg_cycle, p_close, args.ops, workers)
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
