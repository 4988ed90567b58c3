"""Running a verb's statements on a pooled connection: as one transaction, as statements
that commit on their own, or as reads; retried where that is safe."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from conveyor.engines.postgres.store import LOST
from conveyor.engines.postgres.tx import Tx
from conveyor.errors import EngineUnavailable, InvalidInput

log = logging.getLogger(__name__)

T = TypeVar("T")

RECONNECTS = 3  # a verb whose connection was lost before COMMIT is run again this often
RETRIES = 5  # and one the server rolled back (a deadlock, a serialization failure)
# what a statement that never reached a live server raises: the connection was closed
# already, or the server ended it before reading the statement
UNSENT: tuple[type[BaseException], ...] = (
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
)


async def write(pool: Any, op: Callable[[Tx], Awaitable[T]]) -> tuple[T, Tx]:
    """Run `op` in a transaction and commit it with its bookkeeping; its result and Tx.

    A connection lost before COMMIT rolled the transaction back, so the verb runs again
    on another connection; one lost during COMMIT leaves the outcome unknown, and raises
    EngineUnavailable.
    """
    for attempt in itertools.count():
        committing = False
        try:
            async with pool.acquire() as conn:
                await conn.execute("BEGIN")
                tx = Tx(conn)
                try:
                    result = await op(tx)
                    committing = True
                    await conn.execute(tx.commit_sql())
                except asyncio.CancelledError:
                    raise  # the pool rolls back when the connection comes back
                except BaseException:
                    if not committing and not conn.is_closed():
                        await conn.execute("ROLLBACK")
                    raise
        except LOST as exc:
            if committing or attempt >= RECONNECTS:
                raise EngineUnavailable(f"lost the PostgreSQL connection: {exc}") from exc
            log.info("PostgreSQL connection lost (%s); running the verb again", exc)
            continue
        except (asyncpg.PostgresError, UnicodeError) as exc:
            error = _refused(exc, attempt)
            if error is None:
                continue
            raise error from exc
        return result, tx
    raise AssertionError("unreachable")


def _refused(exc: asyncpg.PostgresError | UnicodeError, attempt: int) -> Exception | None:
    """What a verb the server refused raises, or None to run it again: one rolled back (a
    deadlock, a serialization failure) changed nothing."""
    if isinstance(exc, asyncpg.exceptions.TransactionRollbackError):
        if attempt < RETRIES:
            return None
        return EngineUnavailable(f"PostgreSQL rolled the verb back: {exc}")
    if isinstance(exc, asyncpg.DataError | UnicodeError):
        return InvalidInput(f"the store refused a value: {exc}")
    return EngineUnavailable(f"PostgreSQL refused the verb: {exc}")


async def once(pool: Any, op: Callable[[Tx], Awaitable[T]]) -> tuple[T, Tx]:
    """Run `op`, whose writes are single statements that commit on their own, with their
    counts (fast.py); its result and Tx (whose counts must be empty: none are written).

    A connection lost before the statement reached the server (the pool's connect, or a
    connection the server had already ended) runs it again; one lost while the server had
    it leaves the outcome unknown, and raises EngineUnavailable. A statement the server
    rolled back (a deadlock) changed nothing and runs again.
    """
    for attempt in itertools.count():
        sent = False
        try:
            async with pool.acquire() as conn:
                tx = Tx(conn)
                sent = not conn.is_closed()
                result = await op(tx)
        except LOST as exc:
            if (sent and not isinstance(exc, UNSENT)) or attempt >= RECONNECTS:
                raise EngineUnavailable(f"lost the PostgreSQL connection: {exc}") from exc
            log.info("PostgreSQL connection lost (%s); running the verb again", exc)
            continue
        except (asyncpg.PostgresError, UnicodeError) as exc:
            error = _refused(exc, attempt)
            if error is None:
                continue
            raise error from exc
        assert not tx.delta, "a one-statement verb counts in SQL"
        assert not tx.batches, "a one-statement verb counts in SQL"
        return result, tx
    raise AssertionError("unreachable")


async def read(pool: Any, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run the reads of `fn` on a pooled connection (each statement sees the latest
    commits); a lost connection is replaced and the read run again."""
    for attempt in itertools.count():
        try:
            async with pool.acquire() as conn:
                return await fn(conn)
        except LOST as exc:
            if attempt >= RECONNECTS:
                raise EngineUnavailable(f"lost the PostgreSQL connection: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise EngineUnavailable(f"PostgreSQL refused the read: {exc}") from exc
    raise AssertionError("unreachable")
