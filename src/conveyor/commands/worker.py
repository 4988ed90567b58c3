"""`conveyor worker MODULE:HANDLER`: run a Worker from the command line."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import typer

from conveyor.commands._output import ApiKey, Server, fail
from conveyor.domain.strategies import Strategy
from conveyor.errors import ConveyorError
from conveyor.sdk import Worker


def load(target: str) -> Any:
    """The object `module:name` names (the current directory is importable, as for uvicorn)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        fail(f"give the handler as MODULE:NAME, got {target!r}", code=2)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as exc:
        fail(f"cannot import {module_name}: {exc}", code=2)
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            fail(f"{module_name} has no {attribute}", code=2)
    return value


def build(
    target: Any,
    queues: list[str],
    options: dict[str, Any],
) -> Worker:
    """A Worker from what MODULE:HANDLER names: a Worker, a {queue: handler} map, or a handler."""
    given = {key: value for key, value in options.items() if value is not None}
    if isinstance(target, Worker):
        for key, value in given.items():
            setattr(target, key, value)
        if queues:
            target.queues = queues
        return target
    handlers: Mapping[str, Callable[..., Any]]
    if isinstance(target, Mapping):
        handlers = dict(target)
    elif callable(target):
        if not queues:
            fail("name the queues this handler serves with --queues", code=2)
        handlers = {queue.partition(":")[0]: target for queue in queues}
    else:
        fail(f"{target!r} is not a Worker, a handler or a map of queue to handler", code=2)
    return Worker(handlers, queues=queues or None, **given)


def worker(
    target: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:HANDLER",
            help="A handler function (with --queues), a {queue: handler} dict, or a Worker.",
            show_default=False,
        ),
    ],
    queues: Annotated[
        list[str] | None,
        typer.Option(
            "--queues",
            "-q",
            help="Queues to take from, as name or name:level, in order (repeat or comma-separate).",
        ),
    ] = None,
    strategy: Annotated[
        Strategy | None, typer.Option(help="How takes choose among queues.")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="Tasks run at once (default 16).")] = None,
    lease: Annotated[
        float | None,
        typer.Option("--lease", help="Lease per task, seconds (default: the queue's)."),
    ] = None,
    grace_period: Annotated[
        float | None, typer.Option(help="Seconds running tasks get to finish on SIGTERM (30).")
    ] = None,
    exit_when_drained: Annotated[
        bool, typer.Option("--exit-when-drained", help="Stop once a take finds nothing queued.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    server: Server = None,
    api_key: ApiKey = None,
) -> None:
    """Run a worker: take tasks from --queues and run the handler on each until SIGTERM."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    names = [name.strip() for item in queues or [] for name in item.split(",") if name.strip()]
    options: dict[str, Any] = {
        "strategy": strategy,
        "concurrency": concurrency,
        "lease_s": lease,
        "grace_period_s": grace_period,
        "exit_when_drained": exit_when_drained or None,
        "server": server,
        "api_key": api_key,
    }
    try:
        built = build(load(target), names, options)
        built.run_sync()
    except ConveyorError as exc:
        fail(f"{type(exc).__name__}: {exc.message}", code=2)
