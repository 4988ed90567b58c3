"""The whole flow of the README: the official `openai` SDK runs a batch against
`conveyor serve`, executed by `conveyor worker --forward-to` against an OpenAI-compatible
upstream served by the test, which records what it receives."""

from __future__ import annotations

import asyncio
import io
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import openai
import pytest
from aiohttp import web

from tests._server import CONVEYOR, environment, free_port, running_server, stop_process

UPSTREAM_KEY = "sk-upstream-secret"


class Upstream:
    """A chat-completions server in a thread of its own; `received` holds each request."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.received: list[tuple[str, str | None, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append((request.path, request.headers.get("Authorization"), body))
        said = body["messages"][-1]["content"]
        if said == "refuse":
            return web.json_response({"error": {"message": "refused"}}, status=422)
        answer = {
            "id": f"chatcmpl-{len(self.received)}",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": said[::-1]},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
        }
        return web.json_response(answer)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def __enter__(self) -> Upstream:
        self._thread.start()
        assert self._started.wait(10), "the upstream did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as running:
        yield running


def test_the_openai_sdk_runs_a_batch_through_the_forwarding_worker(
    tmp_path: Path, upstream: Upstream
) -> None:
    prompts = [f"prompt {n}" for n in range(40)] + ["refuse"]
    lines = [
        {
            "custom_id": f"task-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "tiny", "messages": [{"role": "user", "content": prompt}]},
        }
        for n, prompt in enumerate(prompts)
    ]
    data = b"".join(msgspec.json.encode(line) + b"\n" for line in lines)
    worker_log = tmp_path / "worker.log"
    with running_server(tmp_path) as url, worker_log.open("wb") as log:
        worker = subprocess.Popen(
            [
                CONVEYOR,
                "worker",
                "--forward-to",
                upstream.url,
                "--queues",
                "batch",
                "--concurrency",
                "8",
            ],
            env=environment(CONVEYOR_URL=url, CONVEYOR_UPSTREAM_KEY=UPSTREAM_KEY),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            file = client.files.create(file=("requests.jsonl", io.BytesIO(data)), purpose="batch")
            batch = client.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            deadline = time.monotonic() + 60
            while batch.status not in ("completed", "failed", "expired", "cancelled"):
                assert time.monotonic() < deadline, batch
                time.sleep(0.2)
                batch = client.batches.retrieve(batch.id)
            assert batch.status == "completed", worker_log.read_text()
            assert batch.request_counts is not None
            assert (batch.request_counts.total, batch.request_counts.completed) == (41, 40)
            assert batch.request_counts.failed == 1
            assert batch.usage is not None
            assert batch.usage.total_tokens == 40 * 6
            assert batch.output_file_id is not None
            assert batch.error_file_id is not None
            output = [
                msgspec.json.decode(line)
                for line in client.files.content(batch.output_file_id).read().splitlines()
            ]
            errors = [
                msgspec.json.decode(line)
                for line in client.files.content(batch.error_file_id).read().splitlines()
            ]
            client.close()
        finally:
            stop_process(worker)
    # the upstream got every request once, as written, with the upstream key
    assert sorted(body["messages"][0]["content"] for _, _, body in upstream.received) == sorted(
        prompts
    )
    assert {(path, auth) for path, auth, _ in upstream.received} == {
        ("/v1/chat/completions", f"Bearer {UPSTREAM_KEY}")
    }
    assert {body["model"] for _, _, body in upstream.received} == {"tiny"}
    # the output file holds the upstream's answers, in input order
    assert [line["custom_id"] for line in output] == [f"task-{n}" for n in range(40)]
    first = output[0]["response"]
    assert first["status_code"] == 200
    assert first["body"]["choices"][0]["message"]["content"] == "0 tpmorp"
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("task-40", 422)]
    assert errors[0]["response"]["body"] == {"error": {"message": "refused"}}
