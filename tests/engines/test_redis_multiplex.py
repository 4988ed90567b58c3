"""The Redis multiplexer against a fake server: a server that stops answering is given up.

No Redis needed: the fake answers +OK to each command until told to go quiet.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from conveyor.engines.redis.client import pack
from conveyor.engines.redis.multiplex import Late, Multiplexer


class Quiet:
    """A server that answers +OK to each command while `answering`."""

    def __init__(self) -> None:
        self.answering = True

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            commands = data.count(b"\r\n*") + data.startswith(b"*")
            if self.answering:
                writer.write(b"+OK\r\n" * commands)
        writer.close()


@pytest.fixture
async def quiet() -> AsyncIterator[tuple[Quiet, int]]:
    fake = Quiet()
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield fake, port
    server.close()
    await server.wait_closed()


async def test_a_server_that_stops_answering_is_given_up(quiet: tuple[Quiet, int]) -> None:
    fake, port = quiet
    mux = Multiplexer({"host": "127.0.0.1", "port": port, "protocol": 2}, reply_timeout_s=0.2)
    try:
        assert await mux.exchange(pack(("PING",)), 1) == [b"OK"]
        fake.answering = False
        first = asyncio.ensure_future(mux.exchange(pack(("PING",)), 1))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(mux.exchange(pack(("PING",)), 1))
        with pytest.raises(Late):
            await first
        with pytest.raises(RedisConnectionError):  # not late itself: lost with the connection
            await second
        fake.answering = True
        assert await mux.exchange(pack(("PING",)), 1) == [b"OK"]  # a fresh connection
    finally:
        await mux.close()


async def test_a_cancelled_caller_leaves_the_connection_in_step(quiet: tuple[Quiet, int]) -> None:
    _, port = quiet
    mux = Multiplexer({"host": "127.0.0.1", "port": port, "protocol": 2})
    try:
        await mux.exchange(pack(("PING",)), 1)
        cancelled = asyncio.ensure_future(mux.exchange(pack(("PING",)) * 2, 2))
        others = [mux.exchange(pack(("PING",)), 1) for _ in range(5)]
        await asyncio.sleep(0)
        cancelled.cancel()
        assert await asyncio.gather(*others) == [[b"OK"]] * 5
    finally:
        await mux.close()
