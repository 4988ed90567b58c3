"""The periodic loop: runs its work every interval, survives failures, stops at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor.service.periodic import Periodic


async def test_runs_repeatedly_and_survives_failures(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    enough = asyncio.Event()

    async def work() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        if len(calls) == 4:
            enough.set()

    async with Periodic(work, 0.01, name="test-loop"):
        await asyncio.wait_for(enough.wait(), 10)
    assert "test-loop failed" in caplog.text
    assert "boom" in caplog.text


async def test_stops_at_once_even_mid_call() -> None:
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(60)

    begin = time.monotonic()
    async with Periodic(slow, 0.001, name="slow-loop"):
        await started.wait()
    assert time.monotonic() - begin < 5

    async with Periodic(slow, 3600, name="idle-loop"):
        pass  # waiting for its first interval; leaving does not wait for it
