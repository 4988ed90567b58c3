"""`conveyor worker MODULE:HANDLER`: run a Worker from the command line.

`conveyor worker --forward-to URL` runs the same Worker with the built-in forwarding
handler (`conveyor.executors.forward`) instead: each task's data is POSTed to URL + the
task's endpoint. Its queues default to `batch`, the queue batches go to by default.
"""

from __future__ import annotations

import asyncio
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


def forward(
    url: str, queues: list[str], forwarding: dict[str, Any], options: dict[str, Any]
) -> None:
    """Run a forwarding worker for `queues` (default `batch`) until it stops."""
    from conveyor.executors.forward import DEFAULT_QUEUE, Forwarder

    given = {key: value for key, value in options.items() if value is not None}
    concurrency = given.pop("concurrency", None)
    if concurrency is not None:
        forwarding["concurrency"] = concurrency
    forwarder = Forwarder(url, **{k: v for k, v in forwarding.items() if v is not None})

    async def run() -> None:
        async with forwarder:
            await forwarder.worker(queues or [DEFAULT_QUEUE], **given).run()

    asyncio.run(run())


def worker(
    target: Annotated[
        str | None,
        typer.Argument(
            metavar="[MODULE:HANDLER]",
            help="A handler function (with --queues), a {queue: handler} dict, or a Worker;"
            " or none, with --forward-to.",
            show_default=False,
        ),
    ] = None,
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
    forward_to: Annotated[
        str | None,
        typer.Option(
            "--forward-to",
            help="Run no handler: POST each task's data to this OpenAI-compatible URL +"
            " the task's endpoint (http://host:8000 or http://host:8000/v1). --queues"
            " defaults to batch.",
            show_default=False,
        ),
    ] = None,
    upstream_key: Annotated[
        str | None,
        typer.Option(
            "--upstream-key",
            envvar="CONVEYOR_UPSTREAM_KEY",
            help="API key for --forward-to, sent as Bearer.",
            show_default=False,
        ),
    ] = None,
    request_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds each upstream request may take, a stream included (600)."),
    ] = None,
    rpm: Annotated[
        float | None,
        typer.Option(help="At most this many upstream requests a minute (default: no limit)."),
    ] = None,
    upstream_attempts: Annotated[
        int | None,
        typer.Option(help="Upstream attempts per task on connection errors, 408, 429 and 5xx (5)."),
    ] = None,
) -> None:
    """Run a worker: take tasks from --queues and run the handler on each until SIGTERM.

    With --forward-to instead of a handler, each task is sent to an OpenAI-compatible
    server and its answer recorded as the task's result.
    """
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
    if target is None and forward_to is None:
        fail("give a handler as MODULE:HANDLER, or --forward-to URL", code=2)
    if target is not None and forward_to is not None:
        fail("give a handler (MODULE:HANDLER) or --forward-to URL, not both", code=2)
    forwarding: dict[str, Any] = {
        "upstream_key": upstream_key,
        "request_timeout_s": request_timeout,
        "rpm": rpm,
        "max_attempts": upstream_attempts,
    }
    try:
        if forward_to is not None:
            forward(forward_to, names, forwarding, options)
            return
        assert target is not None
        if request_timeout is not None or rpm is not None or upstream_attempts is not None:
            fail("--request-timeout, --rpm and --upstream-attempts need --forward-to", code=2)
        built = build(load(target), names, options)
        built.run_sync()
    except ConveyorError as exc:
        fail(f"{type(exc).__name__}: {exc.message}", code=2)
