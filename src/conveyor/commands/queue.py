"""`conveyor queue register|list|stats|pause|resume|obliterate`."""

from __future__ import annotations

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
from conveyor.domain.states import TaskStatus
from conveyor.sdk import QueueInfo

app = typer.Typer(no_args_is_help=True, help="Register, inspect, pause and delete queues.")

Name = Annotated[str, typer.Argument(help="Queue name.", show_default=False)]


def _show(queue: QueueInfo, as_json: bool) -> None:
    if as_json:
        print_json(queue)
        return
    fields(
        f"queue {queue.name}",
        [
            ("paused", "yes" if queue.paused else "no"),
            ("levels", f"0..{queue.max_level}"),
            ("process timeout", f"{queue.process_timeout:g} s"),
            ("max attempts", queue.max_attempts),
            ("backoff", queue.backoff),
            ("retention", f"{queue.retention:g} s"),
            ("created", when(queue.created_at)),
        ],
    )


@app.command()
def register(
    name: Name,
    max_level: Annotated[int | None, typer.Option(help="Highest priority level.")] = None,
    lease: Annotated[
        float | None, typer.Option("--lease", help="Default process timeout (lease), seconds.")
    ] = None,
    max_attempts: Annotated[int | None, typer.Option(help="Attempts before a task fails.")] = None,
    retention: Annotated[
        float | None, typer.Option(help="Seconds a finished task is kept.")
    ] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Register it paused.")] = False,
    server: Server = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Register a queue (or change an existing queue's defaults)."""
    with client(server, api_key) as sdk:
        queue = sdk.register_queue(
            name,
            paused=paused,
            max_level=max_level,
            lease_s=lease,
            max_attempts=max_attempts,
            retention_s=retention,
        )
    _show(queue, as_json)


@app.command("list")
def list_queues(server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """List the queues."""
    with client(server, api_key) as sdk:
        queues = sdk.list_queues()
    if as_json:
        print_json(queues)
        return
    rows = [
        (
            q.name,
            "paused" if q.paused else "active",
            f"0..{q.max_level}",
            f"{q.process_timeout:g} s",
            q.max_attempts,
            when(q.created_at),
        )
        for q in queues
    ]
    table(None, ["queue", "state", "levels", "lease", "attempts", "created"], rows)


@app.command()
def stats(
    name: Name, server: Server = None, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Show a queue's task counts per level and state."""
    with client(server, api_key) as sdk:
        queue = sdk.get_queue(name)
    if as_json:
        print_json(queue)
        return
    states = list(TaskStatus)
    rows = [
        (
            level.level,
            *(level.counts.get(state, 0) for state in states),
            "-" if level.oldest_queued_age is None else f"{level.oldest_queued_age:.1f} s",
        )
        for level in queue.levels or []
    ]
    title = f"queue {queue.name}" + (" (paused)" if queue.paused else "")
    table(title, ["level", *states, "oldest queued"], rows)
    if not rows:
        say("no tasks")


@app.command()
def pause(
    name: Name, server: Server = None, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Pause a queue: puts still land, takes get nothing."""
    with client(server, api_key) as sdk:
        queue = sdk.pause_queue(name)
    print_json(queue) if as_json else say(f"queue {name} paused")


@app.command()
def resume(
    name: Name, server: Server = None, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Resume a paused queue."""
    with client(server, api_key) as sdk:
        queue = sdk.resume_queue(name)
    print_json(queue) if as_json else say(f"queue {name} resumed")


@app.command()
def obliterate(
    name: Name,
    force: Annotated[bool, typer.Option("--force", help="Delete running tasks too.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    server: Server = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Delete a queue and all its tasks."""
    if not yes:
        typer.confirm(f"Delete queue {name} and all its tasks?", abort=True)
    with client(server, api_key) as sdk:
        deleted = sdk.obliterate_queue(name, force=force)
    if as_json:
        print_json({"name": name, "deleted": True, "tasks_deleted": deleted})
    else:
        say(f"queue {name} deleted with {deleted} task(s)")
