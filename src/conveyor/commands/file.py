"""`conveyor file upload|list|get|download|delete`: OpenAI-style files from the shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from conveyor.commands._output import (
    ApiKey,
    AsJson,
    Server,
    client,
    fields,
    print_json,
    say,
    table,
    when,
)
from conveyor.sdk import FileInfo

app = typer.Typer(no_args_is_help=True, help="Upload, list, download and delete files.")

FileId = Annotated[str, typer.Argument(help="File id.", show_default=False)]


def _show(file: FileInfo, as_json: bool) -> None:
    if as_json:
        print_json(file)
        return
    fields(
        f"file {file.id}",
        [
            ("filename", file.filename),
            ("purpose", file.purpose),
            ("bytes", file.bytes),
            ("status", file.status),
            ("created", when(file.created_at)),
            ("expires", when(file.expires_at)),
        ],
    )


@app.command()
def upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The file to upload.")],
    purpose: Annotated[str, typer.Option(help="batch, user_data, fine-tune, ...")] = "batch",
    server: Server = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Upload a file (streamed from disk)."""
    with client(server, api_key) as sdk:
        file = sdk.files.upload(path, purpose=purpose)
    _show(file, as_json)


@app.command("list")
def list_files(
    purpose: Annotated[str | None, typer.Option(help="Only files with this purpose.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    server: Server = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """List files, newest first."""
    with client(server, api_key) as sdk:
        files = list(sdk.files.list(purpose=purpose, limit=limit))
    if as_json:
        print_json(files)
        return
    rows = [(f.id, f.filename, f.purpose, f.bytes, when(f.created_at)) for f in files]
    table(None, ["file", "filename", "purpose", "bytes", "created"], rows)
    if not rows:
        say("no files")


@app.command()
def get(
    file_id: FileId, server: Server = None, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Show a file."""
    with client(server, api_key) as sdk:
        file = sdk.files.get(file_id)
    _show(file, as_json)


@app.command()
def download(
    file_id: FileId,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", dir_okay=False, help="Where to write it (default: its filename)."
        ),
    ] = None,
    server: Server = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Download a file's contents."""
    with client(server, api_key) as sdk:
        if output is None:
            output = Path(Path(sdk.files.get(file_id).filename).name or file_id)
        path = sdk.files.download(file_id, output)
    if as_json:
        print_json({"id": file_id, "path": str(path)})
    else:
        say(f"file {file_id}: {path}")


@app.command()
def delete(
    file_id: FileId, server: Server = None, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Delete a file and its contents."""
    with client(server, api_key) as sdk:
        sdk.files.delete(file_id)
    if as_json:
        print_json({"id": file_id, "object": "file", "deleted": True})
    else:
        say(f"file {file_id} deleted")
