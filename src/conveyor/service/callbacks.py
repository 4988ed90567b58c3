"""Delivering callbacks: the dispatcher that drains the engine's outbox, and the URL policy.

Delivery is at-least-once: a callback is claimed under a short hold, POSTed with an HMAC
signature, and settled; a server that dies mid-delivery leaves it to fall due again.
Connection errors, 408/425/429 and 5xx are retried with backoff (honouring Retry-After)
until `give_up_after_s` after the task ended; other answers end the attempt for good.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from conveyor.domain.callbacks import (
    RETRY_STATUSES,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    is_public,
    payload,
    retry_delay_s,
    signature,
)
from conveyor.engines.engine import DueCallback, Engine
from conveyor.errors import InvalidInput
from conveyor.service._waiting import pause

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

# (url, body, headers) -> (HTTP status, Retry-After seconds or None); raises OSError-likes
Poster = Callable[[str, bytes, dict[str, str]], Awaitable[tuple[int, float | None]]]


class CallbackPolicy:
    """Refuses callback URLs that reach loopback, private or link-local addresses."""

    def __init__(self, *, allow_private: bool = False, cache_s: float = 60.0) -> None:
        self.allow_private = allow_private
        self._cache_s = cache_s
        self._resolved: dict[str, tuple[float, list[str]]] = {}

    async def check(self, url: str) -> None:
        """Raise InvalidInput unless `url` may receive callbacks."""
        if self.allow_private:
            return
        parts = urlsplit(url)
        host = parts.hostname or ""
        cached = self._resolved.get(host)
        if cached is not None and cached[0] > time.monotonic():
            addresses = cached[1]
        else:
            addresses = await _addresses(host, parts.port)
            if len(self._resolved) > 10_000:
                self._resolved.clear()
            self._resolved[host] = (time.monotonic() + self._cache_s, addresses)
        for address in addresses:
            if not is_public(address):
                raise InvalidInput(
                    f"callback_url {url!r} reaches {address}, a loopback, private or"
                    " link-local address; start the server with --allow-private-callbacks"
                    " to allow it",
                    param="callback_url",
                )


async def _addresses(host: str, port: int | None) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port or 443, type=socket.SOCK_STREAM
        )
    except OSError:
        raise InvalidInput(
            f"callback_url host {host!r} does not resolve", param="callback_url"
        ) from None
    return sorted({str(info[4][0]) for info in infos})


class CallbackDispatcher:
    """Owns the delivery loop: `async with CallbackDispatcher(...)` starts and stops it."""

    def __init__(
        self,
        engine: Engine,
        *,
        secret: bytes,
        policy: CallbackPolicy,
        give_up_after_s: float = 1800.0,
        hold_s: float = 30.0,
        concurrency: int = 32,
        post: Poster | None = None,
    ) -> None:
        self._engine = engine
        self._secret = secret
        self._policy = policy
        self._give_up_after_s = give_up_after_s
        self._hold_s = hold_s
        self._slots = asyncio.Semaphore(concurrency)
        self._post = post
        self._session: aiohttp.ClientSession | None = None
        self._stop = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self.delivered = 0
        self.failed = 0

    async def __aenter__(self) -> CallbackDispatcher:
        if self._post is None:
            import aiohttp  # here, not at module level: the CLI never delivers callbacks

            timeout = aiohttp.ClientTimeout(total=10)
            self._session = aiohttp.ClientSession(timeout=timeout)
            self._post = self._aiohttp_post
        self._loop_task = asyncio.create_task(self._run(), name="conveyor-callbacks")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._loop_task is not None:
            await self._loop_task
        # deliveries under way finish within their timeout; unclaimed ones wait for a restart
        if self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self._slots.acquire()
                self._slots.release()
                due = await self._engine.claim_callbacks(limit=64, hold_s=self._hold_s)
            except Exception:
                log.exception("claiming callbacks failed; retrying in 1 s")
                due = []
            for callback in due:
                await self._slots.acquire()
                task = asyncio.create_task(self._deliver(callback))
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)
            if not due:
                # woken when a task ends; at least once a second for retries coming due
                await pause(self._stop, self._engine.wait_for_callbacks(1.0), 1.0)

    async def _deliver(self, callback: DueCallback) -> None:
        try:
            retry_at = await self._attempt(callback)
            await self._engine.settle_callback(callback.task.task_id, retry_at=retry_at)
        except Exception:
            log.exception("callback of task %s: settling failed", callback.task.task_id)
        finally:
            self._slots.release()

    async def _attempt(self, callback: DueCallback) -> float | None:
        """One delivery attempt; when to try again, or None when done or given up."""
        task = callback.task
        url = task.callback_url
        assert url is not None
        assert self._post is not None
        body = payload(task)
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: signature(self._secret, stamp, body),
        }
        retry_after: float | None = None
        import aiohttp

        try:
            await self._policy.check(url)  # again at delivery: DNS may have changed
            status, retry_after = await self._post(url, body, headers)
        except InvalidInput as exc:
            log.warning("callback of task %s refused: %s", task.task_id, exc.message)
            self.failed += 1
            return None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            status = 0
            log.info("callback of task %s to %s: %s", task.task_id, url, exc)
        if 200 <= status < 300:
            self.delivered += 1
            return None
        ended_at = task.completed_at or time.time()
        if (
            status == 0 or status in RETRY_STATUSES
        ) and time.time() < ended_at + self._give_up_after_s:
            return time.time() + retry_delay_s(callback.attempt, retry_after)
        self.failed += 1
        log.warning("callback of task %s to %s given up (status %s)", task.task_id, url, status)
        return None

    async def _aiohttp_post(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, float | None]:
        assert self._session is not None
        async with self._session.post(
            url, data=body, headers=headers, allow_redirects=False
        ) as response:
            await response.read()
            retry_after = response.headers.get("Retry-After")
            seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
            return response.status, seconds
