"""A put that has returned survives the process being killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.domain.states import TaskStatus
from conveyor.engines.sqlite import SqliteEngine

PRODUCER = Path(__file__).with_name("_crash_producer.py")
TOTAL = 10_000
KILL_AFTER = 3_000


def _put_until_killed(path: Path) -> list[str]:
    """Run the producer, SIGKILL it part-way, and return every id it reported as put."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    reported: list[str] = []
    with subprocess.Popen(
        [sys.executable, str(PRODUCER), str(path), str(TOTAL)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            reported.append(line.strip())
            if len(reported) == KILL_AFTER:
                child.send_signal(signal.SIGKILL)
                break
        # ids already in the pipe were reported as put too
        reported.extend(line.strip() for line in child.stdout if line.strip())
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, "the producer finished before it was killed"
    assert KILL_AFTER <= len(reported) < TOTAL
    return reported


@pytest.mark.slow
def test_every_returned_put_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    reported = _put_until_killed(path)
    asyncio.run(_check_all_stored(path, reported))


async def _check_all_stored(path: Path, reported: list[str]) -> None:
    engine = SqliteEngine(path)
    await engine.open()
    try:
        for task_id in reported:
            task = await engine.get_task(task_id)
            assert task.status is TaskStatus.QUEUED
        stats = await engine.queue_stats("crash")
        stored = stats.total(TaskStatus.QUEUED)
        # the kill may land after a commit but before its id was printed: never fewer
        assert len(reported) <= stored <= len(reported) + 1
        page = await engine.list_tasks("crash", limit=1_000)
        assert page.tasks[0].task_id == reported[0]
    finally:
        await engine.close()
