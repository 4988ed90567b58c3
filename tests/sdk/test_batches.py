"""`client.files` and `client.batches` against a real server, and `conveyor batch|file`.

A batch's tasks are answered by the test itself: through the SDK client's take and
complete in a thread, or by a `conveyor worker` process running a handler module written
for the test.
"""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conveyor import (
    Client,
    InvalidInput,
    InvalidTransition,
    NotFound,
    TaskResult,
    WaitTimeout,
)
from conveyor.sdk import AsyncClient, BatchInfo, BatchStatus
from conveyor.sdk import _batch_calls as batch_calls
from tests._server import CONVEYOR, environment, stop_process
from tests.sdk.test_cli import COMMAND_TIMEOUT_S, at_once, cli

ENDPOINT = "/v1/chat/completions"


def chat(custom_id: str, content: str = "hello") -> dict[str, Any]:
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}]}
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}


def write_jsonl(path: Path, requests: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in requests))
    return path


def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def answer(data: Any) -> TaskResult:
    """A model server's answer: the prompt in capitals, or 400 for the prompt 'bad'."""
    content = data["messages"][0]["content"]
    if content == "bad":
        return TaskResult(status_code=400, body={"error": {"message": "bad prompt"}})
    return TaskResult(status_code=200, body={"choices": [{"text": content.upper()}]})


@pytest.fixture
def answering(server: str, queue: str) -> Iterator[threading.Event]:
    """Answers the tasks of `queue` in a thread (take and complete) until the test ends."""
    stop = threading.Event()

    def run() -> None:
        with Client(server) as sdk:
            while not stop.is_set():
                for task in sdk.take([queue], size=8, wait_s=0.5):
                    sdk.complete(task.task_id, task.lease_id, answer(task.data))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield stop
    stop.set()
    thread.join(10)


def test_upload_create_wait_and_download(
    client: Client, queue: str, tmp_path: Path, answering: threading.Event
) -> None:
    source = write_jsonl(
        tmp_path / "requests.jsonl", [chat(f"r{n}", f"q{n}") for n in range(6)] + [chat("x", "bad")]
    )
    uploaded = client.files.upload(source)
    assert (uploaded.filename, uploaded.purpose) == ("requests.jsonl", "batch")
    assert uploaded.bytes == source.stat().st_size
    assert client.files.get(uploaded.id) == uploaded

    batch = client.batches.create(uploaded.id, ENDPOINT, queue=queue, metadata={"run": "t1"})
    assert (batch.status, batch.metadata) == (BatchStatus.VALIDATING, {"run": "t1"})
    seen: list[BatchInfo] = []
    done = client.batches.wait(batch.id, poll_s=0.05, timeout_s=60, on_progress=seen.append)

    assert done.status is BatchStatus.COMPLETED
    assert (done.request_counts.completed, done.request_counts.failed) == (6, 1)
    assert seen[-1] == done
    assert all(s.id == batch.id for s in seen)
    ended = [s.request_counts.completed + s.request_counts.failed for s in seen]
    assert ended == sorted(ended)  # counts only grow
    assert done.output_file_id is not None
    assert done.error_file_id is not None

    output = client.files.download(done.output_file_id, tmp_path / "out" / "output.jsonl")
    assert output == tmp_path / "out" / "output.jsonl"
    lines = read_jsonl(output)
    assert [line["custom_id"] for line in lines] == [f"r{n}" for n in range(6)]
    assert lines[3]["response"]["body"] == {"choices": [{"text": "Q3"}]}
    errors = read_jsonl(client.files.download(done.error_file_id, tmp_path / "errors.jsonl"))
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("x", 400)]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["output.jsonl"]  # no leftovers

    with pytest.raises(InvalidTransition):  # a completed batch cannot be cancelled
        client.batches.cancel(batch.id)


def test_list_pages_through_every_batch_newest_first(
    client: Client, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_calls, "BATCH_PAGE", 2)  # five batches take three pages
    file = client.files.upload(msgspec.json.encode(chat("a")) + b"\n", filename="one.jsonl")
    made = [client.batches.create(file.id, ENDPOINT, queue=queue).id for _ in range(5)]
    assert [b.id for b in client.batches.list(limit=5)] == made[::-1]
    everything = [b.id for b in client.batches.list()]
    assert everything[:5] == made[::-1]
    assert len(everything) == len(set(everything))
    assert [b.id for b in client.batches.list(after=made[2], limit=2)] == made[1::-1]
    assert list(client.batches.list(limit=0)) == []
    for batch_id in made:
        client.batches.cancel(batch_id)


async def test_async_client_uploads_bytes_cancels_and_waits(
    async_client: AsyncClient, queue: str, tmp_path: Path
) -> None:
    data = b"".join(msgspec.json.encode(chat(f"r{n}")) + b"\n" for n in range(3))
    file = await async_client.files.upload(data, filename='in "1".jsonl')
    assert (file.filename, file.bytes) == ('in "1".jsonl', len(data))
    assert file.id in [f.id async for f in async_client.files.list(purpose="batch")]
    batch = await async_client.batches.create(file.id, ENDPOINT, queue=queue)
    with pytest.raises(WaitTimeout):  # no worker: it stays in progress
        await async_client.batches.wait(batch.id, poll_s=0.05, timeout_s=0.3)
    assert (await async_client.batches.cancel(batch.id)).status in {"cancelling", "cancelled"}
    seen: list[BatchStatus] = []
    ended = await async_client.batches.wait(
        batch.id, poll_s=0.05, timeout_s=30, on_progress=lambda b: seen.append(b.status)
    )
    assert ended.status is BatchStatus.CANCELLED
    assert seen[-1] is BatchStatus.CANCELLED
    assert ended.error_file_id is not None  # one batch_cancelled line per request
    path = await async_client.files.download(ended.error_file_id, tmp_path / "errors.jsonl")
    assert [e["error"]["code"] for e in read_jsonl(path)] == ["batch_cancelled"] * 3
    assert batch.id in [b.id async for b in async_client.batches.list(limit=10)]

    await async_client.files.delete(file.id)
    with pytest.raises(NotFound):
        await async_client.files.get(file.id)


async def test_async_upload_streams_a_file_from_disk(
    async_client: AsyncClient, tmp_path: Path
) -> None:
    source = tmp_path / "big.jsonl"
    source.write_bytes(b"x" * 3_000_000 + b"\n")  # several chunks
    file = await async_client.files.upload(source, purpose="user_data")
    assert (file.bytes, file.purpose) == (3_000_001, "user_data")
    back = await async_client.files.download(file.id, tmp_path / "back.jsonl")
    assert back.read_bytes() == source.read_bytes()
    await async_client.files.delete(file.id)


def test_errors_map_back_to_their_classes(client: Client, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as not_jsonl:
        client.files.upload(b"{}\n", filename="requests.txt")
    assert not_jsonl.value.param == "file"
    file = client.files.upload(msgspec.json.encode(chat("a")) + b"\n")
    with pytest.raises(InvalidInput) as bad_endpoint:
        client.batches.create(file.id, "/v1/nope")
    assert bad_endpoint.value.param == "endpoint"
    with pytest.raises(NotFound):
        client.batches.get("batch_nope")
    with pytest.raises(NotFound):
        client.files.download("file-nope", tmp_path / "nope.jsonl")
    assert list(tmp_path.iterdir()) == []  # a failed download leaves nothing behind
    with pytest.raises(InvalidInput):
        client.files.upload(tmp_path / "missing.jsonl")


# ---- the command line ----

HANDLERS = """
from conveyor import TaskResult

def answer(task):
    content = task.data["messages"][0]["content"]
    if content == "bad":
        return TaskResult(status_code=400, body={"error": {"message": "bad prompt"}})
    return {"choices": [{"text": content.upper()}]}
"""


def conveyor(server: str, *args: str, code: int = 0, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [CONVEYOR, *args],
        env=environment(CONVEYOR_URL=server),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S * 2,
        check=False,
        cwd=cwd,
    )
    assert done.returncode == code, (done.stdout, done.stderr)
    return done.stdout


@pytest.fixture
def worker(server: str, queue: str, tmp_path: Path) -> Iterator[None]:
    """`conveyor worker` answering `queue` with the handler above."""
    (tmp_path / "batch_handlers.py").write_text(textwrap.dedent(HANDLERS))
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [CONVEYOR, "worker", "batch_handlers:answer", "--queues", queue],
            cwd=tmp_path,
            env=environment(CONVEYOR_URL=server),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield
    finally:
        stop_process(process)
    assert "Traceback" not in log.read_text(), log.read_text()


def test_cli_create_wait_downloads_and_summarises(
    server: str, queue: str, tmp_path: Path, worker: None
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [chat(f"r{n}", f"q{n}") for n in range(4)])
    with (tmp_path / "in.jsonl").open("ab") as more:
        more.write(msgspec.json.encode(chat("x", "bad")) + b"\n")
    out = conveyor(
        server,
        "batch",
        "create",
        str(source),
        "--endpoint",
        ENDPOINT,
        "--queue",
        queue,
        "--metadata",
        "owner=cli",
        "--metadata",
        "run=2",
        "--wait",
        "--output-dir",
        str(tmp_path / "results"),
    )
    batch_id = out.split()[1]
    output = tmp_path / "results" / f"{batch_id}_output.jsonl"
    errors = tmp_path / "results" / f"{batch_id}_errors.jsonl"
    assert f"batch {batch_id} completed: 4 done, 1 failed of 5" in out
    assert f"output file: {output}" in out
    assert f"error file: {errors}" in out
    assert [line["custom_id"] for line in read_jsonl(output)] == ["r0", "r1", "r2", "r3"]
    assert [line["custom_id"] for line in read_jsonl(errors)] == ["x"]

    got, listed, table = at_once(
        (server, "batch", "get", batch_id, "--json"),
        (server, "batch", "list", "--limit", "3", "--json"),
        (server, "batch", "list"),  # the table for people
    )
    batch = json.loads(got)
    assert (batch["status"], batch["metadata"]) == ("completed", {"owner": "cli", "run": "2"})
    assert batch["request_counts"] == {"total": 5, "completed": 4, "failed": 1}
    assert batch_id in [b["id"] for b in json.loads(listed)]
    assert len(json.loads(listed)) <= 3
    assert batch_id in table
    again = json.loads(conveyor(server, "batch", "download", batch_id, "--json", cwd=tmp_path))
    assert again["output_path"] == f"{batch_id}_output.jsonl"
    assert (tmp_path / again["output_path"]).read_bytes() == output.read_bytes()


def test_cli_create_wait_json_and_a_failed_validation(
    server: str, queue: str, tmp_path: Path
) -> None:
    lines = [chat("ok")] + [{"custom_id": f"b{n}", "method": "GET"} for n in range(24)]
    source = write_jsonl(tmp_path / "bad.jsonl", lines)
    done = cli(
        "batch", "create", str(source), "--endpoint", ENDPOINT, "--queue", queue, "--wait",
        CONVEYOR_URL=server,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "failed: 24 error(s) in the input file" in done.stdout
    shown = [line for line in done.stdout.splitlines() if line.startswith("  line ")]
    assert len(shown) == 20
    assert shown[0].startswith("  line 2: ")
    assert done.stdout.splitlines()[-1] == "  and 4 more"  # of 24, one a bad line
    as_json = cli(
        "batch", "create", str(source), "--endpoint", ENDPOINT, "--queue", queue, "--wait",
        "--json", "--output-dir", str(tmp_path), CONVEYOR_URL=server,
    )  # fmt: skip
    assert as_json.returncode == 1, as_json.stderr
    answer = json.loads(as_json.stdout)
    assert answer["batch"]["status"] == "failed"
    assert (answer["output_path"], answer["error_path"]) == (None, None)
    assert len(answer["batch"]["errors"]["data"]) == 24


def test_cli_ctrl_c_stops_waiting_and_cancel(server: str, queue: str, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [chat("a"), chat("b")])
    waiting = subprocess.Popen(
        [CONVEYOR, "batch", "create", str(source), "--endpoint", ENDPOINT, "--queue", queue,
         "--wait"],
        env=environment(CONVEYOR_URL=server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert waiting.stdout is not None
        first = waiting.stdout.readline()  # "batch <id> created from ..."
        batch_id = first.split()[1]
        assert batch_id.startswith("batch_")
        assert waiting.stderr is not None
        progress = waiting.stderr.readline()  # printed once the wait has begun
        assert progress.startswith(f"batch {batch_id}: "), progress
        waiting.send_signal(signal.SIGINT)
        stdout, stderr = waiting.communicate(timeout=COMMAND_TIMEOUT_S)
    finally:
        stop_process(waiting)  # type: ignore[arg-type]
    assert waiting.returncode == 130, (stdout, stderr)
    assert f"conveyor batch get {batch_id}" in stderr
    assert "Traceback" not in stderr

    cancelled = json.loads(conveyor(server, "batch", "cancel", batch_id, "--json"))
    assert cancelled["status"] in {"cancelling", "cancelled"}
    refused = cli("batch", "get", "batch_nope", CONVEYOR_URL=server)
    assert refused.returncode == 1
    assert "NotFound" in refused.stderr


def test_cli_file_commands(server: str, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [chat("a")])
    uploaded = json.loads(conveyor(server, "file", "upload", str(source), "--json"))
    file_id = uploaded["id"]
    assert (uploaded["filename"], uploaded["purpose"]) == ("in.jsonl", "batch")
    target = tmp_path / "copy.jsonl"
    got, listed, table, saved = at_once(
        (server, "file", "get", file_id, "--json"),
        (server, "file", "list", "--purpose", "batch", "--json"),
        (server, "file", "list"),  # the table for people
        (server, "file", "download", file_id, "-o", str(target), "--json"),
    )
    assert json.loads(got) == uploaded
    assert file_id in [f["id"] for f in json.loads(listed)]
    assert "in.jsonl" in table
    assert json.loads(saved)["path"] == str(target)
    assert target.read_bytes() == source.read_bytes()
    deleted = json.loads(conveyor(server, "file", "delete", file_id, "--json"))
    assert deleted["deleted"] is True
    conveyor(server, "file", "get", file_id, code=1)
