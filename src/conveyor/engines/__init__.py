"""Storage engines behind one interface; `create_engine` picks one by URL."""

from __future__ import annotations

from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from conveyor.domain.clock import Clock, system_clock
from conveyor.engines.engine import Engine
from conveyor.errors import InvalidInput

__all__ = ["Engine", "create_engine"]


def create_engine(url: str, *, clock: Clock = system_clock) -> Engine:
    """An unopened engine for `url`: `memory://`, `sqlite:///path/to/file.db`,
    `redis://host:port/db` (`?prefix=` names its keys), `redis+cluster://host:port,...`
    (a Redis Cluster, from any of its nodes) or `postgresql://host/db` (`?schema=` names
    its schema)."""
    parts = urlsplit(url)
    if parts.scheme == "memory":
        from conveyor.engines.memory import MemoryEngine

        return MemoryEngine(clock=clock)
    if parts.scheme == "sqlite":
        from conveyor.engines.sqlite import SqliteEngine

        path = parts.netloc + parts.path if parts.netloc else parts.path
        if not path or path == "/":
            raise InvalidInput(
                f"give the SQLite file's path, as in sqlite:///data/conveyor.db; got {url!r}",
                param="engine",
            )
        options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        return SqliteEngine(path, clock=clock, synchronous=options.get("synchronous", "normal"))
    if parts.scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        return _redis_engine(url, clock)
    if parts.scheme in ("postgresql", "postgres"):
        try:
            from conveyor.engines.postgres import PostgresEngine
        except ImportError as exc:
            raise InvalidInput(
                f"the PostgreSQL engine needs the asyncpg driver ({exc});"
                " install it with: pip install asyncpg",
                param="engine",
            ) from exc
        return PostgresEngine(url, clock=clock)
    raise InvalidInput(
        f"unknown engine URL {url!r}; use memory://, sqlite:///path/to/conveyor.db,"
        " redis://host:6379/0, redis+cluster://host:7000,host:7001 (Redis Cluster)"
        " or postgresql://host/db",
        param="engine",
    )


def _redis_engine(url: str, clock: Clock) -> Engine:
    """`redis://host:port/db?prefix=conveyor` (or `redis+cluster://host:port,host:port/`):
    the prefix is ours, the rest is redis-py's."""
    try:
        from conveyor.engines.redis import RedisEngine
    except ImportError as exc:
        raise InvalidInput(
            f"the Redis engine needs the redis driver ({exc}); install it with:"
            " pip install 'redis[hiredis]'",
            param="engine",
        ) from exc
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "prefix"]
    prefix = dict(parse_qsl(parts.query)).get("prefix") or "conveyor"
    plain = urlunsplit(parts._replace(query=urlencode(query)))
    return RedisEngine(plain, prefix=prefix, clock=clock)
