"""The task use cases: validate through the domain, resolve queue defaults, call the engine."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncGenerator, Sequence

import msgspec

from conveyor.domain.clock import Clock, system_clock
from conveyor.domain.events import EventSpec, TaskEvent, build_events
from conveyor.domain.queues import (
    DEFAULT_MAX_LEVEL,
    QueueConfig,
    QueueUpdate,
    Source,
    resolve_sources,
    validate_queue_name,
)
from conveyor.domain.states import TaskStatus
from conveyor.domain.strategies import parse_strategy
from conveyor.domain.tasks import (
    MAX_BULK_PUT,
    MAX_TAKE_SIZE,
    MAX_TEXT,
    NewTask,
    Task,
    TaskError,
    TaskResult,
    TaskSpec,
    build_new_task,
    task_from_new,
    validate_lease_s,
    validate_result,
)
from conveyor.engines.engine import (
    Completion,
    Engine,
    Heartbeat,
    QueueStats,
    Settled,
    TakeRequest,
    TaskPage,
)
from conveyor.errors import ConveyorError, InvalidInput, InvalidTransition, NotFound, WaitTimeout
from conveyor.service.callbacks import CallbackPolicy
from conveyor.service.projects import Namespace
from conveyor.service.streams import follow

MAX_WAIT_S = 60.0
MAX_LIST_LIMIT = 1_000
QUEUE_CACHE_S = 1.0
TAKE_REQUEST_CACHE = 1024


class TaskService:
    """Queues and tasks over one engine, with every input checked before it is stored."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock = system_clock,
        strict: bool = False,
        callback_policy: CallbackPolicy | None = None,
        project: str = "",
    ):
        self._engine = engine
        self._clock = clock
        self._strict = strict
        self._callback_policy = callback_policy or CallbackPolicy(allow_private=True)
        self._ns = Namespace(project)
        self._queues: dict[str, tuple[float, QueueConfig]] = {}
        # a worker repeats the same take; its resolved form is kept as long as the configs
        self._take_requests: dict[tuple[object, ...], tuple[float, TakeRequest]] = {}

    # ---- queues ----
    async def register_queue(self, config: QueueConfig) -> QueueConfig:
        """Create a queue or replace its defaults."""
        config.validated()
        stored = await self._engine.register_queue(
            msgspec.structs.replace(config, name=self._ns.queue(config.name))
        )
        self._remember(stored)
        return self._ns.config(stored)

    async def update_queue(self, name: str, update: QueueUpdate) -> QueueConfig:
        """Pause, resume or change a queue's defaults."""
        stored = await self._engine.update_queue(
            self._ns.queue(validate_queue_name(name, "name")), update
        )
        self._remember(stored)
        return self._ns.config(stored)

    async def store_stats(self) -> list[QueueStats]:
        """Stats of every queue in the store, under stored names (all projects: metrics)."""
        return [await self._engine.queue_stats(q.name) for q in await self._engine.list_queues()]

    async def list_queues(self) -> list[QueueConfig]:
        """Every queue, by name."""
        queues = await self._engine.list_queues()
        return [self._ns.config(q) for q in queues if self._ns.owns(q.name)]

    async def queue_stats(self, name: str) -> QueueStats:
        """A queue's counts per level and state."""
        stats = await self._engine.queue_stats(self._ns.queue(validate_queue_name(name, "name")))
        return self._ns.stats(stats)

    async def obliterate_queue(self, name: str, *, force: bool = False) -> int:
        """Delete a queue and every task in it."""
        stored = self._ns.queue(validate_queue_name(name, "name"))
        self._queues.pop(stored, None)
        self._take_requests.clear()
        return await self._engine.obliterate_queue(stored, force=force)

    def _remember(self, config: QueueConfig) -> None:
        self._queues[config.name] = (time.monotonic() + QUEUE_CACHE_S, config)
        self._take_requests.clear()

    async def _known_queue(self, name: str) -> QueueConfig | None:
        """The queue's config; None if it is not registered, NotFound if the service is strict."""
        cached = self._queues.get(self._ns.queue(name))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            config = await self._engine.get_queue(self._ns.queue(name))
        except NotFound:
            if self._strict:
                raise NotFound(f"queue {name!r} does not exist; register it first") from None
            return None
        self._remember(config)
        return config

    # ---- producing ----
    async def _build(self, specs: Sequence[TaskSpec], now: float, *, bulk: bool) -> list[NewTask]:
        """Check every spec, then register the unknown queues they name with defaults.

        A refused spec leaves nothing written, not even a queue, so a typo in one field does
        not leave a stray queue behind.
        """
        configs: dict[str, QueueConfig] = {}
        unknown: list[str] = []
        built: list[NewTask] = []
        for index, spec in enumerate(specs):
            try:
                name = validate_queue_name(spec.queue)
                if name not in configs:
                    known = await self._known_queue(name)
                    if known is None:
                        unknown.append(name)
                    configs[name] = known or QueueConfig(name=self._ns.queue(name))
                built.append(build_new_task(spec, configs[name], now))
            except InvalidInput as exc:
                if not bulk:
                    raise
                param = f"tasks[{index}].{exc.param}" if exc.param else f"tasks[{index}]"
                raise InvalidInput(f"tasks[{index}]: {exc.message}", param=param) from None
        for url in {new.callback_url for new in built if new.callback_url is not None}:
            try:
                await self._callback_policy.check(url)
            except InvalidInput as exc:
                index = next(i for i, new in enumerate(built) if new.callback_url == url)
                if not bulk:
                    raise
                raise InvalidInput(
                    f"tasks[{index}]: {exc.message}", param=f"tasks[{index}].callback_url"
                ) from None
        raced = False
        for name in unknown:
            stored = await self._engine.register_queue(configs[name], replace=False)
            self._remember(stored)
            raced |= msgspec.structs.replace(stored, created_at=0.0) != configs[name]
        if raced:  # another caller registered it first, with other defaults: build with those
            return await self._build(specs, now, bulk=bulk)
        if self._ns.project:  # stored under the project's name for the queue
            return [msgspec.structs.replace(n, queue=self._ns.queue(n.queue)) for n in built]
        return built

    async def put(self, spec: TaskSpec) -> Task:
        """Store one task; an identical retry of a client-supplied id returns the stored task."""
        (new,) = await self._build([spec], self._clock(), bulk=False)
        (created,) = await self._engine.put([new])
        if not created:
            return self._ns.task(await self._engine.get_task(new.task_id))
        return self._ns.task(task_from_new(new, spec.data, spec.metadata))

    async def run(self, spec: TaskSpec, wait_s: float) -> Task:
        """Put a task and wait up to `wait_s` for it to end; return it ended.

        On timeout, or if the caller goes away (the awaiting coroutine is cancelled), the
        task is cancelled so that no worker spends effort on a result nobody will read;
        a timeout then raises WaitTimeout.
        """
        (new,) = await self._build([spec], self._clock(), bulk=False)
        deadline = time.monotonic() + wait_s
        async with self._engine.watch_task(new.task_id) as watch:
            # an identical earlier put: wait for that task
            (created,) = await self._engine.put([new])
            try:
                if created:  # queued just now: nothing to read before the watch fires
                    await watch.wait(wait_s)
                while True:
                    task = await self._engine.get_task(new.task_id)
                    remaining = deadline - time.monotonic()
                    if task.status.finished or remaining <= 0:
                        break
                    await watch.wait(remaining)
            except asyncio.CancelledError:
                await asyncio.shield(self._cancel_quietly(new.task_id))
                raise
        if not task.status.finished:
            await self._cancel_quietly(new.task_id)
            raise WaitTimeout(
                f"task {new.task_id} did not finish within {wait_s:g} s; it was cancelled"
            )
        return self._ns.task(task)

    async def stream(self, spec: TaskSpec, wait_s: float) -> AsyncGenerator[TaskEvent | Task, None]:
        """Check a task, and return the stream that puts it and yields its events, then it.

        Bad input raises here, before any stream starts. A stream that stops early (the
        caller went away) or runs past `wait_s` (WaitTimeout) cancels its task.
        """
        (new,) = await self._build([spec], self._clock(), bulk=False)
        return self._put_and_follow(new, time.monotonic() + wait_s)

    async def _put_and_follow(
        self, new: NewTask, deadline: float
    ) -> AsyncGenerator[TaskEvent | Task, None]:
        async with self._engine.watch_task(new.task_id) as watch:
            await self._engine.put([new])
            ended = False
            try:
                async for item in follow(
                    self._engine, new.task_id, watch, after=0, deadline=deadline
                ):
                    ended = isinstance(item, Task)
                    yield self._ns.task(item) if isinstance(item, Task) else item
            finally:
                if not ended:
                    await asyncio.shield(self._cancel_quietly(new.task_id))

    async def follow(
        self, task_id: str, *, after: int = 0, wait_s: float
    ) -> AsyncGenerator[TaskEvent | Task, None]:
        """Check the task exists; return its events above `after` as they come, then it."""
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise InvalidInput(
                f"after must be an event id (0 or more), got {after!r}", param="after"
            )
        self._ns.own_task(await self._engine.get_task(task_id))  # NotFound before a stream
        return self._follow(task_id, after, time.monotonic() + wait_s)

    async def _follow(
        self, task_id: str, after: int, deadline: float
    ) -> AsyncGenerator[TaskEvent | Task, None]:
        async with self._engine.watch_task(task_id) as watch:
            async for item in follow(self._engine, task_id, watch, after=after, deadline=deadline):
                yield self._ns.task(item) if isinstance(item, Task) else item

    async def append_events(self, task_id: str, lease_id: str, events: Sequence[EventSpec]) -> int:
        """Add a running task's events (progress, stream chunks); the id of the last one."""
        return await self._engine.append_events(task_id, lease_id, build_events(events))

    async def list_events(
        self, task_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[TaskEvent]:
        """A task's events so far, above `after`."""
        if self._ns.project:
            self._ns.own_task(await self._engine.get_task(task_id))
        return await self._engine.list_events(task_id, after=after, limit=limit)

    async def _cancel_quietly(self, task_id: str) -> None:
        # the task may have ended meanwhile: then there is nothing to cancel
        with contextlib.suppress(InvalidTransition, NotFound):
            await self._engine.cancel(task_id)

    async def put_many(self, specs: Sequence[TaskSpec]) -> list[str]:
        """Store all of `specs` or none; returns their task ids in order."""
        if not 1 <= len(specs) <= MAX_BULK_PUT:
            raise InvalidInput(
                f"a bulk put takes 1 to {MAX_BULK_PUT} tasks, got {len(specs)}", param="tasks"
            )
        built = await self._build(specs, self._clock(), bulk=True)
        await self._engine.put(built)
        return [new.task_id for new in built]

    # ---- working ----
    async def take(
        self,
        queues: Sequence[str],
        *,
        strategy: str = "fifo",
        size: int = 1,
        lease_s: float | None = None,
        worker_id: str = "",
        wait_s: float = 0.0,
    ) -> list[Task]:
        """Lease up to `size` tasks; with `wait_s`, wait that long for work to arrive."""
        if isinstance(queues, str) or not isinstance(queues, Sequence):
            raise InvalidInput("queues must be a list of 'name' or 'name:level'", param="queues")
        key = (tuple(map(str, queues)), strategy, size, lease_s, worker_id)
        cached = self._take_requests.get(key)
        if cached is not None and cached[0] > time.monotonic():
            request = cached[1]
        else:
            request = await self._take_request(queues, strategy, size, lease_s, worker_id)
            if len(self._take_requests) >= TAKE_REQUEST_CACHE:
                self._take_requests.clear()
            self._take_requests[key] = (time.monotonic() + QUEUE_CACHE_S, request)
        wait_s = _wait(wait_s)
        tasks = await self._engine.take(request)
        if tasks or wait_s == 0:
            return [self._ns.task(t) for t in tasks] if self._ns.project else tasks
        deadline = time.monotonic() + wait_s
        names = [s.queue for s in request.sources] or [
            self._ns.queue(n.partition(":")[0]) for n in queues
        ]
        async with self._engine.watch(names) as watch:
            while True:
                # the watch is registered before this take, so no put slips between them
                tasks = await self._engine.take(request)
                remaining = deadline - time.monotonic()
                if tasks or remaining <= 0:
                    return [self._ns.task(t) for t in tasks]
                await watch.wait(remaining)

    async def _take_request(
        self,
        queues: Sequence[str],
        strategy: str,
        size: int,
        lease_s: float | None,
        worker_id: str,
    ) -> TakeRequest:
        chosen = parse_strategy(strategy)
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_TAKE_SIZE:
            raise InvalidInput(
                f"size must be an integer from 1 to {MAX_TAKE_SIZE}, got {size!r}", param="size"
            )
        if not isinstance(worker_id, str) or len(worker_id) > MAX_TEXT["worker_id"]:
            raise InvalidInput(
                "worker_id must be a string of at most 256 characters", param="worker_id"
            )
        if isinstance(queues, str) or not isinstance(queues, Sequence):
            raise InvalidInput("queues must be a list of 'name' or 'name:level'", param="queues")
        names = {str(a).partition(":")[0] for a in queues}
        configs = {}
        for name in names:
            validate_queue_name(name, "queues")
            try:
                configs[name] = await self._engine.get_queue(self._ns.queue(name))
            except NotFound:
                continue  # a worker may start before the first put registers its queue
        max_levels = {name: config.max_level for name, config in configs.items()}
        sources = resolve_sources(list(queues), max_levels, DEFAULT_MAX_LEVEL)
        if lease_s is None:
            # each queue's own default applies to its tasks; one lease length per take
            lease = min(
                (configs[s.queue].lease_s for s in sources if s.queue in configs), default=60.0
            )
        else:
            lease = validate_lease_s(lease_s)
        stored = tuple(Source(self._ns.queue(s.queue), s.levels) for s in sources)
        return TakeRequest(
            sources=stored, strategy=chosen, size=size, lease_s=lease, worker_id=worker_id
        )

    async def complete(self, task_id: str, lease_id: str, result: TaskResult) -> Task:
        """Record a task's result (the lease, unguessable, keeps projects apart)."""
        return self._ns.task(
            await self._engine.complete(task_id, lease_id, validate_result(result))
        )

    async def complete_running(self, task_id: str, result: TaskResult) -> Task:
        """Complete a running task under whatever lease it holds (for Bella-Queue workers,
        whose complete carries no lease id). Raises InvalidTransition unless it runs."""
        task = await self._engine.get_task(task_id)
        self._ns.own_task(task)
        if task.lease_id is None:
            raise InvalidTransition(
                f"task {task_id} is {task.status}; only a running task completes"
            )
        return await self.complete(task_id, task.lease_id, result)

    async def complete_many(self, items: Sequence[Completion]) -> list[Settled | ConveyorError]:
        """Record many results at once; per item the task's end status or the refusal."""
        for item in items:
            validate_result(item.result)
        outcomes = await self._engine.complete_many(items)
        return [self._ns.settled(o) for o in outcomes] if self._ns.project else outcomes

    async def fail(
        self,
        task_id: str,
        lease_id: str,
        error: TaskError,
        *,
        retry: bool = True,
        retry_after_s: float | None = None,
    ) -> Task:
        """End an attempt with an error; the task retries or goes to the dead letter."""
        if retry_after_s is not None:
            retry_after_s = _seconds(retry_after_s, "retry_after", 7 * 86_400.0)
        task = await self._engine.fail(
            task_id, lease_id, error, retry=retry, retry_after_s=retry_after_s
        )
        return self._ns.task(task)

    async def heartbeat(
        self, task_id: str, lease_id: str, extend_s: float | None = None
    ) -> Heartbeat:
        """Extend a lease; the answer says whether the task was cancelled."""
        if extend_s is not None:
            extend_s = validate_lease_s(extend_s, "extend")
        return await self._engine.heartbeat(task_id, lease_id, extend_s)

    async def cancel(self, task_id: str) -> Task:
        """Cancel a task (a running one at its worker's next word)."""
        if self._ns.project:
            self._ns.own_task(await self._engine.get_task(task_id))
        return self._ns.task(await self._engine.cancel(task_id))

    async def requeue(self, task_id: str) -> Task:
        """Send a dead-lettered task back to its queue."""
        if self._ns.project:
            self._ns.own_task(await self._engine.get_task(task_id))
        return self._ns.task(await self._engine.requeue(task_id))

    async def get_task(self, task_id: str) -> Task:
        """One task."""
        return self._ns.own_task(await self._engine.get_task(task_id))

    async def list_tasks(
        self,
        queue: str,
        status: str | None = None,
        *,
        after: str | None = None,
        limit: int = 100,
    ) -> TaskPage:
        """A page of a queue's tasks, optionally in one state."""
        validate_queue_name(queue)
        parsed: TaskStatus | None = None
        if status is not None:
            try:
                parsed = TaskStatus(status)
            except ValueError:
                raise InvalidInput(
                    f"status must be one of {', '.join(TaskStatus)}, got {status!r}",
                    param="status",
                ) from None
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_LIST_LIMIT
        ):
            raise InvalidInput(
                f"limit must be from 1 to {MAX_LIST_LIMIT}, got {limit!r}", param="limit"
            )
        page = await self._engine.list_tasks(
            self._ns.queue(queue), parsed, after=after, limit=limit
        )
        return self._ns.page(page)


def _seconds(value: object, param: str, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{param} must be a number of seconds, got {value!r}", param=param)
    if not 0 <= value <= high:
        raise InvalidInput(
            f"{param} must be from 0 to {high:g} seconds, got {value!r}", param=param
        )
    return float(value)


def _wait(value: object) -> float:
    return _seconds(value, "wait", MAX_WAIT_S)
