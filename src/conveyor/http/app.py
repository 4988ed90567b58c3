"""The ASGI app: routes, error handlers, and the lifespan that owns engine and sweeper."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from conveyor.blobs import create_blob_store
from conveyor.engines import create_engine
from conveyor.http import batches, bella, events, files, openapi, ops, queues, tasks, workers
from conveyor.http.auth import AuthMiddleware, parse_keys
from conveyor.http.errors import HANDLERS
from conveyor.http.hot import HotRoutes
from conveyor.http.metrics import LatencyMiddleware, Metrics, scrape
from conveyor.service.batch_runner import BatchRunner
from conveyor.service.batches import BatchService
from conveyor.service.callbacks import CallbackDispatcher, CallbackPolicy
from conveyor.service.files import FileService
from conveyor.service.maintenance import Sweeper
from conveyor.service.periodic import Periodic
from conveyor.service.tasks import TaskService
from conveyor.settings import Settings, from_environment

log = logging.getLogger(__name__)

FILE_EXPIRY_S = 60.0  # how often expired files are deleted (files expire by the hour)
# partial uploads of a killed process: looked for every 10 minutes, removed after an hour
# untouched (a live upload touches its file at least once per MiB written)
ABANDONED_SWEEP_S = 600.0
ABANDONED_AFTER_S = 3600.0

# worker routes first: /v1/tasks/take must not be read as a task id
ROUTES = [
    *workers.ROUTES,
    *events.ROUTES,
    *tasks.ROUTES,
    *queues.ROUTES,
    *bella.ROUTES,
    *files.ROUTES,
    *batches.ROUTES,
    *ops.ROUTES,
    Route("/metrics", scrape, methods=["GET"]),
]

# answered without the router (see http/hot.py): what producers and workers call per task
HOT_ROUTES = [*workers.ROUTES, tasks.PUT]


def create_app(settings: Settings) -> Starlette:
    """The app for `settings`; the engine opens and closes with the app's lifespan."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = create_engine(settings.engine_url)
        await engine.open()
        policy = CallbackPolicy(allow_private=settings.allow_private_callbacks)
        try:
            app.state.engine = engine
            app.state.tasks = TaskService(
                engine, strict=settings.strict_queues, callback_policy=policy
            )
            projects: dict[str, TaskService] = {"": app.state.tasks}

            def for_project(project: str) -> TaskService:
                # one service per project: each keeps its own caches
                if project not in projects:
                    projects[project] = TaskService(
                        engine,
                        strict=settings.strict_queues,
                        callback_policy=policy,
                        project=project,
                    )
                return projects[project]

            app.state.projects = for_project
            blobs = create_blob_store(settings.blob_url)
            file_services: dict[str, FileService] = {}

            def files_for(project: str) -> FileService:
                if project not in file_services:
                    file_services[project] = FileService(
                        engine, blobs, project, settings.max_file_bytes
                    )
                return file_services[project]

            app.state.files = files_for
            batch_services: dict[str, BatchService] = {}

            def batches_for(project: str) -> BatchService:
                if project not in batch_services:
                    batch_services[project] = BatchService(
                        engine,
                        files_for(project),
                        for_project(project),
                        project=project,
                        max_requests=settings.max_batch_requests,
                        wake=runner.wake,
                    )
                return batch_services[project]

            runner = BatchRunner(engine, batches_for)
            app.state.batches = batches_for
            # the background loops stop before the engine closes
            async with (
                Sweeper(engine),
                runner,
                CallbackDispatcher(engine, secret=_secret(settings), policy=policy) as dispatcher,
                Periodic(files_for("").expire, FILE_EXPIRY_S, name="conveyor-file-expiry"),
                Periodic(
                    partial(blobs.remove_abandoned, ABANDONED_AFTER_S),
                    ABANDONED_SWEEP_S,
                    name="conveyor-abandoned-uploads",
                ),
            ):
                app.state.dispatcher = dispatcher
                yield
        finally:
            await engine.close()

    metrics = Metrics()
    keys = parse_keys(settings.api_keys, settings.worker_keys, settings.admin_keys)
    app = Starlette(
        routes=ROUTES,
        exception_handlers=HANDLERS,
        lifespan=lifespan,
        middleware=[
            Middleware(LatencyMiddleware, metrics=metrics),
            Middleware(AuthMiddleware, keys=keys),
            Middleware(HotRoutes, routes=HOT_ROUTES),
        ],
    )
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.openapi = openapi.build(ROUTES)
    return app


def _secret(settings: Settings) -> bytes:
    if settings.callback_secret:
        return settings.callback_secret.encode()
    log.warning(
        "no CONVEYOR_CALLBACK_SECRET set: callbacks are signed with a key that changes at"
        " every start, so receivers cannot verify them"
    )
    return secrets.token_bytes(32)


def app_from_environment() -> Starlette:
    """The factory a server worker process calls: settings from CONVEYOR_* variables."""
    return create_app(from_environment().validated())
