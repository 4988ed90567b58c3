"""The forwarding worker against a real server and an OpenAI-compatible upstream in the test.

The upstream is an aiohttp app on a loopback port that records each request it receives
(path, body, Authorization, arrival time, requests in flight) and answers as the test says.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from conveyor import AsyncClient, Backoff, BackoffKind, TaskResult, TaskStatus, Worker
from conveyor.executors import Forwarder
from conveyor.sdk import LeasedTask, end_of
from tests._server import CONVEYOR, environment, free_port

Reply = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]
CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
NO_BACKOFF = Backoff(kind=BackoffKind.FIXED, base_s=0.0, cap_s=0.0, jitter=0.0)


@dataclass
class Received:
    """One request as the upstream saw it."""

    path: str
    body: Any
    authorization: str | None
    at: float  # time.monotonic() on arrival
    concurrent: int  # requests in flight, this one included


def chat_completion(content: str, model: str = "m") -> dict[str, Any]:
    """What an OpenAI-compatible server answers to a chat completion."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


EMBEDDING = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}],
    "model": "e",
    "usage": {"prompt_tokens": 1, "total_tokens": 1},
}
STREAM_CHUNKS = ["Hel", "lo", "!"]


def stream_chunk(content: str, *, last: bool, usage: bool) -> dict[str, Any]:
    """One chunk of a streamed chat completion (the last one finishes, with usage if asked)."""
    delta = {"role": "assistant", "content": content} if content == "Hel" else {"content": content}
    chunk: dict[str, Any] = {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "created": 1_700_000_001,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if last else None}],
    }
    if last and usage:
        chunk["usage"] = {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    return chunk


async def sse(request: web.Request, chunks: list[Any]) -> web.StreamResponse:
    """Answer with `chunks` as Server-Sent Events, then `[DONE]`."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for chunk in chunks:
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def openai_like(request: web.Request, body: Any) -> web.StreamResponse:
    """Chat completions (echoing the last message, streamed if asked) and embeddings."""
    if request.path == CHAT:
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = [
                stream_chunk(text, last=i == len(STREAM_CHUNKS) - 1, usage=usage)
                for i, text in enumerate(STREAM_CHUNKS)
            ]
            return await sse(request, chunks)
        said = body["messages"][-1]["content"]
        return web.json_response(chat_completion(f"echo: {said}", body.get("model", "m")))
    if request.path == EMBEDDINGS:
        return web.json_response(EMBEDDING)
    return web.json_response({"error": {"message": "no such route"}}, status=404)


@dataclass
class Upstream:
    """An OpenAI-compatible server that records what it receives; `reply` answers."""

    url: str = ""
    reply: Reply = openai_like
    received: list[Received] = field(default_factory=list)
    in_flight: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.in_flight += 1
        self.received.append(
            Received(
                path=request.path,
                body=json.loads(raw) if raw else None,
                authorization=request.headers.get("Authorization"),
                at=time.monotonic(),
                concurrent=self.in_flight,
            )
        )
        try:
            return await self.reply(request, self.received[-1].body)
        finally:
            self.in_flight -= 1

    def bodies(self, **match: Any) -> list[Received]:
        """The requests whose body has these fields."""
        return [r for r in self.received if all(r.body.get(k) == v for k, v in match.items())]


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """An upstream on a free loopback port, stopped after the test."""
    upstream = Upstream()
    app = web.Application()
    app.router.add_route("POST", "/{path:.*}", upstream.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    upstream.url = f"http://{host}:{port}"
    yield upstream
    await runner.cleanup()


async def drain(server: str, url: str, queue: str, **options: Any) -> Forwarder:
    """Run a forwarding worker on `queue` until it finds nothing left; its forwarder."""
    options.setdefault("backoff_base_s", 0.01)
    async with Forwarder(url, **options) as forwarder:
        worker = forwarder.worker([queue], server=server, handle_signals=False)
        worker.exit_when_drained = True
        await asyncio.wait_for(worker.run(), 60)
    return forwarder


async def result_of(client: AsyncClient, task_id: str) -> TaskResult | None:
    task = await client.get_task(task_id)
    assert task.status is TaskStatus.SUCCEEDED, (task.status, task.error)
    return task.result


def chat(content: str, model: str = "m", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


async def test_chat_completion_and_embeddings_are_forwarded_with_the_key(
    server: str, async_client: AsyncClient, queue: str, upstream: Upstream
) -> None:
    question = chat("hi", temperature=0)
    embed = {"model": "e", "input": "hi"}
    asked = await async_client.put(queue, question, endpoint=CHAT)
    embedded = await async_client.put(queue, embed, endpoint=EMBEDDINGS)

    await drain(server, upstream.url + "/v1", queue, upstream_key="sk-upstream")  # one /v1

    by_path = {r.path: r for r in upstream.received}
    assert set(by_path) == {CHAT, EMBEDDINGS}
    assert by_path[CHAT].body == question  # as put, nothing added
    assert by_path[EMBEDDINGS].body == embed
    assert {r.authorization for r in upstream.received} == {"Bearer sk-upstream"}
    assert await result_of(async_client, asked.task_id) == TaskResult(
        status_code=200, body=chat_completion("echo: hi")
    )
    assert await result_of(async_client, embedded.task_id) == TaskResult(body=EMBEDDING)


async def test_final_answers_are_recorded_as_the_upstream_gave_them(
    server: str, async_client: AsyncClient, queue: str, upstream: Upstream
) -> None:
    error = {"error": {"message": "model not found", "type": "invalid_request_error"}}

    async def reply(request: web.Request, body: Any) -> web.StreamResponse:
        if body["model"] == "missing":
            return web.json_response(error, status=400)
        return web.Response(text="plain words", status=201)

    upstream.reply = reply
    bad = await async_client.put(queue, chat("x", "missing"), endpoint=CHAT)
    text = await async_client.put(queue, chat("x"), endpoint=CHAT)
    nowhere = await async_client.put(queue, chat("x"))  # a task without an endpoint

    await drain(server, upstream.url, queue)

    assert len(upstream.received) == 2  # a 400 is final: not retried
    assert await result_of(async_client, bad.task_id) == TaskResult(status_code=400, body=error)
    assert await result_of(async_client, text.task_id) == TaskResult(
        status_code=201, body="plain words"
    )
    refused = await result_of(async_client, nowhere.task_id)
    assert refused is not None
    assert refused.status_code == 400
    assert refused.body["error"]["code"] == "invalid_endpoint"


async def test_a_503_is_retried_and_the_200_recorded(
    server: str, async_client: AsyncClient, queue: str, upstream: Upstream
) -> None:
    async def reply(request: web.Request, body: Any) -> web.StreamResponse:
        if len(upstream.received) == 1:
            return web.json_response({"error": {"message": "loading"}}, status=503)
        return await openai_like(request, body)

    upstream.reply = reply
    task = await async_client.put(queue, chat("again"), endpoint=CHAT)
    await drain(server, upstream.url, queue)
    assert len(upstream.received) == 2
    assert await result_of(async_client, task.task_id) == TaskResult(
        body=chat_completion("echo: again")
    )


async def test_retry_after_is_honoured_and_the_last_429_recorded_when_attempts_run_out(
    server: str, async_client: AsyncClient, queue: str, upstream: Upstream
) -> None:
    async def reply(request: web.Request, body: Any) -> web.StreamResponse:
        if body["model"] == "always-busy":
            headers = {"retry-after-ms": "100", "Retry-After": "9"}  # the finer one wins
            return web.json_response({"error": {"message": "busy"}}, status=429, headers=headers)
        if len(upstream.bodies(model="m")) == 1:
            return web.json_response({}, status=429, headers={"Retry-After": "1"})
        return await openai_like(request, body)

    upstream.reply = reply
    once = await async_client.put(queue, chat("later"), endpoint=CHAT)
    busy = await async_client.put(queue, chat("never", "always-busy"), endpoint=CHAT)

    await drain(server, upstream.url, queue, max_attempts=3)

    first, second = (r.at for r in upstream.bodies(model="m"))
    assert second - first >= 1.0  # waited what Retry-After asked, not the 10 ms backoff
    assert await result_of(async_client, once.task_id) == TaskResult(
        body=chat_completion("echo: later")
    )
    tries = [r.at for r in upstream.bodies(model="always-busy")]
    assert len(tries) == 3
    assert all(later - earlier >= 0.1 for earlier, later in itertools.pairwise(tries))
    assert await result_of(async_client, busy.task_id) == TaskResult(
        status_code=429, body={"error": {"message": "busy"}}
    )


async def test_an_unreachable_upstream_fails_the_attempt_after_the_last_try(
    server: str, async_client: AsyncClient, queue: str
) -> None:
    await async_client.register_queue(queue, max_attempts=1, backoff=NO_BACKOFF)
    task = await async_client.put(queue, chat("anyone?"), endpoint=CHAT)
    await drain(server, f"http://127.0.0.1:{free_port()}", queue, max_attempts=2)
    failed = await async_client.get_task(task.task_id)
    assert failed.status is TaskStatus.FAILED
    assert failed.error is not None
    assert failed.error.code == "UpstreamError"
    assert "attempt 2 of 2" in failed.error.message


async def test_the_worker_slows_down_while_the_upstream_answers_429(
    server: str, async_client: AsyncClient, queue: str, upstream: Upstream
) -> None:
    limit, tasks = 2, 24
    accepted = 0
    throttled: list[float] = []  # when each 429 went out

    async def reply(request: web.Request, body: Any) -> web.StreamResponse:
        nonlocal accepted
        if accepted >= limit:
            await asyncio.sleep(0.005)  # a refusal takes a moment too
            throttled.append(time.monotonic())
            return web.json_response({"error": {"message": "too many"}}, status=429)
        accepted += 1
        try:
            await asyncio.sleep(0.05)
            return await openai_like(request, body)
        finally:
            accepted -= 1

    upstream.reply = reply
    ids = [
        (await async_client.put(queue, chat(str(n)), endpoint=CHAT)).task_id for n in range(tasks)
    ]

    forwarder = await drain(server, upstream.url, queue, concurrency=8)

    for n, task_id in enumerate(ids):  # every one answered, none given up on
        assert await result_of(async_client, task_id) == TaskResult(
            body=chat_completion(f"echo: {n}")
        )
    assert throttled  # the first take of 8 met the limit of 2
    after_first = [r.concurrent for r in upstream.received if r.at > throttled[0]]
    assert max(after_first) <= limit + 2, after_first
    assert len(throttled) < tasks, len(throttled)  # no retry storm
    assert forwarder.capacity() <= limit + 2


async def test_a_streaming_task_relays_each_chunk_and_records_the_whole_completion(
    server: str, async_client: AsyncClient, queue: str, upstream: Upstream
) -> None:
    question = chat("stream it", stream=True)
    async with Forwarder(upstream.url) as forwarder:
        worker = forwarder.worker([queue], server=server, handle_signals=False, wait_s=1.0)
        running = asyncio.create_task(worker.run())
        try:
            messages = [
                m async for m in async_client.stream(queue, question, endpoint=CHAT, timeout_s=20)
            ]
        finally:
            worker.stop()
            await running

    (sent,) = upstream.received
    assert sent.body == question | {"stream_options": {"include_usage": True}}
    usage = {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    chunks = [stream_chunk(text, last=i == 2, usage=True) for i, text in enumerate(STREAM_CHUNKS)]
    assert [(m.event, m.data) for m in messages[:-1]] == [("chunk", c) for c in chunks]
    end = end_of(messages[-1])
    assert end is not None
    assert end.status is TaskStatus.SUCCEEDED
    assert end.result == TaskResult(
        body={
            "id": "chatcmpl-s",
            "object": "chat.completion",
            "created": 1_700_000_001,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello!"},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }
    )
    followed = [(m.event, m.data) async for m in async_client.follow(end.task_id)]
    assert followed[:-1] == [("chunk", c) for c in chunks]  # kept with the task


async def test_a_stream_that_breaks_after_a_chunk_fails_the_attempt_without_a_retry(
    server: str, async_client: AsyncClient, queue: str, upstream: Upstream
) -> None:
    async def reply(request: web.Request, body: Any) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = stream_chunk("Hel", last=False, usage=False)
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        assert request.transport is not None
        request.transport.close()  # mid-stream, before the end of the chunked body
        return response

    upstream.reply = reply
    await async_client.register_queue(queue, max_attempts=1, backoff=NO_BACKOFF)
    task = await async_client.put(queue, chat("x", stream=True), endpoint=CHAT)
    await drain(server, upstream.url, queue)
    failed = await async_client.get_task(task.task_id)
    assert failed.status is TaskStatus.FAILED
    assert failed.error is not None
    assert (failed.error.code, failed.error.message[:38]) == (
        "UpstreamError",
        "the upstream's stream broke after 1 ch",
    )
    assert len(upstream.received) == 1  # its chunk was relayed: a retry would repeat it
    followed = [m.event async for m in async_client.follow(task.task_id)]
    assert followed == ["chunk", "result"]


async def test_a_worker_takes_no_more_than_its_capacity_and_wakes_when_it_grows(
    server: str, async_client: AsyncClient, queue: str
) -> None:
    room = 2
    started: list[Any] = []
    release, one_more = asyncio.Event(), asyncio.Event()

    async def hold(task: LeasedTask) -> None:
        started.append(task.data)
        one_more.set()
        await release.wait()

    async def settle(count: int) -> None:
        async with asyncio.timeout(10):
            while len(started) < count:
                one_more.clear()
                await one_more.wait()
        await asyncio.sleep(0.3)  # long enough for a take it should not make
        assert len(started) == count

    for n in range(6):
        await async_client.put(queue, n)
    worker = Worker(
        {queue: hold},
        server=server,
        handle_signals=False,
        concurrency=8,
        capacity=lambda: room,
        wait_s=0.5,
    )
    running = asyncio.create_task(worker.run())
    try:
        await settle(2)
        assert worker.stats.taken == 2
        room = 4
        worker.wake()  # no task ended: only this tells the worker
        await settle(4)
        assert worker.stats.taken == 4
        release.set()
        await settle(6)
    finally:
        worker.stop()
        await running
    assert sorted(started) == list(range(6))
    assert (await async_client.get_queue(queue)).total("succeeded") == 6


async def conveyor(*args: str, **env: str) -> tuple[int | None, str]:
    """Run `conveyor ARGS` in a subprocess, the loop free meanwhile; exit code and output."""
    process = await asyncio.create_subprocess_exec(
        CONVEYOR,
        *args,
        env=environment(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, output.decode()


async def test_the_worker_command_forwards_a_task_end_to_end(
    server: str, async_client: AsyncClient, queue: str, upstream: Upstream
) -> None:
    task = await async_client.put(queue, chat("from the command line"), endpoint=CHAT)
    code, output = await conveyor(
        *("worker", "--forward-to", upstream.url, "--queues", queue, "--concurrency", "2"),
        *("--request-timeout", "30", "--rpm", "600", "--exit-when-drained", "--server", server),
        CONVEYOR_UPSTREAM_KEY="sk-from-env",
    )
    assert code == 0, output
    assert await result_of(async_client, task.task_id) == TaskResult(
        body=chat_completion("echo: from the command line")
    )
    assert [r.authorization for r in upstream.received] == ["Bearer sk-from-env"]
    assert "sk-from-env" not in output


async def test_the_worker_command_wants_a_handler_or_forward_to() -> None:
    server = "http://127.0.0.1:9"
    commands = {
        "give a handler as MODULE:HANDLER, or --forward-to": ("worker", "-q", "a"),
        "or --forward-to URL, not both": ("worker", "m:h", "--forward-to", "http://127.0.0.1:9"),
        "need --forward-to": ("worker", "m:h", "-q", "a", "--rpm", "60"),
        "must start with http:// or https://": ("worker", "--forward-to", "127.0.0.1:8000"),
    }
    done = await asyncio.gather(*(conveyor(*a, "--server", server) for a in commands.values()))
    for message, (code, output) in zip(commands, done, strict=True):
        assert code == 2, output
        assert message in output, output
