"""Faults the Redis engine tests inject into its connection."""

from __future__ import annotations

import pytest

from conveyor.engines.redis.client import SHAS
from conveyor.engines.redis.multiplex import Multiplexer, ReplyLost


def reply_lost_once(monkeypatch: pytest.MonkeyPatch, script: str) -> list[bytes]:
    """Make the first exchange carrying `script` run on Redis, then lose its reply as a
    dropped connection does (the multiplexer's ReplyLost); the exchanges dropped."""
    original = Multiplexer.exchange
    dropped: list[bytes] = []

    async def exchange(self: Multiplexer, packed: bytes, count: int) -> list[object]:
        replies = await original(self, packed, count)  # Redis ran it
        if SHAS[script].encode() in packed and not dropped:
            dropped.append(packed)
            raise ReplyLost("Redis closed the connection (after the commands were sent)")
        return replies

    monkeypatch.setattr(Multiplexer, "exchange", exchange)
    return dropped
