"""Rows of the tasks table read back as domain values (shared with PostgreSQL)."""

from conveyor.engines._rows import Row, RowState, decode_any, decode_backoff, encode, to_task

__all__ = ["Row", "RowState", "decode_any", "decode_backoff", "encode", "to_task"]
