"""The Redis engine (`redis://host:port/db?prefix=conveyor`)."""

from conveyor.engines.redis.engine import RedisEngine

__all__ = ["RedisEngine"]
