"""What each verb does to a task, decided once for every engine.

Engines read a task's current state inside their atomic section, ask these functions for
the outcome, and write it back. A function raises when the verb is refused; nothing has
been written at that point.
"""

from __future__ import annotations

import random
from collections.abc import MutableMapping, Sequence
from enum import StrEnum
from typing import NamedTuple, Protocol, TypeVar

from conveyor.domain.retry import Backoff
from conveyor.domain.states import TaskStatus, check_transition
from conveyor.domain.tasks import (
    DEADLINE_ERROR,
    LEASE_EXPIRED_ERROR,
    TaskError,
    TaskResult,
    after_failure,
    after_lease_expiry,
)
from conveyor.errors import InvalidTransition, LeaseLost, NotFound


class TaskState(Protocol):
    """The fields of a stored task that decide what a verb does to it."""

    @property
    def task_id(self) -> str: ...
    @property
    def status(self) -> TaskStatus: ...
    @property
    def attempts(self) -> int: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def backoff(self) -> Backoff: ...
    @property
    def lease_id(self) -> str | None: ...
    @property
    def lease_expires_at(self) -> float | None: ...
    @property
    def cancel_requested(self) -> bool: ...


class Outcome(NamedTuple):
    """The task's next state. A lease always ends with the attempt it belonged to."""

    status: TaskStatus
    run_at: float | None = None  # set when the task goes back to queued or scheduled
    completed_at: float | None = None  # set when the task ends
    result: TaskResult | None = None
    error: TaskError | None = None


def check_lease(task: TaskState, lease_id: str, now: float) -> None:
    """Raise LeaseLost unless `lease_id` is the running task's current, unexpired lease."""
    if task.status is not TaskStatus.RUNNING or task.lease_id != lease_id:
        raise LeaseLost(
            f"lease {lease_id!r} does not hold task {task.task_id} (it is {task.status});"
            " take the task again"
        )
    if task.lease_expires_at is not None and task.lease_expires_at <= now:
        raise LeaseLost(f"the lease on task {task.task_id} expired; it will be retried")


def completed(task: TaskState, lease_id: str, result: TaskResult, now: float) -> Outcome:
    """A worker's result: succeeded, or cancelled if a cancel came while it ran."""
    check_lease(task, lease_id, now)
    status = TaskStatus.CANCELLED if task.cancel_requested else TaskStatus.SUCCEEDED
    return Outcome(status, completed_at=now, result=result)


def failed(
    task: TaskState,
    lease_id: str,
    error: TaskError,
    *,
    retry: bool,
    retry_after_s: float | None,
    now: float,
    rng: random.Random | None = None,
) -> Outcome:
    """A worker's failure: back after backoff, or the dead letter when spent or told so."""
    check_lease(task, lease_id, now)
    if task.cancel_requested:
        return Outcome(TaskStatus.CANCELLED, completed_at=now, error=error)
    status, run_at = after_failure(
        attempts=task.attempts,
        max_attempts=task.max_attempts,
        backoff=task.backoff,
        retry=retry,
        retry_after_s=retry_after_s,
        now=now,
        rng=rng,
    )
    if status is TaskStatus.FAILED:
        return Outcome(status, completed_at=now, error=error)
    return Outcome(status, run_at=run_at, error=error)


def heartbeat_cancels(task: TaskState, lease_id: str, now: float) -> Outcome | None:
    """A heartbeat's outcome: None to extend the lease, or the cancellation it delivers."""
    check_lease(task, lease_id, now)
    if task.cancel_requested:
        return Outcome(TaskStatus.CANCELLED, completed_at=now)
    return None


def lease_expired(task: TaskState, now: float) -> Outcome:
    """An expired lease: back to the queue with the attempt counted, or the dead letter."""
    if task.cancel_requested:
        return Outcome(TaskStatus.CANCELLED, completed_at=now)
    status = after_lease_expiry(attempts=task.attempts, max_attempts=task.max_attempts)
    if status is TaskStatus.FAILED:
        return Outcome(status, completed_at=now, error=LEASE_EXPIRED_ERROR)
    return Outcome(status, run_at=now, error=LEASE_EXPIRED_ERROR)


def deadline_passed(now: float) -> Outcome:
    """A task whose `timeout` passed before it finished."""
    return Outcome(TaskStatus.EXPIRED, completed_at=now, error=DEADLINE_ERROR)


class CancelAction(StrEnum):
    NOTHING = "nothing"  # already cancelled: answer the task as it is
    MARK = "mark"  # running: the worker learns at its next heartbeat, complete or fail
    END = "end"  # queued or scheduled: cancelled at once


def cancel_action(task: TaskState) -> CancelAction:
    """What a cancel does; a task that ended otherwise is refused with InvalidTransition."""
    if task.status is TaskStatus.RUNNING:
        return CancelAction.MARK
    if task.status is TaskStatus.CANCELLED:
        return CancelAction.NOTHING
    check_transition(task.task_id, task.status, TaskStatus.CANCELLED)
    return CancelAction.END


def requeued(task: TaskState, now: float) -> Outcome:
    """A dead-lettered task sent back with a fresh set of attempts."""
    if task.status is not TaskStatus.FAILED:
        # running and scheduled may also become queued, but not by hand: a requeue would
        # drop a live lease or reset the attempts of a task that is backing off
        raise InvalidTransition(
            f"task {task.task_id} is {task.status}; only a failed task can be requeued"
        )
    return Outcome(TaskStatus.QUEUED, run_at=now)


class MovableState(TaskState, Protocol):
    """A stored task's state that can say what a settle leaves of it."""

    def after(self, outcome_status: TaskStatus) -> MovableState: ...


S = TypeVar("S", bound=MovableState)


class CompletionRequest(Protocol):
    """One item of a bulk complete."""

    @property
    def task_id(self) -> str: ...
    @property
    def lease_id(self) -> str: ...
    @property
    def result(self) -> TaskResult: ...


def completions(
    current: MutableMapping[str, S], items: Sequence[CompletionRequest], now: float
) -> list[tuple[S, Outcome] | NotFound | LeaseLost]:
    """Decide every item of a bulk complete before anything is written, so that a refused
    item leaves nothing behind; `current` holds the tasks' states (absent: not found) and
    is moved on as items are decided, so a task named twice is settled by its first item."""
    decided: list[tuple[S, Outcome] | NotFound | LeaseLost] = []
    for item in items:
        state = current.get(item.task_id)
        try:
            if state is None:
                raise NotFound(f"task {item.task_id} does not exist")
            outcome = completed(state, item.lease_id, item.result, now)
        except (NotFound, LeaseLost) as exc:
            decided.append(exc)
            continue
        decided.append((state, outcome))
        current[item.task_id] = state.after(outcome.status)  # type: ignore[assignment]
    return decided
