"""The `conveyor` command."""

from __future__ import annotations

import os
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import typer

from conveyor.errors import InvalidInput
from conveyor.settings import DEFAULT_DATA_DIR, Settings, to_environment

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Conveyor: a task queue for AI workloads."
)

APP_FACTORY = "conveyor.http.app:app_from_environment"


@app.callback()
def conveyor() -> None:
    """Conveyor: a task queue for AI workloads."""


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(envvar="CONVEYOR_HOST", help="Address to bind.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="CONVEYOR_PORT", help="Port to listen on.")] = 8080,
    engine: Annotated[
        str,
        typer.Option(
            envvar="CONVEYOR_ENGINE",
            help="Engine URL: sqlite:///path/conveyor.db, postgresql://host/db[?schema=NAME]"
            " or memory://. Default: SQLite under --data-dir.",
        ),
    ] = "",
    data_dir: Annotated[
        str, typer.Option(envvar="CONVEYOR_DATA_DIR", help="Where the default SQLite store lives.")
    ] = DEFAULT_DATA_DIR,
    server: Annotated[
        str,
        typer.Option(
            envvar="CONVEYOR_SERVER",
            help="HTTP server: uvicorn (uvloop + httptools) or granian.",
        ),
    ] = "uvicorn",
    strict_queues: Annotated[
        bool,
        typer.Option(
            envvar="CONVEYOR_STRICT_QUEUES", help="Refuse puts to queues not registered first."
        ),
    ] = False,
    insecure: Annotated[
        bool,
        typer.Option(
            envvar="CONVEYOR_INSECURE",
            help="Allow binding a non-loopback address without API keys.",
        ),
    ] = False,
    allow_private_callbacks: Annotated[
        bool,
        typer.Option(
            envvar="CONVEYOR_ALLOW_PRIVATE_CALLBACKS",
            help="Allow callback URLs on loopback, private or link-local addresses.",
        ),
    ] = False,
    blob_dir: Annotated[
        str,
        typer.Option(
            envvar="CONVEYOR_BLOB_DIR",
            help="Where uploaded and output files live: a directory or file:// URL."
            " Default: files under --data-dir.",
        ),
    ] = "",
    max_file_bytes: Annotated[
        int,
        typer.Option(
            envvar="CONVEYOR_MAX_FILE_BYTES", help="The largest file an upload may be, in bytes."
        ),
    ] = 512 * 1024 * 1024,
    batch_queue: Annotated[
        str,
        typer.Option(
            envvar="CONVEYOR_BATCH_QUEUE",
            help="The queue a batch's tasks go to unless X-Conveyor-Queue or metadata.queue"
            " names one.",
        ),
    ] = "batch",
    max_batch_requests: Annotated[
        int,
        typer.Option(
            envvar="CONVEYOR_MAX_BATCH_REQUESTS",
            help="The most requests one batch input file may hold.",
        ),
    ] = 50_000,
) -> None:
    """Start the server (SQLite under ./conveyor-data unless --engine says otherwise)."""
    settings = Settings(
        host=host,
        port=port,
        engine=engine,
        data_dir=data_dir,
        server=server,
        strict_queues=strict_queues,
        insecure=insecure,
        allow_private_callbacks=allow_private_callbacks,
        blob_dir=blob_dir,
        max_file_bytes=max_file_bytes,
        batch_queue=batch_queue,
        max_batch_requests=max_batch_requests,
        # secrets come from the environment only, never from argv
        callback_secret=os.environ.get("CONVEYOR_CALLBACK_SECRET", ""),
        api_keys=os.environ.get("CONVEYOR_API_KEYS", ""),
        worker_keys=os.environ.get("CONVEYOR_WORKER_KEYS", ""),
        admin_keys=os.environ.get("CONVEYOR_ADMIN_KEYS", ""),
    )
    try:
        settings.validated()
        from conveyor.http.auth import parse_keys  # refuse malformed keys before starting

        parse_keys(settings.api_keys, settings.worker_keys, settings.admin_keys)
    except InvalidInput as exc:
        typer.echo(f"conveyor serve: {exc.message}", err=True)
        raise typer.Exit(2) from None
    os.environ.update(to_environment(settings))
    typer.echo(
        f"Conveyor serving http://{host}:{port} on {_without_password(settings.engine_url)}"
        f" ({server})",
        err=True,
    )
    if server == "uvicorn":
        import uvicorn

        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=host,
            port=port,
            loop="uvloop",
            http="httptools",
            backlog=4096,
            access_log=False,
            log_level="warning",
        )
        return
    from granian import Granian
    from granian.constants import Interfaces, Loops

    Granian(
        APP_FACTORY,
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        workers=1,
        backlog=4096,
        # blocking and streaming requests wait for long stretches: admit many at once
        # (granian's default is backlog / workers, which would cap them at 4,096)
        backpressure=32_768,
        log_access=False,
    ).serve()


def _client_commands() -> None:
    """The client side: `queue`, `task`, `worker`, `batch` and `file` (imported after `serve`)."""
    from conveyor.commands import batch, file, queue, task, worker

    app.add_typer(queue.app, name="queue")
    app.add_typer(task.app, name="task")
    app.add_typer(batch.app, name="batch")
    app.add_typer(file.app, name="file")
    app.command(name="worker")(worker.worker)


_client_commands()


def _without_password(url: str) -> str:
    """`url` with any password in it masked, to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def main() -> None:
    """Entry point of the console script."""
    app(prog_name="conveyor")


if __name__ == "__main__":
    main()
