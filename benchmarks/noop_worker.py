"""A worker handler that does nothing, for the server benchmarks.

conveyor worker benchmarks.noop_worker:handle --queues bench --concurrency 16
"""

from __future__ import annotations

from conveyor.sdk import LeasedTask


async def handle(task: LeasedTask) -> dict[str, bool]:
    """Complete at once."""
    return {"ok": True}
