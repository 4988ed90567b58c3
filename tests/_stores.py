"""Fresh stores of each engine that a `conveyor serve` process runs on for a whole test
session (tests/http, tests/sdk): the session's servers run once per engine."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests._server import running_server
from tests.conftest import (
    POSTGRES_URL,
    REDIS_URL,
    delete_redis_keys,
    drop_postgres_schemas,
    require_server,
)

SERVER_ENGINES = ["sqlite", "redis", "postgres"]


def _with_param(url: str, name: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{name}={value}"


@contextmanager
def session_store(engine: str) -> Iterator[tuple[str, ...]]:
    """The `--engine` arguments of a fresh store of `engine` that outlives single tests
    (the per-test stores of tests/conftest.py are removed after each test); removed when
    the session's server stops."""
    if engine == "sqlite":  # the server's default, in its data directory
        yield ()
    elif engine == "redis":
        require_server("Redis", REDIS_URL)
        prefix = f"shttp{secrets.token_hex(6)}"
        try:
            yield ("--engine", _with_param(REDIS_URL, "prefix", prefix))
        finally:
            delete_redis_keys([prefix])
    elif engine == "postgres":
        require_server("PostgreSQL", POSTGRES_URL)
        schema = f"shttp_{secrets.token_hex(6)}"
        try:
            yield ("--engine", _with_param(POSTGRES_URL, "schema", schema))
        finally:
            drop_postgres_schemas([schema])
    else:
        raise AssertionError(engine)


@contextmanager
def server_on(engine: str, data_dir: Path) -> Iterator[str]:
    """`conveyor serve` on a fresh session store of `engine`; its base URL."""
    with session_store(engine) as engine_args, running_server(data_dir, *engine_args) as url:
        yield url
