"""`conveyor batch create|list|get|cancel|download`: OpenAI-style batches from the shell.

`create FILE --wait` uploads FILE, starts the batch, shows its progress until it ends and
downloads its output and error files. Exit status 0 means the batch completed; 1 that it
failed, expired or was cancelled (its partial files are downloaded all the same).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from conveyor.commands._output import (
    ApiKey,
    AsJson,
    Server,
    client,
    fail,
    fields,
    print_json,
    say,
    table,
    when,
)
from conveyor.commands._progress import BatchProgress, counts_text
from conveyor.domain.batches import BatchStatus
from conveyor.sdk import BatchInfo, Client

app = typer.Typer(no_args_is_help=True, help="Run OpenAI-style batches: create, watch, download.")

BatchId = Annotated[str, typer.Argument(help="Batch id.", show_default=False)]
OutputDir = Annotated[
    Path,
    typer.Option(
        "--output-dir",
        file_okay=False,
        help="Where to write <batch id>_output.jsonl and <batch id>_errors.jsonl.",
    ),
]

SHOWN_ERRORS = 20  # of a failed batch's validation errors; the rest are counted


def parse_metadata(pairs: list[str]) -> dict[str, str] | None:
    """`k=v` arguments as a dict; None if there are none."""
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--metadata takes KEY=VALUE, got {pair!r}", code=2)
        metadata[key] = value
    return metadata or None


def output_paths(batch: BatchInfo, output_dir: Path) -> dict[str, Path]:
    """Where `download` writes the batch's output and error files."""
    return {
        "output": output_dir / f"{batch.id}_output.jsonl",
        "error": output_dir / f"{batch.id}_errors.jsonl",
    }


def download(sdk: Client, batch: BatchInfo, output_dir: Path) -> dict[str, Path | None]:
    """Download the batch's output and error files (those it has); where each went."""
    paths = output_paths(batch, output_dir)
    file_ids = {"output": batch.output_file_id, "error": batch.error_file_id}
    written: dict[str, Path | None] = {}
    for side, file_id in file_ids.items():
        written[side] = None if file_id is None else sdk.files.download(file_id, paths[side])
    return written


def error_lines(batch: BatchInfo, shown: int = SHOWN_ERRORS) -> list[str]:
    """A failed batch's errors, one line each: the first `shown`, then how many more."""
    errors = batch.errors.data if batch.errors is not None else []
    lines = []
    for error in errors[:shown]:
        where = f"line {error.line}: " if error.line is not None else ""
        param = f" ({error.param})" if error.param else ""
        lines.append(f"  {where}{error.code}{param}: {error.message}")
    if len(errors) > shown:
        lines.append(f"  and {len(errors) - shown} more")
    return lines


def _show(batch: BatchInfo, as_json: bool) -> None:
    if as_json:
        print_json(batch)
        return
    pairs: list[tuple[str, Any]] = [
        ("status", batch.status),
        ("endpoint", batch.endpoint),
        ("model", batch.model),
        ("requests", counts_text(batch)),
        ("input file", batch.input_file_id),
        ("output file", batch.output_file_id),
        ("error file", batch.error_file_id),
        ("created", when(batch.created_at)),
        ("expires", when(batch.expires_at)),
    ]
    ended = batch.completed_at or batch.failed_at or batch.expired_at or batch.cancelled_at
    if ended is not None:
        pairs.append(("ended", when(ended)))
    if batch.metadata:
        pairs.append(("metadata", batch.metadata))
    if batch.usage is not None:
        pairs.append(("tokens", batch.usage.total_tokens))
    fields(f"batch {batch.id}", pairs)
    for line in error_lines(batch):
        say(line)


def _summary(batch: BatchInfo, written: dict[str, Path | None]) -> None:
    if batch.status is BatchStatus.FAILED:
        errors = batch.errors.data if batch.errors is not None else []
        say(f"batch {batch.id} failed: {len(errors)} error(s) in the input file")
        for line in error_lines(batch):
            say(line)
    else:
        say(f"batch {batch.id} {batch.status}: {counts_text(batch)}")
    _say_paths(written)


def _say_paths(written: dict[str, Path | None]) -> None:
    for side, path in written.items():
        if path is not None:
            say(f"{side} file: {path}")


def _paths_json(written: dict[str, Path | None]) -> dict[str, str | None]:
    return {f"{side}_path": None if path is None else str(path) for side, path in written.items()}


@app.command()
def create(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="The requests, one JSON object a line (.jsonl)."
        ),
    ],
    endpoint: Annotated[
        str, typer.Option(help="Where each request goes, e.g. /v1/chat/completions.")
    ],
    queue: Annotated[
        str | None, typer.Option(help="The queue its tasks go to (default: the server's).")
    ] = None,
    window: Annotated[
        str, typer.Option("--window", help="Completion window: 24h, or Nm/Nh/Nd.")
    ] = "24h",
    metadata: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE, repeatable.", show_default=False)
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show progress until it ends, then download.")
    ] = False,
    output_dir: OutputDir = Path("."),
    server: Server = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Upload FILE and start a batch over it; with --wait, watch it and fetch the results."""
    tags = parse_metadata(metadata or [])
    with client(server, api_key) as sdk:
        uploaded = sdk.files.upload(file, purpose="batch")
        batch = sdk.batches.create(
            uploaded.id, endpoint, completion_window=window, metadata=tags, queue=queue
        )
        if not wait:
            _show(batch, as_json)
            return
        if not as_json:
            say(f"batch {batch.id} created from {file} ({uploaded.id})")
        batch = _wait(sdk, batch)
        written = download(sdk, batch, output_dir)
    if as_json:
        print_json({"batch": batch, **_paths_json(written)})
    else:
        _summary(batch, written)
    if batch.status is not BatchStatus.COMPLETED:
        raise typer.Exit(1)


def _wait(sdk: Client, batch: BatchInfo) -> BatchInfo:
    """The batch once it has ended, progress shown meanwhile; Ctrl-C stops only the waiting."""
    try:
        with BatchProgress() as progress:
            progress.update(batch)
            return sdk.batches.wait(batch.id, on_progress=progress.update)
    except KeyboardInterrupt:
        fail(
            f"stopped waiting; batch {batch.id} keeps running."
            f" See it with `conveyor batch get {batch.id}`"
            f" and fetch its files with `conveyor batch download {batch.id}` once it ends.",
            code=130,
        )
        raise AssertionError("unreachable") from None


@app.command("list")
def list_batches(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    server: Server = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """List batches, newest first."""
    with client(server, api_key) as sdk:
        batches = list(sdk.batches.list(limit=limit))
    if as_json:
        print_json(batches)
        return
    rows = [
        (
            b.id,
            b.status,
            b.endpoint,
            b.request_counts.completed,
            b.request_counts.failed,
            b.request_counts.total,
            when(b.created_at),
        )
        for b in batches
    ]
    table(None, ["batch", "status", "endpoint", "done", "failed", "total", "created"], rows)
    if not rows:
        say("no batches")


@app.command()
def get(
    batch_id: BatchId, server: Server = None, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Show a batch and its request counts."""
    with client(server, api_key) as sdk:
        batch = sdk.batches.get(batch_id)
    _show(batch, as_json)


@app.command()
def cancel(
    batch_id: BatchId, server: Server = None, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Cancel a batch: queued requests at once, running ones when they end."""
    with client(server, api_key) as sdk:
        batch = sdk.batches.cancel(batch_id)
    if as_json:
        print_json(batch)
    else:
        say(f"batch {batch.id} {batch.status}")


@app.command("download")
def download_files(
    batch_id: BatchId,
    output_dir: OutputDir = Path("."),
    server: Server = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Download an ended batch's output and error files."""
    with client(server, api_key) as sdk:
        batch = sdk.batches.get(batch_id)
        if not batch.finished:
            fail(f"batch {batch_id} is {batch.status}; its files are written when it ends")
        written = download(sdk, batch, output_dir)
    if as_json:
        print_json({"batch_id": batch.id, "status": batch.status, **_paths_json(written)})
        return
    _say_paths(written)
    if all(path is None for path in written.values()):
        say(f"batch {batch.id} ({batch.status}) has no output or error file")
