"""The verbs that move a running or ended task, with the decision made by the domain.

Each verb reads the task's state (or presumes it from the request: a worker's complete
presumes its lease is current and no cancel came), asks `conveyor.domain.lifecycle` for the
outcome, and runs SETTLE with that outcome and the state it was decided on. SETTLE writes
only if the task still stands exactly there; otherwise it answers the state now, and the
verb decides again on that. So the rules live in the domain and every write stays atomic.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from conveyor.domain import lifecycle
from conveyor.domain.clock import Clock
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import Task, TaskError, TaskResult
from conveyor.engines.engine import Completion, Heartbeat, Settled
from conveyor.engines.notifier import LocalNotifier
from conveyor.engines.redis.client import Arg, Link
from conveyor.engines.redis.codec import (
    ROW,
    STATUSES,
    Attempt,
    Attempts,
    Presumed,
    State,
    Unknown,
    outcome_args,
    row_task,
)
from conveyor.engines.redis.directory import Directory
from conveyor.engines.redis.keys import Keys
from conveyor.errors import Conflict, ConveyorError, LeaseLost, NotFound

TRIES = 10
_NO_OUTCOME: list[Arg] = ["", "", "", "", "", ""]


class Step(NamedTuple):
    """What to write: an outcome (settle, requeue), a lease extension, a cancel mark, or none."""

    action: str
    outcome: lifecycle.Outcome | None = None
    extend_to: float | None = None


Decide = Callable[[lifecycle.TaskState], Step]


def settle_item(task_id: str, step: Step, expect: list[Arg]) -> list[Arg]:
    """One SETTLE item (scripts.SETTLE_FIELDS arguments)."""
    o = step.outcome
    args: list[Arg] = [task_id, step.action, *expect]
    if o is None:
        args += _NO_OUTCOME
    else:
        args += outcome_args(o.status, o.run_at, o.completed_at, o.result, o.error)
    args.append("" if step.extend_to is None else step.extend_to)
    return args


def _not_found(task_id: str) -> NotFound:
    return NotFound(f"task {task_id} does not exist")


class Settler:
    """Runs decide-then-write for the settling verbs."""

    def __init__(
        self,
        link: Link,
        keys: Keys,
        directory: Directory,
        clock: Clock,
        rng: random.Random,
        local: LocalNotifier,
    ) -> None:
        self._link = link
        self._keys = keys
        self._dir = directory
        self._clock = clock
        self._rng = rng
        self._local = local
        self.attempts = Attempts()  # handed out by this process's takes

    # ---- the loop ----
    async def relocate(self, task_id: str, queue: str) -> str:
        """The task was not in `queue`: ask the index again. Raises NotFound."""
        self._dir.forget(task_id)
        moved = await self._dir.queue_of(task_id)
        if moved == queue:
            raise _not_found(task_id)
        return moved

    async def _read(self, queue: str, task_id: str) -> tuple[str, State]:
        for _ in range(TRIES):
            values = await self._link.call(
                "HMGET", f"{self._keys.queue(queue)}t:{task_id}", *_DECIDE
            )
            if values[0] is not None:
                return queue, State(task_id, values)
            queue = await self.relocate(task_id, queue)
        raise _not_found(task_id)

    async def one(
        self,
        task_id: str,
        decide: Decide,
        presumed: Presumed | None = None,
        *,
        full: bool = True,
    ) -> tuple[str, Step, Any]:
        """Decide and write one task's step; (queue, step, the script's answer: with `full`
        the task's row, else its status or lease expiry)."""
        queue = await self._dir.queue_of(task_id)
        state: Presumed | State | None = presumed
        for _ in range(TRIES):
            if state is None:
                queue, state = await self._read(queue, task_id)
            try:
                step = decide(state)
            except Unknown:
                state = None
                continue
            if step.action == "none":
                row = await self._link.call("HMGET", f"{self._keys.queue(queue)}t:{task_id}", *ROW)
                return queue, step, row
            reply = await self._link.run(
                "settle",
                self._keys.queue(queue),
                self._keys.prefix,
                "full" if full else "brief",
                *settle_item(task_id, step, state.expect()),
            )
            kind = reply[0][0]
            if kind == b"ok":
                self._notify(step)
                return queue, step, reply[0][1]
            if kind == b"moved":
                state = State(task_id, reply[0][1])
            else:
                queue = await self.relocate(task_id, queue)
                state = presumed
        raise Conflict(f"task {task_id} kept changing while it was settled; try again")

    def _notify(self, step: Step) -> None:
        # other processes hear through pub/sub; this one's sweeper learns of new due times
        outcome = step.outcome
        if outcome is not None and outcome.status is TaskStatus.SCHEDULED:
            self._local.due(outcome.run_at)

    async def apply_many(
        self, entries: Sequence[tuple[str, str, State, Step]]
    ) -> list[tuple[bytes, Any]]:
        """Write (queue, task id, state, step) entries, one SETTLE per queue, no retries.

        Answers (kind, payload) per entry, in order; a moved task is left as it is.
        """
        by_queue: dict[str, list[int]] = {}
        for index, (queue, _, _, _) in enumerate(entries):
            by_queue.setdefault(queue, []).append(index)
        batch = self._link.batch()
        for queue, indexes in by_queue.items():
            args: list[Arg] = []
            for index in indexes:
                _, task_id, state, step = entries[index]
                args += settle_item(task_id, step, state.expect())
            batch.script("settle", self._keys.queue(queue), self._keys.prefix, "brief", *args)
        answers: list[tuple[bytes, Any]] = [(b"missing", None)] * len(entries)
        for indexes, reply in zip(by_queue.values(), await batch.run(), strict=True):
            if isinstance(reply, Exception):
                raise reply
            for index, item in zip(indexes, reply, strict=True):
                answers[index] = (item[0], item[1] if len(item) > 1 else None)
                if item[0] == b"ok":
                    self._notify(entries[index][3])
        return answers

    # ---- the verbs ----
    async def complete(self, task_id: str, lease_id: str, result: TaskResult) -> Task:
        now = self._clock()

        def decide(state: lifecycle.TaskState) -> Step:
            return Step("settle", lifecycle.completed(state, lease_id, result, now))

        self.attempts.pop(task_id, lease_id)
        queue, _, row = await self.one(task_id, decide, self._presume(task_id, lease_id, now))
        return row_task(queue, row)

    def _presume(
        self, task_id: str, lease_id: str, now: float, attempt: Attempt | None = None
    ) -> Presumed:
        """What a lease holder's word presumes: running, its lease current, no cancel (and
        the attempt as it was handed out, when this process handed it out)."""
        return Presumed(
            task_id,
            TaskStatus.RUNNING,
            lease_id=lease_id,
            cancel_requested=False,
            unexpired_at=now,
            attempt=attempt,
        )

    async def complete_many(self, items: Sequence[Completion]) -> list[Settled | ConveyorError]:
        now = self._clock()
        answers: list[Settled | ConveyorError | None] = [None] * len(items)
        states: dict[int, Presumed | State] = {}
        queues = await self._dir.queues_of(item.task_id for item in items)
        for index, item in enumerate(items):
            self.attempts.pop(item.task_id, item.lease_id)
            if item.task_id in queues:
                states[index] = self._presume(item.task_id, item.lease_id, now)
            else:
                answers[index] = _not_found(item.task_id)
        for _ in range(TRIES):
            if not states:
                break
            by_queue: dict[str, list[int]] = {}
            args: dict[str, list[Arg]] = {}
            for index, state in states.items():
                item = items[index]
                try:
                    outcome = lifecycle.completed(state, item.lease_id, item.result, now)
                except LeaseLost as exc:
                    answers[index] = exc
                    continue
                queue = queues[item.task_id]
                by_queue.setdefault(queue, []).append(index)
                args.setdefault(queue, []).extend(
                    settle_item(item.task_id, Step("settle", outcome), state.expect())
                )
            states = {}
            batch = self._link.batch()
            for queue in by_queue:
                batch.script(
                    "settle", self._keys.queue(queue), self._keys.prefix, "brief", *args[queue]
                )
            lost: list[int] = []
            for (queue, indexes), reply in zip(by_queue.items(), await batch.run(), strict=True):
                if isinstance(reply, Exception):
                    raise reply
                for index, entry in zip(indexes, reply, strict=True):
                    if entry[0] == b"ok":
                        answers[index] = Settled(queue, STATUSES[entry[1]])
                    elif entry[0] == b"moved":
                        states[index] = State(items[index].task_id, entry[1])
                    else:
                        lost.append(index)
            for index in lost:  # not where the index said: look again, once
                task_id = items[index].task_id
                self._dir.forget(task_id)
                before = queues[task_id]
                found = await self._dir.queues_of([task_id])
                if found.get(task_id, before) == before:
                    answers[index] = _not_found(task_id)
                else:
                    queues[task_id] = found[task_id]
                    states[index] = self._presume(task_id, items[index].lease_id, now)
        for index in states:
            answers[index] = Conflict(f"task {items[index].task_id} kept changing; try again")
        return [
            a if a is not None else _not_found(i.task_id)
            for a, i in zip(answers, items, strict=True)
        ]

    async def fail(
        self,
        task_id: str,
        lease_id: str,
        error: TaskError,
        *,
        retry: bool,
        retry_after_s: float | None,
    ) -> Task:
        now = self._clock()

        def decide(state: lifecycle.TaskState) -> Step:
            outcome = lifecycle.failed(
                state,
                lease_id,
                error,
                retry=retry,
                retry_after_s=retry_after_s,
                now=now,
                rng=self._rng,
            )
            return Step("settle", outcome)

        # the attempt as this process handed it out spares reading the task first
        attempt = self.attempts.pop(task_id, lease_id)
        presumed = None if attempt is None else self._presume(task_id, lease_id, now, attempt)
        queue, _, row = await self.one(task_id, decide, presumed)
        return row_task(queue, row)

    async def heartbeat(self, task_id: str, lease_id: str, extend_s: float | None) -> Heartbeat:
        now = self._clock()

        def decide(state: lifecycle.TaskState) -> Step:
            outcome = lifecycle.heartbeat_cancels(state, lease_id, now)
            if outcome is not None:
                return Step("settle", outcome)
            if extend_s is not None:
                return Step("extend", extend_to=now + extend_s)
            if isinstance(state, State):
                return Step("extend", extend_to=now + (state.lease_s or 0.0))
            return Step("extend")  # the script adds the lease's own length to `now`

        _, step, payload = await self.one(
            task_id, decide, self._presume(task_id, lease_id, now), full=False
        )
        if step.action == "extend":
            return Heartbeat(lease_expires_at=float(payload), cancelled=False)
        return Heartbeat(lease_expires_at=None, cancelled=True)

    async def cancel(self, task_id: str) -> Task:
        now = self._clock()

        def decide(state: lifecycle.TaskState) -> Step:
            action = lifecycle.cancel_action(state)
            if action is lifecycle.CancelAction.MARK:
                return Step("mark")
            if action is lifecycle.CancelAction.END:
                return Step("settle", lifecycle.Outcome(TaskStatus.CANCELLED, completed_at=now))
            return Step("none")

        queue, _, row = await self.one(task_id, decide)
        return row_task(queue, row)

    async def requeue(self, task_id: str) -> Task:
        now = self._clock()

        def decide(state: lifecycle.TaskState) -> Step:
            return Step("requeue", lifecycle.requeued(state, now))

        queue, _, row = await self.one(task_id, decide, Presumed(task_id, TaskStatus.FAILED))
        return row_task(queue, row)


_DECIDE = ("s", "li", "le", "cr", "at", "x", "bo", "ls")
