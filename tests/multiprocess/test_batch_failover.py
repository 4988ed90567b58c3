"""A batch made through server A with the official `openai` package, run by workers on
both servers, A SIGKILLed mid-way: the batch completes through server B (every batch step
is a compare-and-set on the batch's record, and every server runs the batch loop), and
its output file holds every custom_id once, in input order, with the answer of one run.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import httpx
import msgspec
import openai
import pytest

from tests.multiprocess._cluster import ENGINES, servers, store_url, wait_until, workers

LINES = 3_000
QUEUE = "batch"  # where batches go by default


def requests() -> bytes:
    lines = [
        {
            "custom_id": f"req-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "tiny", "messages": [{"role": "user", "content": f"prompt {n}"}]},
        }
        for n in range(LINES)
    ]
    return b"".join(msgspec.json.encode(line) + b"\n" for line in lines)


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_a_batch_completes_through_the_other_server(engine: str, tmp_path: Path) -> None:
    url = store_url(engine)
    with servers(tmp_path, url) as (a, b):
        response = httpx.post(
            f"{b.url}/v1/queues", json={"name": QUEUE, "process_timeout": 5, "max_attempts": 5}
        )
        assert response.status_code == 200, response.text
        with sdk(a.url) as on_a, sdk(b.url) as on_b:
            file = on_a.files.create(file=("input.jsonl", io.BytesIO(requests())), purpose="batch")
            batch = on_a.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            lists = [[a.url, b.url], [b.url, a.url]]
            with workers(tmp_path, lists, QUEUE, concurrency=16, delay_s=0.02) as running:
                started = time.monotonic()

                def third_done() -> bool:
                    counts = on_b.batches.retrieve(batch.id).request_counts
                    return counts is not None and counts.completed >= LINES // 3

                wait_until(third_done, timeout_s=60, what="a third of the batch", interval_s=0.1)
                a.kill()
                killed_s = time.monotonic() - started
                at_kill = on_b.batches.retrieve(batch.id)
                assert at_kill.status == "in_progress", at_kill
                assert at_kill.request_counts is not None
                assert at_kill.request_counts.completed < LINES
                deadline = time.monotonic() + 90
                while (done := on_b.batches.retrieve(batch.id)).status not in (
                    "completed",
                    "failed",
                    "expired",
                    "cancelled",
                ):
                    assert time.monotonic() < deadline, done
                    time.sleep(0.2)
                print(
                    f"\n{engine}: A killed at {killed_s:.1f} s with"
                    f" {at_kill.request_counts.completed}/{LINES} done; batch {done.status}"
                    f" through B at {time.monotonic() - started:.1f} s"
                )
                assert done.status == "completed", done
                running.assert_alive()
                assert done.request_counts is not None
                assert (done.request_counts.total, done.request_counts.completed) == (LINES, LINES)
                assert done.request_counts.failed == 0
                assert done.error_file_id is None
                assert done.output_file_id is not None
                output = [
                    msgspec.json.decode(line)
                    for line in on_b.files.content(done.output_file_id).read().splitlines()
                ]
    runs = running.runs()
    assert [line["custom_id"] for line in output] == [f"req-{n}" for n in range(LINES)]
    twice = 0
    for n, line in enumerate(output):
        response = line["response"]
        assert response["status_code"] == 200, line
        body = response["body"]
        assert body["choices"][0]["message"]["content"] == f"prompt {n}"[::-1]
        ran = runs[f"{batch.id}:{n:08d}"]
        assert body["run"] in ran, (line, ran)
        twice += len(ran) > 1
    print(f"{engine}: {sum(map(len, runs.values()))} runs; {twice} lines ran more than once")
