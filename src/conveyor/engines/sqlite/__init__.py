"""The SQLite engine: the embedded, durable default."""

from conveyor.engines.sqlite.engine import SqliteEngine

__all__ = ["SqliteEngine"]
