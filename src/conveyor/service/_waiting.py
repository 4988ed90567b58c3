"""Waiting for the first of a stop signal, a wake-up, or a timeout, for background loops."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


async def pause(stop: asyncio.Event, wake: Awaitable[None], timeout_s: float) -> None:
    """Return when `stop` is set, `wake` finishes, or `timeout_s` passes, whichever is first.

    Both waiters are cancelled and awaited before returning, so nothing is left running.
    """
    waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake)}
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
