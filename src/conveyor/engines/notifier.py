"""In-process wake-ups for the embedded engines: takers waiting for work, and the sweeper."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager


class Watch:
    """One waiter's interest; `wake` may be called before `wait` and is not lost."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float) -> bool:
        if not self._event.is_set():
            try:
                await asyncio.wait_for(self._event.wait(), max(timeout_s, 0.0))
            except TimeoutError:
                return False
        self._event.clear()
        return True


class LocalNotifier:
    """Wakes watchers in this process. Call only from the event loop's thread."""

    def __init__(self) -> None:
        self._watches: defaultdict[str, set[Watch]] = defaultdict(set)
        self._task_watches: defaultdict[str, set[Watch]] = defaultdict(set)
        self._due = asyncio.Event()
        self._callbacks = asyncio.Event()
        self._next_due_at: float | None = None

    @asynccontextmanager
    async def watch(self, queues: Sequence[str]) -> AsyncIterator[Watch]:
        """Register a watch on `queues` for the duration of the block."""
        watch = Watch()
        names = set(queues)
        for name in names:
            self._watches[name].add(watch)
        try:
            yield watch
        finally:
            for name in names:
                watchers = self._watches.get(name)
                if watchers is not None:
                    watchers.discard(watch)
                    if not watchers:
                        del self._watches[name]

    @asynccontextmanager
    async def watch_task(self, task_id: str) -> AsyncIterator[Watch]:
        """Register a watch on one task's events and end for the duration of the block."""
        watch = Watch()
        self._task_watches[task_id].add(watch)
        try:
            yield watch
        finally:
            watchers = self._task_watches.get(task_id)
            if watchers is not None:
                watchers.discard(watch)
                if not watchers:
                    del self._task_watches[task_id]

    def tasks_changed(self, task_ids: Iterable[str]) -> None:
        """Wake every watch on any of `task_ids` (they ended, or have new events)."""
        self._callbacks.set()  # an ended task may owe a callback
        if not self._task_watches:
            return
        for task_id in task_ids:
            for watch in self._task_watches.get(task_id, ()):
                watch.wake()

    def work_arrived(self, queues: Iterable[str]) -> None:
        """Wake every watch on any of `queues`."""
        for name in queues:
            for watch in self._watches.get(name, ()):
                watch.wake()

    def due(self, at: float | None) -> None:
        """Tell the sweeper that something falls due at `at`, if earlier than it knew."""
        if at is not None and (self._next_due_at is None or at < self._next_due_at):
            self._next_due_at = at
            self._due.set()

    def swept(self, next_due_at: float | None) -> None:
        """Record when the sweep that just ran says the next thing falls due."""
        self._next_due_at = next_due_at

    async def wait_for_callbacks(self, timeout_s: float) -> None:
        """Return when a task may have ended with a callback owed, or after `timeout_s`."""
        try:
            await asyncio.wait_for(self._callbacks.wait(), max(timeout_s, 0.0))
        except TimeoutError:
            return
        finally:
            self._callbacks.clear()

    async def wait_for_due(self, timeout_s: float) -> None:
        """Return when `due` reports an earlier time, or after `timeout_s`."""
        try:
            await asyncio.wait_for(self._due.wait(), max(timeout_s, 0.0))
        except TimeoutError:
            return
        finally:
            self._due.clear()
