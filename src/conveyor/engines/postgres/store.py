"""Connections to one PostgreSQL schema: the URL, the pool, the schema and its migration."""

from __future__ import annotations

import re
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from conveyor.engines.postgres import schema as schema_sql
from conveyor.errors import EngineUnavailable, InvalidInput

SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,53}")
DEFAULT_POOL_SIZE = 10
CONNECT_TIMEOUT_S = 10.0

# what a connection lost (to a restart, a terminated backend, a network fault) raises
LOST: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    OSError,  # TimeoutError and ConnectionError among them
)


class Target(NamedTuple):
    """Where the engine keeps its tables: the server's DSN, a schema, the pool's size."""

    dsn: str
    schema: str
    pool_size: int
    display: str  # the URL without its password, for messages

    @property
    def channel(self) -> str:
        """The NOTIFY channel of this schema's servers."""
        return f"conveyor_{self.schema}"


def parse_url(url: str) -> Target:
    """Read `postgresql://…[?schema=NAME][&pool_size=N]`; other parameters go to asyncpg
    (which passes unknown ones to the server as settings, e.g. synchronous_commit=off)."""
    parts = urlsplit(url)
    options: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ("schema", "pool_size"):
            options[key] = value
        else:
            rest.append((key, value))
    schema = options.get("schema", "public")
    if not SCHEMA_NAME.fullmatch(schema):
        raise InvalidInput(
            "schema must be 1-54 lowercase letters, digits or '_', not starting with a digit;"
            f" got {schema!r:.80}",
            param="engine",
        )
    try:
        pool_size = int(options.get("pool_size", DEFAULT_POOL_SIZE))
    except ValueError:
        pool_size = 0
    if not 1 <= pool_size <= 1_000:
        raise InvalidInput(
            f"pool_size must be an integer from 1 to 1000, got {options['pool_size']!r:.80}",
            param="engine",
        )
    scheme = "postgresql"
    dsn = urlunsplit((scheme, parts.netloc, parts.path, urlencode(rest), ""))
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username
    display = urlunsplit((scheme, f"{user}@{netloc}" if user else netloc, parts.path, "", ""))
    return Target(dsn, schema, pool_size, display)


def server_settings(target: Target) -> dict[str, str]:
    """Settings every connection starts with."""
    return {
        "search_path": target.schema,
        "application_name": f"conveyor {target.schema}",
        # the engine writes string literals itself (tx.py): they must mean what they say
        "standard_conforming_strings": "on",
        # every statement is small and indexed; compiling one would cost more than it runs
        "jit": "off",
    }


async def connect(target: Target) -> Any:
    """One connection to the schema (which may not exist yet)."""
    return await asyncpg.connect(
        target.dsn, server_settings=server_settings(target), timeout=CONNECT_TIMEOUT_S
    )


async def _no_reset(_conn: Any) -> None:
    """The pool's reset: asyncpg rolls back an open transaction itself; nothing else
    changes session state, so the default reset query (a round trip) is not needed."""


async def create_pool(target: Target) -> Any:
    """The pool every verb runs on."""
    return await asyncpg.create_pool(
        target.dsn,
        min_size=1,
        max_size=target.pool_size,
        server_settings=server_settings(target),
        timeout=CONNECT_TIMEOUT_S,
        reset=_no_reset,
    )


async def migrate(conn: Any, schema: str) -> None:
    """Create the schema, or bring it up to date, or refuse one from a newer Conveyor.

    An advisory lock on the schema's name makes servers starting together take turns.
    """
    async with conn.transaction():
        await conn.execute(schema_sql.MIGRATION_LOCK, f"conveyor:{schema}")
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(schema_sql.SCHEMA_VERSION_TABLE)
        version = await conn.fetchval(schema_sql.SELECT_SCHEMA_VERSION) or 0
        if version > schema_sql.SCHEMA_VERSION:
            raise EngineUnavailable(
                f"schema {schema!r} was written by a newer Conveyor (schema version"
                f" {version}); upgrade Conveyor"
            )
        for migration in schema_sql.MIGRATIONS[version:]:
            await conn.execute(migration)
        if version < schema_sql.SCHEMA_VERSION:
            await conn.execute(
                schema_sql.SET_SCHEMA_VERSION.format(version=schema_sql.SCHEMA_VERSION)
            )


async def fetch_planned(conn: Any, sql: str, *args: Any) -> list[Any]:
    """Rows of `sql`, planned for these arguments.

    asyncpg prepares and caches every statement, and after a few executions PostgreSQL may
    keep one plan made without the arguments' values. For a listing that plan can walk
    the primary key in seq order and filter, which reads the whole table to list a small
    queue. A statement prepared afresh is planned with its arguments: one round trip more,
    for reads that are not on a hot path.
    """
    statement = await conn.prepare(sql)
    rows: list[Any] = await statement.fetch(*args)
    return rows
