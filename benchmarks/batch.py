"""The Batch API benchmark: one `conveyor serve` process on SQLite, the official `openai`
SDK as the client, one `conveyor worker --forward-to` process against an upstream that
answers at once (benchmarks/upstream.py).

    python -m benchmarks.batch                      # 50,000 lines of ~2 KB (~100 MB)
    python -m benchmarks.batch --lines 1000000 --line-bytes 200   # the big one

Figures (issue 4): upload time; validation + enqueue time (batch created → in_progress,
every task stored); end to end lines/s (batch created → completed, output file written);
peak server RSS (VmHWM of the server's processes) over the whole run.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import msgspec
import openai

from benchmarks._report import Row, markdown, note
from benchmarks.concurrent import _server_pid, peak_rss_mb
from benchmarks.http import free_port, server

ENDPOINT = "/v1/chat/completions"


def write_input(path: Path, lines: int, line_bytes: int) -> int:
    """A JSONL file of `lines` chat requests of about `line_bytes` each; its size."""
    skeleton = msgspec.json.encode(
        {
            "custom_id": "request-00000000",
            "method": "POST",
            "url": ENDPOINT,
            "body": {"model": "bench", "messages": [{"role": "user", "content": ""}]},
        }
    )
    filler = "x" * max(0, line_bytes - len(skeleton) - 1)
    with path.open("wb") as out:
        for n in range(lines):
            request = {
                "custom_id": f"request-{n:08d}",
                "method": "POST",
                "url": ENDPOINT,
                "body": {"model": "bench", "messages": [{"role": "user", "content": filler}]},
            }
            out.write(msgspec.json.encode(request) + b"\n")
    return path.stat().st_size


@contextmanager
def process(command: Sequence[str], env: dict[str, str] | None = None) -> Iterator[None]:
    """A background process, stopped with SIGTERM afterwards."""
    child = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)


def run(lines: int, line_bytes: int, concurrency: int, forward: bool = True) -> list[Row]:
    rows: list[Row] = []
    conveyor = str(Path(sys.executable).with_name("conveyor"))
    with tempfile.TemporaryDirectory(prefix="conveyor-batch-") as tmp:
        data = Path(tmp) / "input.jsonl"
        size = write_input(data, lines, line_bytes)
        note(f"input: {lines:,} lines, {size / 1e6:,.0f} MB")
        upstream_port = free_port()
        settings = {
            "CONVEYOR_MAX_BATCH_REQUESTS": str(max(lines, 50_000)),
            "CONVEYOR_MAX_FILE_BYTES": str(max(size * 2, 512 * 1024 * 1024)),
        }
        with (
            server(str(Path(tmp) / "data"), settings) as url,
            process([sys.executable, "-m", "benchmarks.upstream", "--port", str(upstream_port)]),
        ):
            env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
            env["CONVEYOR_URL"] = url
            env["PYTHONPATH"] = str(Path(__file__).parents[1])
            handler = ["--forward-to", f"http://127.0.0.1:{upstream_port}"]
            if not forward:  # the SDK worker with a no-op handler: no upstream round trip
                handler = ["benchmarks.noop_worker:handle"]
            worker = [
                conveyor,
                "worker",
                *handler,
                "--queues",
                "batch",
                "--concurrency",
                str(concurrency),
            ]
            with process(worker, env):
                client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=600)
                start = time.perf_counter()
                with data.open("rb") as file:
                    uploaded = client.files.create(file=("input.jsonl", file), purpose="batch")
                upload_s = time.perf_counter() - start
                note(f"upload: {upload_s:.1f} s")
                created = time.perf_counter()
                batch = client.batches.create(
                    input_file_id=uploaded.id,
                    endpoint="/v1/chat/completions",
                    completion_window="24h",
                )
                in_progress_s = None
                last_note = 0.0
                while batch.status not in ("completed", "failed", "expired", "cancelled"):
                    time.sleep(0.2)
                    batch = client.batches.retrieve(batch.id)
                    now = time.perf_counter()
                    if in_progress_s is None and batch.status != "validating":
                        in_progress_s = now - created
                        note(f"validated and enqueued: {in_progress_s:.1f} s")
                    if now - last_note > 5 and batch.request_counts is not None:
                        last_note = now
                        done = batch.request_counts.completed + batch.request_counts.failed
                        note(f"{batch.status}: {done:,}/{batch.request_counts.total:,}")
                total_s = time.perf_counter() - created
                pid = _server_pid(url)
                rss = peak_rss_mb(pid) if pid else float("nan")
                client.close()
        if batch.status != "completed" or batch.request_counts is None:
            raise RuntimeError(f"the batch ended {batch.status}: {batch}")
        if batch.request_counts.completed != lines:
            raise RuntimeError(f"only {batch.request_counts.completed:,} lines succeeded")
    label = f"{lines:,} lines of ~{line_bytes:,} B ({size / 1e6:,.0f} MB)"
    rows.append(Row("sqlite", f"upload, {label}", upload_s, "s"))
    rows.append(Row("sqlite", f"validation + enqueue, {label}", in_progress_s or 0.0, "s"))
    rows.append(
        Row(
            "sqlite",
            f"end to end (created → completed), one {'forwarding' if forward else 'no-op SDK'}"
            f" worker, {concurrency} slots",
            lines / total_s,
            "lines/s",
        )
    )
    rows.append(Row("sqlite", f"server peak RSS, {label}", rss, "MB"))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--line-bytes", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=64, help="the worker's slots")
    parser.add_argument(
        "--noop-worker",
        action="store_true",
        help="run tasks with a no-op SDK worker instead of the forwarding worker (faster;"
        " for the memory figure of a very large batch)",
    )
    parser.add_argument("--output", help="also write the report to this file")
    args = parser.parse_args(argv)
    rows = run(args.lines, args.line_bytes, args.concurrency, forward=not args.noop_worker)
    report = markdown(
        rows,
        [
            ("lines", f"{args.lines:,}"),
            ("line bytes", f"{args.line_bytes:,}"),
            ("worker concurrency", str(args.concurrency)),
            ("worker", "no-op SDK handler" if args.noop_worker else "conveyor worker --forward-to"),
        ],
    )
    print(report)
    if args.output:
        Path(args.output).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
