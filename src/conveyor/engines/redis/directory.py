"""Which queue a task id (or batch id) lives in: the global index, remembered in-process.

A task's keys carry its queue's hash tag, and verbs such as `get_task(task_id)` name only
the task, so `P:taskq` maps every task id to its queue (and `P:batchq` every batch id).
A task never changes queue while it exists, so an answer can be remembered; a remembered
answer can only go stale when the task is purged and its id put again in another queue, and
then the script finds no task and the engine asks the index again (`forget`).
"""

from __future__ import annotations

from collections.abc import Iterable

from conveyor.engines.redis.client import Link
from conveyor.engines.redis.keys import Keys
from conveyor.errors import NotFound

REMEMBERED = 200_000


class Directory:
    """Task id -> queue, and batch id -> queue."""

    def __init__(self, link: Link, keys: Keys) -> None:
        self._link = link
        self._keys = keys
        self._tasks: dict[str, str] = {}
        self._batches: dict[str, str] = {}

    def remember(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Note that each task id lives in its queue."""
        if len(self._tasks) > REMEMBERED:
            self._tasks.clear()
        self._tasks.update(pairs)

    def forget(self, task_id: str) -> None:
        self._tasks.pop(task_id, None)

    async def queue_of(self, task_id: str) -> str:
        """The task's queue. Raises NotFound."""
        queue = self._tasks.get(task_id)
        if queue is None:
            raw = await self._link.call("HGET", self._keys.index, task_id)
            if raw is None:
                raise NotFound(f"task {task_id} does not exist")
            queue = self._tasks[task_id] = raw.decode()
        return queue

    async def queues_of(self, task_ids: Iterable[str]) -> dict[str, str]:
        """The queue of each task id that exists."""
        found: dict[str, str] = {}
        unknown: list[str] = []
        for task_id in dict.fromkeys(task_ids):
            queue = self._tasks.get(task_id)
            if queue is None:
                unknown.append(task_id)
            else:
                found[task_id] = queue
        if unknown:
            raws = await self._link.call("HMGET", self._keys.index, *unknown)
            fresh = {tid: raw.decode() for tid, raw in zip(unknown, raws, strict=True) if raw}
            self.remember(fresh.items())
            found.update(fresh)
        return found

    async def batch_queue(self, batch_id: str) -> str | None:
        """The queue holding the batch's tasks, or None if it has none."""
        queue = self._batches.get(batch_id)
        if queue is None:
            raw = await self._link.call("HGET", self._keys.batches, batch_id)
            if raw is None:
                return None
            if len(self._batches) > REMEMBERED:
                self._batches.clear()
            queue = self._batches[batch_id] = raw.decode()
        return queue

    def forget_batch(self, batch_id: str) -> None:
        self._batches.pop(batch_id, None)
