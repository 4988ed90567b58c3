"""Prometheus metrics: one registry per app, counters at the routes, depth read at scrape.

Depth per queue, level and state comes from the engine's counts when /metrics is
scraped, so it is exact and costs nothing on the hot routes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import Task


class Metrics:
    """The app's metrics, in a registry of their own (so tests can run many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.put = Counter("conveyor_tasks_put", "Tasks put", ["queue"], registry=r)
        self.taken = Counter(
            "conveyor_tasks_taken", "Tasks leased to workers", ["queue"], registry=r
        )
        self.completed = Counter(
            "conveyor_tasks_completed", "Tasks completed", ["queue"], registry=r
        )
        self.failed = Counter(
            "conveyor_tasks_failed", "Failed attempts reported by workers", ["queue"], registry=r
        )
        self.depth = Gauge(
            "conveyor_queue_tasks",
            "Tasks per queue, level and state",
            ["queue", "level", "state"],
            registry=r,
        )
        self.waiters = Gauge(
            "conveyor_open_waiters",
            "Blocking and streaming requests waiting for a result",
            ["mode"],
            registry=r,
        )
        self.callbacks = Counter(
            "conveyor_callbacks", "Callback deliveries by outcome", ["outcome"], registry=r
        )
        self.latency = Histogram(
            "conveyor_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=(
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                10,
                60,
            ),
            registry=r,
        )

        self.blocking_waiters = self.waiters.labels("blocking")
        self.streaming_waiters = self.waiters.labels("streaming")
        # labels() costs microseconds a call: the hot routes reuse each labelled child
        self._children: dict[tuple[int, str], Counter] = {}
        self._latencies: dict[tuple[str, str], Histogram] = {}

    def add(self, counter: Counter, queue: str, n: int = 1) -> None:
        """Add `n` to `counter` under `queue`."""
        child = self._children.get((id(counter), queue))
        if child is None:
            child = self._children[id(counter), queue] = counter.labels(queue)
        child.inc(n)

    def count_tasks(self, counter: Counter, tasks: Iterable[Task]) -> None:
        """Add each task to `counter` under its queue."""
        per_queue: dict[str, int] = {}
        for task in tasks:
            per_queue[task.queue] = per_queue.get(task.queue, 0) + 1
        for queue, n in per_queue.items():
            self.add(counter, queue, n)

    def observe(self, method: str, route: str, seconds: float) -> None:
        """Record one request's latency under its method and route template."""
        child = self._latencies.get((method, route))
        if child is None:
            child = self._latencies[method, route] = self.latency.labels(method, route)
        child.observe(seconds)


def metrics_of(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def scrape(request: Request) -> Response:
    metrics = metrics_of(request)
    tasks = request.app.state.tasks
    metrics.depth.clear()
    for stats in await tasks.store_stats():
        for level in stats.levels:
            for state in TaskStatus:
                metrics.depth.labels(stats.queue.name, str(level.level), state.value).set(
                    level.counts.get(state, 0)
                )
    dispatcher = getattr(request.app.state, "dispatcher", None)
    if dispatcher is not None:
        metrics.callbacks.labels("delivered")._value.set(dispatcher.delivered)
        metrics.callbacks.labels("failed")._value.set(dispatcher.failed)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


class LatencyMiddleware:
    """Times every HTTP request into the latency histogram, labelled by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            # the router leaves the matched route in the scope: label by its template, not
            # the path, or every task id would make a label of its own
            route = scope.get("route")
            label = getattr(route, "path", "unmatched")
            self.metrics.observe(scope["method"], label, time.perf_counter() - start)
