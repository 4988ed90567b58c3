"""An example worker handler: echoes the prompt back, streaming it word by word.

.venv/bin/conveyor worker examples.echo:handle --queues demo
"""

from __future__ import annotations

from typing import Any

from conveyor.sdk import LeasedTask, emit


async def handle(task: LeasedTask) -> dict[str, Any]:
    """Reply with the prompt; for a streaming caller, send each word as it goes."""
    prompt = str((task.data or {}).get("prompt", ""))
    for word in prompt.split():
        await emit("token", {"text": word})
    return {"echo": prompt}
