"""`conveyor task put|get|cancel|list`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated, Any

import msgspec
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
    text,
    when,
)
from conveyor.domain.states import TaskStatus
from conveyor.sdk import StreamEvent, TaskInfo, end_of

app = typer.Typer(no_args_is_help=True, help="Put, inspect, list and cancel tasks.")

TaskId = Annotated[str, typer.Argument(help="Task id.", show_default=False)]


class Mode(StrEnum):
    CALLBACK = "callback"
    BLOCKING = "blocking"
    STREAMING = "streaming"


def _json_argument(value: str | None, what: str) -> Any:
    """A JSON argument; `-` reads it from stdin."""
    if value is None:
        return None
    if value == "-":
        value = sys.stdin.read()
    try:
        return msgspec.json.decode(value)
    except msgspec.DecodeError as exc:
        fail(f"{what} must be JSON ({exc}); quote a string as '\"text\"'", code=2)
        raise AssertionError("unreachable") from exc


def _show(task: TaskInfo, as_json: bool) -> None:
    if as_json:
        print_json(task)
        return
    pairs: list[tuple[str, Any]] = [
        ("queue", f"{task.queue}:{task.level}"),
        ("status", task.status),
        ("endpoint", task.endpoint or None),
        ("attempts", f"{task.attempts}/{task.max_attempts}"),
        ("created", when(task.created_at)),
        ("started", when(task.started_at)),
        ("completed", when(task.completed_at)),
    ]
    pairs += [(name, value) for name, value in _optional(task) if value is not None]
    pairs.append(("data", task.data))
    fields(f"task {task.task_id}", pairs)


def _optional(task: TaskInfo) -> list[tuple[str, Any]]:
    return [
        ("custom id", task.custom_id),
        ("group", task.group),
        ("callback url", task.callback_url),
        ("metadata", task.metadata),
        ("worker", task.worker_id or None),
        ("lease expires", None if task.lease_expires_at is None else when(task.lease_expires_at)),
        ("cancel requested", "yes" if task.cancel_requested else None),
        ("result", task.result),
        ("error", task.error),
    ]


@app.command()
def put(
    queue: Annotated[str, typer.Argument(help="Queue name.", show_default=False)],
    data: Annotated[
        str | None, typer.Argument(help="The task's data as JSON ('-' reads stdin).")
    ] = None,
    level: Annotated[int, typer.Option(help="Priority level, 0 most urgent.")] = 0,
    endpoint: Annotated[
        str, typer.Option(help="What kind of work, e.g. /v1/chat/completions.")
    ] = "",
    mode: Annotated[
        Mode,
        typer.Option(
            help="callback: answer at once; blocking: wait for the result;"
            " streaming: print the worker's events as they arrive, then the result."
        ),
    ] = Mode.CALLBACK,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds: the task's deadline, or a blocking wait.")
    ] = None,
    delay: Annotated[float | None, typer.Option(help="Seconds before it may run.")] = None,
    max_attempts: Annotated[int | None, typer.Option(help="Attempts before it fails.")] = None,
    task_id: Annotated[str | None, typer.Option(help="Your id, for idempotent puts.")] = None,
    custom_id: Annotated[str | None, typer.Option(help="Your reference.")] = None,
    group: Annotated[str | None, typer.Option(help="Tenant or fairness key.")] = None,
    callback_url: Annotated[str | None, typer.Option(help="Where to POST the result.")] = None,
    metadata: Annotated[str | None, typer.Option(help="A JSON object.")] = None,
    server: Server = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Put a task; --mode blocking or streaming waits for a worker's result and prints it."""
    options: dict[str, Any] = {
        "level": level,
        "endpoint": endpoint,
        "timeout_s": timeout,
        "delay_s": delay,
        "max_attempts": max_attempts,
        "task_id": task_id,
        "custom_id": custom_id,
        "group": group,
        "callback_url": callback_url,
        "metadata": _json_argument(metadata, "--metadata"),
    }
    payload = _json_argument(data, "DATA")
    with client(server, api_key) as sdk:
        if mode is Mode.STREAMING:
            _stream(sdk.stream(queue, payload, **options), as_json)
            return
        if mode is Mode.BLOCKING:
            result = sdk.run(queue, payload, **options)
        else:
            _show(sdk.put(queue, payload, **options), as_json)
            return
    if as_json:
        print_json(result)
    else:
        say(text(result.body) if isinstance(result.body, str) else _pretty(result.body))
    if result.status_code >= 400:
        raise typer.Exit(1)


def _stream(messages: Iterator[StreamEvent], as_json: bool) -> None:
    """Print each message as it comes (JSON Lines with --json); exit 1 unless it succeeded."""
    for message in messages:
        if as_json:
            sys.stdout.write(msgspec.json.encode(message).decode() + "\n")
            sys.stdout.flush()
        end = end_of(message)
        if end is None:
            if not as_json:
                say(f"{message.event}: {text(message.data)}")
            continue
        if not as_json:
            outcome = end.result.body if end.result is not None else end.error
            say(f"{end.status}: {text(outcome)}")
        if end.status is not TaskStatus.SUCCEEDED:
            raise typer.Exit(1)


def _pretty(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


@app.command()
def get(
    task_id: TaskId, server: Server = None, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Show a task."""
    with client(server, api_key) as sdk:
        task = sdk.get_task(task_id)
    _show(task, as_json)


@app.command()
def cancel(
    task_id: TaskId, server: Server = None, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Cancel a task (a running one stops at its worker's next heartbeat)."""
    with client(server, api_key) as sdk:
        task = sdk.cancel(task_id)
    if as_json:
        print_json(task)
    elif task.status is TaskStatus.CANCELLED:
        say(f"task {task_id} cancelled")
    else:
        say(f"task {task_id} is {task.status}; it is cancelled when its worker next reports")


@app.command("list")
def list_tasks(
    queue: Annotated[str, typer.Argument(help="Queue name.", show_default=False)],
    status: Annotated[TaskStatus | None, typer.Option(help="Only tasks in this state.")] = None,
    after: Annotated[str | None, typer.Option(help="Cursor from the previous page.")] = None,
    limit: Annotated[int, typer.Option(help="Tasks per page.")] = 100,
    server: Server = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """List a queue's tasks, oldest first."""
    with client(server, api_key) as sdk:
        page = sdk.list_tasks(queue, status, after=after, limit=limit)
    if as_json:
        print_json(page)
        return
    rows = [
        (
            t.task_id,
            t.status,
            t.level,
            f"{t.attempts}/{t.max_attempts}",
            when(t.created_at),
            t.custom_id,
        )
        for t in page.data
    ]
    table(None, ["task", "status", "level", "attempts", "created", "custom id"], rows)
    if page.has_more:
        say(f"more: --after {page.next_cursor}")
