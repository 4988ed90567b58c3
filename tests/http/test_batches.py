"""The Batch API end to end: a real server, the official `openai` package, an SDK worker."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec
import openai
import pytest

from conveyor.domain.tasks import TaskResult
from conveyor.sdk import LeasedTask, Worker
from tests._server import running_server, server_process

ENDPOINT: Final = "/v1/chat/completions"
KEYS = {"CONVEYOR_API_KEYS": "acme-key=acme,globex-key=globex"}


def jsonl(requests: list[dict[str, Any]]) -> bytes:
    return b"".join(msgspec.json.encode(request) + b"\n" for request in requests)


def chat(custom_id: str, content: str = "hello", **extra: Any) -> dict[str, Any]:
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}], **extra}
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}


def answer(task: LeasedTask) -> TaskResult:
    """What a model server would answer: 200 with usage, or 400 for 'bad' prompts."""
    content = task.data["messages"][0]["content"]
    if content == "bad":
        return TaskResult(status_code=400, body={"error": {"message": "no"}})
    body = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content.upper()}}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    }
    return TaskResult(status_code=200, body=body)


def sdk(url: str, key: str = "acme-key") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def wait_for(client: openai.OpenAI, batch_id: str, statuses: set[str], timeout_s: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch stayed {batch.status}: {batch}"
        time.sleep(0.1)


def run_worker(url: str, queue: str, stop_after: int | None = None) -> int:
    """Run an SDK worker on `queue` until it has handled `stop_after` tasks (None: until
    the queue is empty); how many it handled."""
    handled = 0

    async def main() -> None:
        worker = Worker(
            queues=[queue],
            server=url,
            api_key="acme-key",
            wait_s=1.0,
            handle_signals=False,
            exit_when_drained=stop_after is None,
        )

        @worker.handler(queue)
        async def handle(task: LeasedTask) -> TaskResult:
            nonlocal handled
            handled += 1
            if stop_after is not None and handled >= stop_after:
                worker.stop()
            return answer(task)

        await worker.run()

    asyncio.run(main())
    return handled


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(tmp_path_factory.mktemp("batches"), env=KEYS) as url:
        yield url


def upload(client: openai.OpenAI, requests: list[dict[str, Any]]) -> str:
    file = client.files.create(file=("input.jsonl", io.BytesIO(jsonl(requests))), purpose="batch")
    return file.id


def test_a_batch_runs_end_to_end_with_the_openai_client(server: str) -> None:
    client = sdk(server)
    queue = f"b-{uuid.uuid4().hex[:8]}"
    requests = [chat(f"req-{n}", f"q{n}") for n in range(30)] + [chat("req-bad", "bad")]
    batch = client.batches.create(
        input_file_id=upload(client, requests),
        endpoint=ENDPOINT,
        completion_window="24h",
        metadata={"queue": queue, "purpose": "test"},
    )
    assert batch.status == "validating"
    assert batch.request_counts is not None
    assert batch.request_counts.total == 0
    assert batch.metadata == {"queue": queue, "purpose": "test"}
    in_progress = wait_for(client, batch.id, {"in_progress"})
    assert in_progress.request_counts is not None
    assert in_progress.request_counts.total == 31
    assert run_worker(server, queue, stop_after=31) == 31
    done = wait_for(client, batch.id, {"completed"})
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (30, 1)
    for stamp in ("in_progress_at", "finalizing_at", "completed_at"):
        assert getattr(done, stamp) is not None
    assert done.usage is not None
    assert done.usage.total_tokens == 30 * 3
    assert done.output_file_id is not None
    assert done.error_file_id is not None
    output = [
        msgspec.json.decode(x)
        for x in client.files.content(done.output_file_id).read().splitlines()
    ]
    assert [line["custom_id"] for line in output] == [f"req-{n}" for n in range(30)]
    assert output[7]["response"]["status_code"] == 200
    assert output[7]["response"]["body"]["choices"][0]["message"]["content"] == "Q7"
    assert output[7]["id"].startswith("batch_req_")
    errors = [
        msgspec.json.decode(x) for x in client.files.content(done.error_file_id).read().splitlines()
    ]
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("req-bad", 400)]
    output_file = client.files.retrieve(done.output_file_id)
    assert output_file.purpose == "batch_output"


def test_listing_pages_through_every_batch_newest_first(server: str) -> None:
    client = sdk(server, "globex-key")  # a project of its own: only these batches
    file_id = upload(client, [chat("a")])
    made = [
        client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h").id
        for _ in range(5)
    ]
    seen = [batch.id for batch in client.batches.list(limit=2)]  # auto-paginates
    assert seen == made[::-1]
    page = client.batches.list(limit=2)
    assert page.has_more
    assert len(page.data) == 2
    for batch_id in made:
        client.batches.cancel(batch_id)


def test_a_bad_file_fails_with_every_bad_line(server: str) -> None:
    client = sdk(server)
    bad = [
        chat("a"),
        {"custom_id": "b", "method": "POST", "url": ENDPOINT},
        {"custom_id": "c", "method": "GET", "url": ENDPOINT, "body": {"model": "tiny"}},
        {"custom_id": "d", "method": "POST", "url": "/v1/embeddings", "body": {"model": "tiny"}},
        chat("a"),
        chat("e", stream=True),
        {"custom_id": "f", "method": "POST", "url": ENDPOINT, "body": {"messages": []}},
    ]
    data = jsonl(bad).replace(b"\n", b"\n{not json\n", 1)
    file = client.files.create(file=("bad.jsonl", io.BytesIO(data)), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint=ENDPOINT, completion_window="24h")
    failed = wait_for(client, batch.id, {"failed"})
    assert failed.failed_at is not None
    assert failed.errors is not None
    assert failed.errors.data is not None
    found = [(error.line, error.code, error.param) for error in failed.errors.data]
    assert found == [
        (2, "invalid_json_line", None),
        (3, "missing_required_parameter", "body"),
        (4, "invalid_value", "method"),
        (5, "invalid_url", "url"),
        (6, "duplicate_custom_id", "custom_id"),
        (7, "streaming_unsupported", "body.stream"),
        (8, "invalid_request", "body.model"),
    ]


def test_create_refuses_bad_requests(server: str) -> None:
    client = sdk(server)
    file_id = upload(client, [chat("a")])
    with pytest.raises(openai.BadRequestError) as bad_endpoint:
        client.batches.create(input_file_id=file_id, endpoint="/v1/nope", completion_window="24h")  # type: ignore[arg-type]
    assert bad_endpoint.value.param == "endpoint"
    with pytest.raises(openai.BadRequestError) as bad_window:
        client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="soon")  # type: ignore[arg-type]
    assert bad_window.value.param == "completion_window"
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint=ENDPOINT, completion_window="24h")
    other = client.files.create(file=("notes.txt", io.BytesIO(b"x")), purpose="user_data")
    with pytest.raises(openai.BadRequestError) as wrong_purpose:
        client.batches.create(input_file_id=other.id, endpoint=ENDPOINT, completion_window="24h")
    assert wrong_purpose.value.param == "input_file_id"
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    # another project's file and batch do not exist for us
    globex = sdk(server, "globex-key")
    with pytest.raises(openai.NotFoundError):
        globex.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h")
    mine = client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        globex.batches.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        globex.batches.cancel(mine.id)
    client.batches.cancel(mine.id)


def test_cancel_ends_the_batch_and_lists_what_never_ran(server: str) -> None:
    client = sdk(server)
    queue = f"b-{uuid.uuid4().hex[:8]}"
    batch = client.batches.create(
        input_file_id=upload(client, [chat(f"r{n}") for n in range(5)]),
        endpoint=ENDPOINT,
        completion_window="24h",
        metadata={"queue": queue},
    )
    wait_for(client, batch.id, {"in_progress"})
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    assert cancelling.cancelling_at is not None
    cancelled = wait_for(client, batch.id, {"cancelled"})
    assert cancelled.cancelled_at is not None
    assert cancelled.output_file_id is None
    assert cancelled.error_file_id is not None
    lines = [
        msgspec.json.decode(x)
        for x in client.files.content(cancelled.error_file_id).read().splitlines()
    ]
    assert [line["error"]["code"] for line in lines] == ["batch_cancelled"] * 5
    assert client.batches.cancel(batch.id).status == "cancelled"  # again: allowed


def test_cancelling_an_ended_batch_is_a_conflict_not_to_retry(server: str) -> None:
    client = sdk(server)
    bad = client.files.create(file=("bad.jsonl", io.BytesIO(b"{nope\n")), purpose="batch")
    batch = client.batches.create(input_file_id=bad.id, endpoint=ENDPOINT, completion_window="24h")
    wait_for(client, batch.id, {"failed"})
    retrying = openai.OpenAI(base_url=f"{server}/v1", api_key="acme-key", max_retries=2)
    started = time.monotonic()
    with pytest.raises(openai.ConflictError) as conflict:
        retrying.batches.cancel(batch.id)
    assert conflict.value.response.headers["x-should-retry"] == "false"
    assert "Cannot cancel a batch with status 'failed'." in conflict.value.message
    assert time.monotonic() - started < 0.5  # answered once: the SDK did not back off and retry
    retrying.close()


def test_a_server_killed_mid_batch_resumes_it(tmp_path: Path) -> None:
    requests = [chat(f"r{n}", f"q{n}") for n in range(3_000)]
    queue = f"b-{uuid.uuid4().hex[:8]}"
    with server_process(tmp_path, env=KEYS) as (url, process):
        client = sdk(url)
        batch = client.batches.create(
            input_file_id=upload(client, requests),
            endpoint=ENDPOINT,
            completion_window="24h",
            metadata={"queue": queue},
        )
        wait_for(client, batch.id, {"in_progress"})
        run_worker(url, queue, stop_after=1_000)
        client.close()
        os.killpg(process.pid, signal.SIGKILL)  # no shutdown at all
        process.wait()
    with running_server(tmp_path, env=KEYS) as url:
        client = sdk(url)
        run_worker(url, queue)
        done = wait_for(client, batch.id, {"completed"})
        assert done.request_counts is not None
        assert done.request_counts.completed + done.request_counts.failed == 3_000
        assert done.output_file_id is not None
        output = client.files.content(done.output_file_id).read().splitlines()
        ids = [msgspec.json.decode(line)["custom_id"] for line in output]
        assert ids == [f"r{n}" for n in range(3_000)]  # every line, once, in input order
        client.close()


def test_an_empty_file_and_too_many_requests_fail_validation(tmp_path: Path) -> None:
    env = {**KEYS, "CONVEYOR_MAX_BATCH_REQUESTS": "3"}
    with running_server(tmp_path, env=env) as url:
        client = sdk(url)
        empty = client.files.create(file=("empty.jsonl", io.BytesIO(b"\n\n")), purpose="batch")
        batch = client.batches.create(
            input_file_id=empty.id, endpoint=ENDPOINT, completion_window="24h"
        )
        failed = wait_for(client, batch.id, {"failed"})
        assert failed.errors is not None
        assert failed.errors.data is not None
        assert [error.code for error in failed.errors.data] == ["empty_file"]
        batch = client.batches.create(
            input_file_id=upload(client, [chat(f"r{n}") for n in range(4)]),
            endpoint=ENDPOINT,
            completion_window="24h",
        )
        failed = wait_for(client, batch.id, {"failed"})
        assert failed.errors is not None
        assert failed.errors.data is not None
        assert [error.code for error in failed.errors.data] == ["too_many_tasks"]
        client.close()
