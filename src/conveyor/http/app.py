"""The ASGI app: routes, error handlers, and the lifespan that owns engine and sweeper."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from conveyor.engines import create_engine
from conveyor.http import events, openapi, ops, queues, tasks, workers
from conveyor.http.errors import HANDLERS
from conveyor.service.maintenance import Sweeper
from conveyor.service.tasks import TaskService
from conveyor.settings import Settings, from_environment

# worker routes first: /v1/tasks/take must not be read as a task id
ROUTES = [*workers.ROUTES, *events.ROUTES, *tasks.ROUTES, *queues.ROUTES, *ops.ROUTES]


def create_app(settings: Settings) -> Starlette:
    """The app for `settings`; the engine opens and closes with the app's lifespan."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = create_engine(settings.engine_url)
        await engine.open()
        try:
            app.state.engine = engine
            app.state.tasks = TaskService(engine, strict=settings.strict_queues)
            # the sweeper stops before the engine closes
            async with Sweeper(engine):
                yield
        finally:
            await engine.close()

    app = Starlette(routes=ROUTES, exception_handlers=HANDLERS, lifespan=lifespan)
    app.state.settings = settings
    app.state.openapi = openapi.build(ROUTES)
    return app


def app_from_environment() -> Starlette:
    """The factory a server worker process calls: settings from CONVEYOR_* variables."""
    return create_app(from_environment().validated())
