"""The forwarding worker: each task's `data` POSTed to an OpenAI-compatible upstream.

`Forwarder` is a Worker handler: `async with Forwarder(url) as forwarder:
await forwarder.worker(["batch"]).run()`. It POSTs the task's data as JSON to the
upstream URL joined with the task's endpoint (`join_url`), and records the upstream's
status and body as the task's result, whatever the status: a final 400 is the result
`{status_code: 400, body: <the upstream's error>}`, so that a batch's error file shows it.

- **Retries.** Connection errors, timeouts, 408, 429 and 5xx are retried up to
  `max_attempts` attempts in all, after an exponential backoff with jitter, or after what
  the upstream asks in `retry-after-ms` or `Retry-After` (seconds or an HTTP date; at most
  `max_retry_after_s`). When the attempts run out, the last answer is recorded as the
  result; a connection error or timeout on the last attempt raises `UpstreamError`, so the
  task fails this attempt and retries as its queue says.
- **Slowing down.** Requests in flight are limited by an `AdaptiveLimit`, which halves on
  a 429 and grows back by one per round of answers; the worker asks it (`capacity`)
  before each take, so it takes no more tasks than it can run.
- **Rate.** With `rpm`, a token bucket spaces all requests (retries too) evenly.
- **Streaming.** A task whose data has `"stream": true` is sent as it is (for chat and text
  completions with `stream_options.include_usage` added unless the data has
  `stream_options`); each message of the upstream's stream is relayed as a task event
  (named as the upstream names it, else `chunk`), and the result is the stream folded
  back into one body (`conveyor.executors._streams`). A stream that breaks after its first
  chunk is not retried here (its events would repeat): the task fails this attempt.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

import aiohttp
import msgspec

from conveyor.domain.events import MAX_EVENT_NAME, MAX_EVENTS_PER_APPEND
from conveyor.domain.tasks import TaskResult
from conveyor.errors import ConveyorError, InvalidInput
from conveyor.executors._limits import AdaptiveLimit, RateLimit
from conveyor.executors._streams import DONE, SseReader, assembler_for
from conveyor.sdk import _context
from conveyor.sdk._models import LeasedTask, TaskEvent
from conveyor.sdk._worker import Worker

log = logging.getLogger("conveyor.forward")

DEFAULT_QUEUE = "batch"
DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MAX_ATTEMPTS = 5
RETRIED_STATUSES = frozenset({408, 429})  # and every 5xx
CHUNK_EVENT = "chunk"
MAX_LOGGED_BODY = 200

_encode = msgspec.json.Encoder().encode
_PATH = re.compile(r"/(?!/)[^\s#]*")  # a path (and query) on the upstream, not a URL


class UpstreamError(ConveyorError):
    """The upstream could not be reached or its stream broke; the attempt failed."""

    code = "upstream_error"


def join_url(base: str, endpoint: str) -> str:
    """`base` + `endpoint`, with one `/v1` if both have it (`…/v1` + `/v1/x` is `…/v1/x`)."""
    base = base.rstrip("/")
    if base.endswith("/v1") and (endpoint == "/v1" or endpoint.startswith("/v1/")):
        endpoint = endpoint.removeprefix("/v1")
    return base + endpoint


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait the upstream asks for in `retry-after-ms` or `Retry-After`, if any."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:  # an HTTP date is GMT
        return None
    return max(0.0, at.timestamp() - (time.time() if now is None else now))


def is_retried(status: int) -> bool:
    """True for the answers worth another attempt: 408, 429 and 5xx."""
    return status in RETRIED_STATUSES or status >= 500


class Forwarder:
    """A Worker handler that forwards each task to an OpenAI-compatible upstream.

    Use as an async context manager: it owns one aiohttp session, with at most
    `concurrency` connections. `upstream_key` goes out as `Authorization: Bearer`.
    `request_timeout_s` bounds each attempt, a streamed answer included.
    """

    def __init__(
        self,
        url: str,
        *,
        upstream_key: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        request_timeout_s: float = DEFAULT_TIMEOUT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        rpm: float | None = None,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        max_retry_after_s: float = 60.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise InvalidInput(f"the upstream URL must start with http:// or https://, got {url!r}")
        if request_timeout_s <= 0:
            raise InvalidInput(f"request_timeout_s must be above 0, got {request_timeout_s}")
        if max_attempts < 1:
            raise InvalidInput(f"max_attempts must be 1 or more, got {max_attempts}")
        self.url = url.rstrip("/")
        self.request_timeout_s = request_timeout_s
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.max_retry_after_s = max_retry_after_s
        self.limit = AdaptiveLimit(concurrency)
        self.rate = RateLimit(rpm) if rpm else None
        self._headers = {"Content-Type": "application/json"}
        if upstream_key:
            self._headers["Authorization"] = f"Bearer {upstream_key}"
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Forwarder:
        self._session = aiohttp.ClientSession(
            headers=self._headers,
            connector=aiohttp.TCPConnector(limit=self.limit.maximum),
            timeout=aiohttp.ClientTimeout(total=self.request_timeout_s),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def capacity(self) -> int:
        """How many tasks the worker can run at once now (the worker's `capacity`)."""
        return self.limit.allowed

    def worker(self, queues: Sequence[str] = (DEFAULT_QUEUE,), **options: Any) -> Worker:
        """A `Worker` that runs this handler for `queues` (name or name:level), slowed by it.

        `options` are the Worker's (strategy, lease_s, server, api_key, …); its concurrency
        is this forwarder's.
        """
        handlers = {queue.partition(":")[0]: self for queue in queues}
        worker = Worker(
            handlers,
            queues=list(queues),
            concurrency=self.limit.maximum,
            capacity=self.capacity,
            **options,
        )
        self.limit.on_grow(worker.wake)
        return worker

    async def __call__(self, task: LeasedTask) -> TaskResult:
        """Forward the task; the upstream's status and body (streamed: folded) as the result."""
        if not _is_path(task.endpoint):
            message = (
                "the task's endpoint must be a path such as /v1/chat/completions,"
                f" got {task.endpoint!r}"
            )
            log.info("task %s: not forwarded: %s", task.task_id, message)
            return TaskResult(status_code=400, body=_error_body(message, "invalid_endpoint"))
        url = join_url(self.url, task.endpoint)
        data = task.data
        streaming = isinstance(data, dict) and data.get("stream") is True
        if streaming:
            data = _streaming_body(task.endpoint, data)
        payload = _encode(data)
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self.max_attempts
            if self.rate is not None:
                await self.rate.acquire()
            ticket = await self.limit.acquire()
            status = 0  # the upstream's status, once its answer has been read
            try:
                async with self._http().post(url, data=payload, allow_redirects=False) as response:
                    if last or not is_retried(response.status):
                        if (
                            streaming
                            and response.status < 300
                            and response.content_type == "text/event-stream"
                        ):
                            result = await self._relay(task, response)
                        else:
                            result = await self._answer(task, response, attempt)
                        status = response.status
                        return result
                    wait_s = self._wait_s(attempt, response.headers)
                    body = await response.read()  # so that the connection can be used again
                    status = response.status
                    log.info(
                        "task %s: upstream answered %d (attempt %d of %d); again in %.2f s: %s",
                        *(task.task_id, status, attempt, self.max_attempts, wait_s),
                        body[:MAX_LOGGED_BODY].decode(errors="replace"),
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                if last:
                    raise UpstreamError(
                        f"{url}: {exc!r} (attempt {attempt} of {self.max_attempts})"
                    ) from exc
                wait_s = self._wait_s(attempt, None)
                log.info(
                    "task %s: upstream error %r (attempt %d of %d); again in %.2f s",
                    *(task.task_id, exc, attempt, self.max_attempts, wait_s),
                )
            finally:
                self.limit.release(
                    ticket, throttled=status == 429, succeeded=status > 0 and not is_retried(status)
                )
            await asyncio.sleep(wait_s)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise ConveyorError("use the Forwarder as `async with Forwarder(url) as forwarder:`")
        return self._session

    def _wait_s(self, attempt: int, headers: Mapping[str, str] | None) -> float:
        """The pause before the next attempt: what the upstream asks, else a backoff."""
        asked = None if headers is None else retry_after_s(headers)
        if asked is not None:
            asked = min(asked, self.max_retry_after_s)
            return asked * random.uniform(1.0, 1.1)  # never sooner than asked
        backoff = min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** (attempt - 1))
        # jittered, so that tasks refused together do not come back together
        return backoff * random.uniform(0.5, 1.0)

    async def _answer(
        self, task: LeasedTask, response: aiohttp.ClientResponse, attempt: int
    ) -> TaskResult:
        content = await response.read()
        body = _decode(content)
        if response.status >= 400:
            log.info(
                "task %s: upstream answered %d (attempt %d of %d); recorded: %s",
                *(task.task_id, response.status, attempt, self.max_attempts),
                content[:MAX_LOGGED_BODY].decode(errors="replace"),
            )
        return TaskResult(status_code=response.status, body=body)

    async def _relay(self, task: LeasedTask, response: aiohttp.ClientResponse) -> TaskResult:
        """Relay the upstream's stream as task events; the stream folded into one body."""
        assembler = assembler_for(task.endpoint)
        reader = SseReader()
        status = response.status
        async with _Relay(task) as relay:
            try:
                pending = b""
                # by chunks, not readline: aiohttp refuses lines over 64 KiB
                async for block in response.content.iter_any():
                    *lines, pending = (pending + block).split(b"\n")
                    messages = [reader.feed(line.decode(errors="replace")) for line in lines]
                    for message in messages:
                        if message is None:
                            continue
                        event, data = message
                        if data == DONE:
                            return TaskResult(status_code=status, body=assembler.result())
                        relay.add(event, data)
                        error = _stream_error(data)
                        if error is not None:
                            log.info("task %s: upstream stream error: %s", task.task_id, data)
                            return TaskResult(status_code=error, body=data)
                        assembler.add(data)
                last = reader.feed(pending.decode(errors="replace")) if pending else None
                last = last or reader.finish()
                if last is not None and last[1] != DONE:
                    relay.add(*last)
                    assembler.add(last[1])
            except (aiohttp.ClientError, TimeoutError) as exc:
                if relay.count:  # a retry would repeat the events already relayed
                    raise UpstreamError(
                        f"the upstream's stream broke after {relay.count} chunk(s): {exc!r}"
                    ) from exc
                raise
        return TaskResult(status_code=status, body=assembler.result())


class _Relay:
    """Sends a stream's chunks as task events in the background, batched.

    The read loop only appends; one sender sends what has piled up, up to the server's
    limit per request, so a slow Conveyor server never holds up the upstream's stream.
    Leaving the block sends what is left, after an error too; a cancel drops it.
    """

    def __init__(self, task: LeasedTask) -> None:
        self._task = task
        self._client = _context._context().client  # the worker's own client
        self._pending: list[TaskEvent] = []
        self._more = asyncio.Event()
        self._closing = False
        self._sender: asyncio.Task[None] | None = None
        self.count = 0

    async def __aenter__(self) -> _Relay:
        self._sender = asyncio.create_task(self._send(), name=f"relay-{self._task.task_id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._sender is not None
        if exc is not None and not isinstance(exc, Exception):  # cancelled: drop the rest
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
            return
        self._closing = True
        self._more.set()
        if exc is None:
            await self._sender  # raises what stopped the sender (LeaseLost, …)
            return
        # the stream broke: what came before it is still worth showing
        try:
            await self._sender
        except Exception as send_error:
            log.warning("task %s: events not relayed: %r", self._task.task_id, send_error)

    def add(self, event: str, data: Any) -> None:
        """Queue one chunk; raises at once if sending has failed."""
        if self._sender is not None and self._sender.done():
            self._sender.result()  # raises its error
            raise ConveyorError("the event relay stopped")
        if not event or len(event) > MAX_EVENT_NAME or not event.isprintable():
            event = CHUNK_EVENT
        self._pending.append(TaskEvent(event=event, data=data))
        self.count += 1
        self._more.set()

    async def _send(self) -> None:
        task = self._task
        while True:
            await self._more.wait()
            self._more.clear()
            while self._pending:
                batch = self._pending[:MAX_EVENTS_PER_APPEND]
                del self._pending[:MAX_EVENTS_PER_APPEND]
                await self._client.emit(task.task_id, task.lease_id, batch)
            if self._closing:
                return


def _is_path(endpoint: str) -> bool:
    """True for a path on the upstream, with no `..` to climb out of the URL's own path."""
    return bool(_PATH.fullmatch(endpoint)) and ".." not in endpoint.split("?", 1)[0].split("/")


def _streaming_body(endpoint: str, data: dict[str, Any]) -> dict[str, Any]:
    """The body to send: usage asked for in the last chunk of chat and text completions."""
    path = endpoint.split("?", 1)[0].rstrip("/")
    if path.endswith("/completions") and "stream_options" not in data:
        return {**data, "stream_options": {"include_usage": True}}
    return data


def _stream_error(data: Any) -> int | None:
    """The status an error message in a stream stands for (its code, else 500), or None."""
    if not isinstance(data, dict) or "error" not in data or data.get("choices"):
        return None
    error = data["error"]
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) and 400 <= code <= 599 else 500


def _decode(content: bytes) -> Any:
    """The upstream's body: JSON, else its text."""
    try:
        return msgspec.json.decode(content)
    except msgspec.DecodeError:
        return content.decode(errors="replace")


def _error_body(message: str, code: str) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
