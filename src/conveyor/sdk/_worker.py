"""`Worker`: takes tasks from queues and runs a handler per queue, over aiohttp.

One take loop long-polls for up to as many tasks as there are free slots and starts a
runner per task (`conveyor.sdk._runner`), which heartbeats while its handler works and
reports the outcome; results travel batched (`conveyor.sdk._completer`). Stopping is two
steps: stop taking and let running tasks finish within a grace period, then cancel what
is left (a second SIGTERM/SIGINT skips the wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from conveyor.domain.strategies import Strategy, parse_strategy
from conveyor.errors import InvalidInput
from conveyor.sdk._async_client import AsyncClient
from conveyor.sdk._completer import Completer
from conveyor.sdk._models import LeasedTask
from conveyor.sdk._runner import Handler, Runner, WorkerStats

log = logging.getLogger("conveyor.worker")

H = TypeVar("H", bound=Handler)

MAX_TAKE_WAIT_S = 60.0
MAX_RETRY_PAUSE_S = 10.0


class Worker:
    """Runs handlers for the tasks of one or more queues: `await worker.run()`.

    `handlers` maps a queue name to its handler, a function of the `LeasedTask`: async
    handlers run on the loop, sync ones in threads. What a handler returns completes the
    task with `{status_code: 200, body: value}` (a `TaskResult` is sent as it is); what it
    raises fails the attempt, and the task retries while it has attempts left.

    `queues` (default: the handlers' queues, in order) is what each take asks for, as
    `name` or `name:level`, in the order `strategy` reads them. `lease_s` is the lease a
    take asks for (default: the queue's); heartbeats go out every `heartbeat_fraction` of
    it. With `exit_when_drained` the worker stops once a take finds nothing queued, after
    finishing what it runs.

    `capacity`, if given, is asked before each take how many tasks the worker can run at
    once right now (at most `concurrency` run whatever it says), so that a worker slowed
    down by what its handlers call takes no more than it can run. The take loop re-reads it
    when a task ends and when `wake()` is called: call that when capacity grows.
    """

    def __init__(
        self,
        handlers: Mapping[str, Handler] | None = None,
        *,
        queues: Sequence[str] | None = None,
        strategy: Strategy | str = Strategy.FIFO,
        concurrency: int = 16,
        lease_s: float | None = None,
        wait_s: float = 30.0,
        heartbeat_fraction: float = 1 / 3,
        grace_period_s: float = 30.0,
        exit_when_drained: bool = False,
        server: str | None = None,
        api_key: str | None = None,
        client: AsyncClient | None = None,
        worker_id: str | None = None,
        handle_signals: bool = True,
        capacity: Callable[[], int] | None = None,
    ) -> None:
        if concurrency < 1:
            raise InvalidInput(f"concurrency must be 1 or more, got {concurrency}")
        if not 0 < heartbeat_fraction < 1:
            raise InvalidInput(
                f"heartbeat_fraction must be between 0 and 1, got {heartbeat_fraction}"
            )
        if not 0 <= wait_s <= MAX_TAKE_WAIT_S:
            raise InvalidInput(f"wait_s must be from 0 to {MAX_TAKE_WAIT_S:g}, got {wait_s}")
        self.strategy = parse_strategy(strategy)
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.wait_s = wait_s
        self.heartbeat_fraction = heartbeat_fraction
        self.grace_period_s = grace_period_s
        self.exit_when_drained = exit_when_drained
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.handle_signals = handle_signals
        self.capacity = capacity
        self.stats = WorkerStats()
        self._handlers: dict[str, Handler] = dict(handlers or {})
        self._queues = list(queues) if queues is not None else None
        self.server = server
        self.api_key = api_key
        self._client = client
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._hard_stop = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._deadline: float | None = None  # loop time when running tasks get cancelled
        self._deadline_moved = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._stop_early = False  # stop() came before run()
        self._ran = False

    # ---- set-up ----

    def handle(self, queue: str, handler: Handler) -> None:
        """Run `handler` for the tasks of `queue`."""
        self._handlers[queue] = handler

    def handler(self, queue: str) -> Callable[[H], H]:
        """Decorator: `@worker.handler("emails")` runs the function for that queue."""

        def register(function: H) -> H:
            self.handle(queue, function)
            return function

        return register

    @property
    def queues(self) -> list[str]:
        """What each take asks for: the `queues` given, else the handlers' queues."""
        return list(self._queues) if self._queues is not None else list(self._handlers)

    @queues.setter
    def queues(self, queues: Sequence[str] | None) -> None:
        self._queues = list(queues) if queues is not None else None

    def _check(self) -> None:
        if not self._handlers:
            raise InvalidInput("the worker has no handlers; add one with worker.handle()")
        missing = [q for q in self.queues if q.partition(":")[0] not in self._handlers]
        if missing:
            raise InvalidInput(f"no handler for queue(s) {', '.join(missing)}", param="queues")

    # ---- running ----

    def run_sync(self) -> None:
        """Run the worker in a new event loop until it stops."""
        asyncio.run(self.run())

    async def run(self) -> None:
        """Take and run tasks until `stop()`, SIGTERM/SIGINT, or drained (if asked)."""
        self._check()
        self.strategy = parse_strategy(self.strategy)
        self._stopping, self._hard_stop = asyncio.Event(), asyncio.Event()
        self._deadline = None
        with self._lock:
            self._loop = loop = asyncio.get_running_loop()
            self._ran = True
            if self._stop_early:
                self._stop_early = False
                self._request_stop(None)
        client = self._client or AsyncClient(
            self.server, self.api_key, max_connections=self.concurrency + 8
        )
        executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="conveyor-handler")
        log.info("worker %s taking from %s (%s)", self.worker_id, self.queues, self.strategy)
        try:
            with self._signals(loop):
                async with Completer(client) as completer:
                    self.stats.completions = completer.stats
                    runner = Runner(
                        client=client,
                        completer=completer,
                        handlers=self._handlers,
                        executor=executor,
                        loop=loop,
                        stats=self.stats,
                        lease_s=self.lease_s,
                        heartbeat_fraction=self.heartbeat_fraction,
                    )
                    try:
                        await self._take_loop(client, runner)
                    except asyncio.CancelledError:
                        self._hard_stop.set()
                        raise
                    finally:
                        await self._drain()
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            if client is not self._client:
                await client.aclose()
            with self._lock:
                self._loop = None
            log.info("worker %s stopped", self.worker_id)

    def stop(self, *, grace_period_s: float | None = None) -> None:
        """Stop taking; running tasks get the grace period (this one, if given) to finish.

        Safe to call from any thread. A second call cancels running tasks at once.
        """
        with self._lock:  # against a run() starting in another thread right now
            loop = self._loop
            if loop is None:  # not running yet: run() stops at once; after it, nothing to do
                self._stop_early = not self._ran
                return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._request_stop(grace_period_s)
        else:
            loop.call_soon_threadsafe(self._request_stop, grace_period_s)

    def wake(self) -> None:
        """Make the take loop re-read `capacity` now; safe to call from any thread."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._slot_free.set()
        else:
            loop.call_soon_threadsafe(self._slot_free.set)

    def _request_stop(self, grace_period_s: float | None, *, unlimited: bool = False) -> None:
        """Stop taking; a second request cancels running tasks at once.

        Draining (exit_when_drained) waits for running tasks without limit; a stop that
        comes meanwhile is a first one: it sets the grace period.
        """
        if self._loop is None:  # the run ended meanwhile
            return
        grace_s = self.grace_period_s if grace_period_s is None else grace_period_s
        if not self._stopping.is_set():
            self._deadline = None if unlimited else self._loop.time() + grace_s
            self._stopping.set()
        elif self._deadline is None and not unlimited:
            self._deadline = self._loop.time() + grace_s
            self._deadline_moved.set()
        else:
            self._hard_stop.set()

    @contextlib.contextmanager
    def _signals(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        installed: list[signal.Signals] = []
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self._on_signal, sig)
                except (NotImplementedError, RuntimeError):  # not on this platform or loop
                    continue
                installed.append(sig)
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        hard = self._stopping.is_set() and self._deadline is not None
        action = "cancelling running tasks" if hard else "stopping"
        log.info("worker %s got %s: %s", self.worker_id, sig.name, action)
        self._request_stop(None)

    async def _take_loop(self, client: AsyncClient, runner: Runner) -> None:
        failures = 0
        while not self._stopping.is_set():
            free = self._room() - len(self._running)
            if free <= 0:
                self._slot_free.clear()
                await _first(self._slot_free.wait(), self._stopping.wait())
                continue
            try:
                tasks = await self._take(client, free)
            except Exception as exc:
                failures += 1
                # jittered, so that workers that lost the server together do not return together
                pause_s = min(0.25 * 2**failures, MAX_RETRY_PAUSE_S) * random.uniform(0.5, 1.0)
                log.warning("take failed (%r); trying again in %.1f s", exc, pause_s)
                await _first(self._stopping.wait(), timeout_s=pause_s)
                continue
            failures = 0
            for task in tasks:
                self._start(runner, task)
            if not tasks and self.exit_when_drained and not self._stopping.is_set():
                log.info("worker %s: nothing left to take; finishing", self.worker_id)
                self._request_stop(None, unlimited=True)

    def _room(self) -> int:
        """How many tasks may run at once now: `concurrency`, or less if `capacity` says so."""
        if self.capacity is None:
            return self.concurrency
        return max(0, min(self.concurrency, self.capacity()))

    async def _take(self, client: AsyncClient, size: int) -> list[LeasedTask]:
        """Take up to `size` tasks, long-polling; a stop cuts the wait short."""
        take = asyncio.ensure_future(
            client.take(
                self.queues,
                strategy=self.strategy,
                size=size,
                lease_s=self.lease_s,
                wait_s=0.0 if self.exit_when_drained else self.wait_s,
                worker_id=self.worker_id,
            )
        )
        try:
            await _first(take, self._stopping.wait())
        finally:
            if not take.done():  # stopped (or cancelled) while waiting: nothing is wanted
                take.cancel()
                await asyncio.gather(take, return_exceptions=True)
        if take.cancelled():
            return []
        tasks = take.result()
        self.stats.takes += 1
        self.stats.taken += len(tasks)
        return tasks

    def _start(self, runner: Runner, task: LeasedTask) -> None:
        job = asyncio.create_task(runner.work(task), name=f"conveyor-task-{task.task_id}")
        self._running.add(job)
        job.add_done_callback(self._finished)

    def _finished(self, job: asyncio.Task[None]) -> None:
        self._running.discard(job)
        self._slot_free.set()
        if not job.cancelled() and job.exception() is not None:
            log.error("task runner crashed", exc_info=job.exception())

    async def _drain(self) -> None:
        """Let running tasks finish within the grace period, then cancel them."""
        loop = asyncio.get_running_loop()
        if self._running:
            log.info("waiting for %d running task(s)", len(self._running))
        while self._running and not self._hard_stop.is_set():
            remaining = None if self._deadline is None else self._deadline - loop.time()
            if remaining is not None and remaining <= 0:
                break
            self._deadline_moved.clear()
            await _first(
                *self._running,
                self._hard_stop.wait(),
                self._deadline_moved.wait(),
                timeout_s=remaining,
            )
        left = list(self._running)
        if left:
            log.warning("cancelling %d task(s) still running", len(left))
        for job in left:
            job.cancel()
        await asyncio.gather(*left, return_exceptions=True)


async def _first(*waitables: Awaitable[Any], timeout_s: float | None = None) -> None:
    """Wait until the first of `waitables` is done (or `timeout_s`).

    Futures passed in are left running; the ones made here from coroutines are
    cancelled and awaited, so that nothing outlives the call unowned.
    """
    futures: list[asyncio.Future[Any]] = []
    own: list[asyncio.Future[Any]] = []
    for waitable in waitables:
        future: asyncio.Future[Any] = asyncio.ensure_future(waitable)
        futures.append(future)
        if future is not waitable:
            own.append(future)
    try:
        await asyncio.wait(futures, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in own:
            future.cancel()
        await asyncio.gather(*own, return_exceptions=True)
