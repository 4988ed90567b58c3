"""The forwarding worker's parts, without a network: URLs, waits, limits, stream folding."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

import conveyor.executors
from conveyor.domain.clock import ManualClock
from conveyor.errors import InvalidInput
from conveyor.executors import AdaptiveLimit, RateLimit, assembler_for, join_url, retry_after_s
from conveyor.executors._streams import SseReader
from conveyor.executors.forward import Forwarder, _is_path, is_retried


def test_exports_are_defined_in_the_package() -> None:
    for name in conveyor.executors.__all__:
        value = getattr(conveyor.executors, name)
        assert value.__module__.startswith("conveyor.executors"), name


@pytest.mark.parametrize(
    ("base", "endpoint", "url"),
    [
        ("http://h:8000", "/v1/chat/completions", "http://h:8000/v1/chat/completions"),
        ("http://h:8000/", "/v1/chat/completions", "http://h:8000/v1/chat/completions"),
        ("http://h:8000/v1", "/v1/chat/completions", "http://h:8000/v1/chat/completions"),
        ("https://api.openai.com/v1/", "/v1/embeddings", "https://api.openai.com/v1/embeddings"),
        ("http://h/openai/v1", "/v1/responses", "http://h/openai/v1/responses"),
        ("http://h:11434/v1", "/chat/completions", "http://h:11434/v1/chat/completions"),
        ("http://h/v1", "/v10/x", "http://h/v1/v10/x"),
    ],
)
def test_join_url_has_one_v1(base: str, endpoint: str, url: str) -> None:
    assert join_url(base, endpoint) == url


def test_only_paths_are_forwarded() -> None:
    assert _is_path("/v1/chat/completions")
    assert _is_path("/v1/x?api-version=2")
    for bad in ("", "v1/x", "//evil.example/x", "http://evil/x", "/v1/../admin", "/v1/x y"):
        assert not _is_path(bad), bad


def test_retry_after_in_milliseconds_seconds_or_a_date() -> None:
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after": "1.5"}) == 1.5
    now = 1_700_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert retry_after_s({"retry-after": date}, now=now) == 30.0
    assert retry_after_s({"retry-after": date}, now=now + 60) == 0.0  # already past
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None


def test_retried_statuses() -> None:
    assert [s for s in (200, 400, 404, 408, 429, 500, 503) if is_retried(s)] == [408, 429, 500, 503]


def test_forwarder_refuses_bad_settings() -> None:
    with pytest.raises(InvalidInput, match="http"):
        Forwarder("127.0.0.1:8000")
    with pytest.raises(InvalidInput, match="max_attempts"):
        Forwarder("http://h", max_attempts=0)
    with pytest.raises(InvalidInput, match="1 or more"):
        Forwarder("http://h", concurrency=0)


async def test_adaptive_limit_halves_on_429_grows_by_one_and_never_drops_below_one() -> None:
    limit = AdaptiveLimit(8)
    grew: list[int] = []
    limit.on_grow(lambda: grew.append(limit.allowed))

    async def one(**outcome: bool) -> None:
        limit.release(await asyncio.wait_for(limit.acquire(), 1), **outcome)

    tickets = [await limit.acquire() for _ in range(8)]
    assert (limit.allowed, limit.in_flight) == (8, 8)
    # a burst of 429s to requests sent at the same level halves it once
    for ticket in tickets[:6]:
        limit.release(ticket, throttled=True)
    assert (limit.allowed, limit.in_flight) == (4, 2)
    for ticket in tickets[6:]:
        limit.release(ticket, succeeded=True)
    assert (limit.allowed, limit.in_flight, grew) == (4, 0, [])  # half a round
    await one(succeeded=True)
    await one(succeeded=True)
    assert grew == [5]  # a round of 4 successes: one more
    await one(throttled=True)  # sent at the new level: halves again
    assert limit.allowed == 2
    await one(throttled=True)
    await one(throttled=True)
    assert limit.allowed == 1  # the floor
    for _ in range(1 + 2 + 3 + 4 + 5 + 6 + 7):
        await one(succeeded=True)
    assert limit.allowed == 8  # one more per round
    assert grew == [5, 2, 3, 4, 5, 6, 7, 8]
    await one(succeeded=True)
    await one()  # an error that is no sign of load: no change
    assert limit.allowed == 8  # the maximum


async def test_adaptive_limit_holds_requests_beyond_the_allowed() -> None:
    limit = AdaptiveLimit(2)
    first = await limit.acquire()
    await limit.acquire()
    waiting = asyncio.create_task(limit.acquire())
    cancelled = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    assert not waiting.done()
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    limit.release(first, throttled=True)  # down to 1, with 1 in flight: still no room
    await asyncio.sleep(0)
    assert not waiting.done()
    assert limit.in_flight == 1
    limit.release(first, succeeded=True)  # back to 2, none in flight: the waiter goes
    await asyncio.wait_for(waiting, 1)
    assert (limit.allowed, limit.in_flight) == (2, 1)


def test_rate_limit_spaces_requests_evenly_after_a_one_second_burst() -> None:
    clock = ManualClock(0.0)
    rate = RateLimit(120, clock=clock)  # 2 a second
    assert [rate.reserve() for _ in range(2)] == [0.0, 0.0]  # one second's worth at once
    assert rate.reserve() == pytest.approx(0.5)
    assert rate.reserve() == pytest.approx(1.0)  # queued behind the previous one
    clock.advance(10)
    assert rate.reserve() == 0.0  # refilled, but only up to the burst
    assert rate.reserve() == 0.0
    assert rate.reserve() == pytest.approx(0.5)
    slow = RateLimit(30, clock=ManualClock(0.0))  # one every 2 s
    assert [slow.reserve(), slow.reserve()] == [0.0, pytest.approx(2.0)]
    with pytest.raises(InvalidInput):
        RateLimit(0)


def test_sse_reader() -> None:
    reader = SseReader()
    lines = [": keep-alive", 'data: {"a": 1}', "", "event: done", "data: x", "data: y", ""]
    assert [m for line in lines if (m := reader.feed(line + "\n"))] == [
        ("", {"a": 1}),
        ("done", "x\ny"),
    ]
    reader.feed("data: [DONE]")
    assert reader.finish() == ("", "[DONE]")


def _chat_chunk(
    delta: dict[str, object], finish: str | None = None, **top: object
) -> dict[str, object]:
    chunk: dict[str, object] = {"id": "c1", "object": "chat.completion.chunk", "created": 7}
    chunk["model"] = "m"
    chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return chunk | top


def test_chat_chunks_fold_into_a_chat_completion() -> None:
    assembler = assembler_for("/v1/chat/completions")
    for chunk in [
        _chat_chunk({"role": "assistant", "content": ""}),
        _chat_chunk({"content": "Hel"}),
        _chat_chunk({"content": "lo"}),
        _chat_chunk({"tool_calls": [{"index": 0, "id": "t", "function": {"name": "f"}}]}),
        _chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}),
        _chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
        _chat_chunk({}, "stop"),
        {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    ]:
        assembler.add(chunk)
    assert assembler.result() == {
        "id": "c1",
        "object": "chat.completion",
        "created": 7,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello",
                    "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": '{"a": 1}'}}],
                },
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }


def test_text_completion_and_other_streams_fold_too() -> None:
    text = assembler_for("/v1/completions")
    for piece in ("a", "b"):
        text.add({"id": "x", "model": "m", "choices": [{"index": 0, "text": piece}]})
    text.add({"id": "x", "choices": [{"index": 0, "text": "", "finish_reason": "length"}]})
    body = text.result()
    assert body["object"] == "text_completion"
    assert body["choices"] == [
        {"index": 0, "text": "ab", "finish_reason": "length", "logprobs": None}
    ]

    responses = assembler_for("/v1/responses")
    responses.add({"type": "response.output_text.delta", "delta": "hi"})
    responses.add({"type": "response.completed", "response": {"id": "r", "status": "completed"}})
    assert responses.result() == {"id": "r", "status": "completed"}

    other = assembler_for("/v1/audio/speech")
    other.add({"n": 1})
    other.add("text")
    assert other.result() == {"object": "list", "data": [{"n": 1}, "text"]}
