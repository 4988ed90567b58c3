"""What the client commands share: server options, error handling, tables and JSON."""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import httpx
import msgspec
import typer
from rich.console import Console
from rich.table import Table

from conveyor.errors import ConveyorError
from conveyor.sdk import Client

Server = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="CONVEYOR_URL",
        help="Server URL (default http://127.0.0.1:8080).",
        show_default=False,
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="CONVEYOR_API_KEY", help="API key, sent as Bearer.", show_default=False
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

# piped output is not cut to 80 columns: tables stay one row per line for grep and less
_stdout = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 240)
_stderr = Console(stderr=True, soft_wrap=True)


@contextlib.contextmanager
def client(server: str | None, api_key: str | None) -> Iterator[Client]:
    """A Client for a command; a Conveyor or network error ends the command with exit 1."""
    sdk = Client(server, api_key)
    try:
        with sdk:
            yield sdk
    except ConveyorError as exc:
        fail(f"{type(exc).__name__}: {exc.message}")
    except httpx.TransportError as exc:
        fail(f"cannot reach the server at {sdk.server}: {exc}")


def fail(message: str, code: int = 1) -> None:
    """Print `message` to stderr and end the command."""
    _stderr.print(f"conveyor: {message}", markup=False, highlight=False)
    raise typer.Exit(code)


def print_json(value: Any) -> None:
    """`value` (structs, lists, dicts) as JSON on stdout."""
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")


def when(timestamp: float | None) -> str:
    """A Unix time as local date and time, or a dash."""
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="seconds")


def text(value: Any) -> str:
    """A value for a table cell: JSON for structures, a dash for None."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Rows as a table on stdout."""
    grid = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for index, column in enumerate(columns):
        grid.add_column(column, no_wrap=index < len(columns) - 1, overflow="fold")
    for row in rows:
        grid.add_row(*(text(cell) for cell in row))
    _stdout.print(grid)


def fields(title: str, pairs: Sequence[tuple[str, Any]]) -> None:
    """One object as a two-column table of its fields."""
    grid = Table(title=title, title_justify="left", show_header=False, show_edge=False)
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name, value in pairs:
        grid.add_row(name, text(value))
    _stdout.print(grid)


def say(message: str) -> None:
    """A line for people on stdout."""
    _stdout.print(message, markup=False, highlight=False)
