"""The PostgreSQL engine: many server processes over one shared schema."""

from conveyor.engines.postgres.engine import PostgresEngine

__all__ = ["PostgresEngine"]
