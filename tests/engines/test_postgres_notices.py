"""The notices PostgreSQL servers send each other: their payloads, and the sender's batching."""

from __future__ import annotations

import asyncio

from conveyor.engines.postgres.notices import MAX_PAYLOAD, Notice, NoticeSender, notices


def test_a_notice_reads_back_what_was_sent() -> None:
    (payload,) = notices("origin1", {"b", "a"}, ["t1", "t2"], 1_700_000_000.25)
    notice = Notice(payload)
    assert notice.origin == "origin1"
    assert notice.work == ["a", "b"]
    assert notice.changed == ["t1", "t2"]
    assert notice.due == 1_700_000_000.25


def test_no_news_sends_nothing() -> None:
    assert notices("o", set(), [], None) == []


def test_many_task_ids_are_split_over_payloads_under_the_limit() -> None:
    ids = [f"01a20b555cb30a5acb3f653de15e{n:04d}" for n in range(1_000)]
    payloads = notices("o", {"q"}, ids, 5.0)
    assert len(payloads) > 1
    assert all(len(p.encode()) <= MAX_PAYLOAD for p in payloads)
    read = [Notice(p) for p in payloads]
    assert [i for n in read for i in n.changed] == ids
    assert [n.work for n in read if n.work] == [["q"]]
    assert [n.due for n in read if n.due is not None] == [5.0]
    assert {n.origin for n in read} == {"o"}


async def test_the_sender_gathers_news_and_sends_it_after_stop_at_the_latest() -> None:
    sent: list[str] = []
    gate = asyncio.Event()

    async def send(sql: str) -> None:
        await gate.wait()  # the first send is slow: news gathers meanwhile
        sent.append(sql)

    sender = NoticeSender(send, "conveyor_x", "me")
    sender.start()
    sender.add({"q1"}, [], None)
    await asyncio.sleep(0.01)  # the first send has started
    sender.add({"q2"}, ["t1"], 9.0)
    sender.add({"q3"}, ["t1", "t2"], 3.0)
    gate.set()
    await sender.stop()
    assert len(sent) == 2  # the first news, then everything that came while it was sent
    assert "synchronous_commit TO off" in sent[0]
    assert "w q1" in sent[0]
    assert "w q2 q3" in sent[1]
    assert "t t1 t2" in sent[1]
    assert "d 3.0" in sent[1]


async def test_a_failed_send_is_logged_and_the_sender_carries_on() -> None:
    calls = 0

    async def send(sql: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("server gone")

    sender = NoticeSender(send, "conveyor_x", "me")
    sender.start()
    sender.add({"q"}, [], None)
    await asyncio.sleep(0.01)
    sender.add({"q"}, [], None)
    await sender.stop()
    assert calls == 2
