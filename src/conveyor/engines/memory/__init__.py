"""The in-memory engine."""

from conveyor.engines.memory.engine import MemoryEngine

__all__ = ["MemoryEngine"]
