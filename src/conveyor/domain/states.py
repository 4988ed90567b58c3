"""Task states and the only transitions allowed between them."""

from __future__ import annotations

from enum import StrEnum

from conveyor.errors import InvalidTransition


class TaskStatus(StrEnum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def finished(self) -> bool:
        """True for the end states, which keep a task until retention removes it."""
        return self in FINISHED


ACTIVE = frozenset({TaskStatus.QUEUED, TaskStatus.SCHEDULED, TaskStatus.RUNNING})
FINISHED = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED}
)

TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    # a delay or a backoff comes due, or the task is cancelled or passes its deadline
    TaskStatus.SCHEDULED: frozenset({TaskStatus.QUEUED, TaskStatus.CANCELLED, TaskStatus.EXPIRED}),
    TaskStatus.QUEUED: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED, TaskStatus.EXPIRED}),
    # completed; failed for good; retried at once (lease expiry) or after a backoff;
    # cancelled at the worker's next word; past its deadline
    TaskStatus.RUNNING: frozenset(
        {
            TaskStatus.SUCCEEDED,
            TaskStatus.FAILED,
            TaskStatus.QUEUED,
            TaskStatus.SCHEDULED,
            TaskStatus.CANCELLED,
            TaskStatus.EXPIRED,
        }
    ),
    # the dead letter can be re-queued by hand
    TaskStatus.FAILED: frozenset({TaskStatus.QUEUED}),
    TaskStatus.SUCCEEDED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
    TaskStatus.EXPIRED: frozenset(),
}


def can_transition(current: TaskStatus, target: TaskStatus) -> bool:
    """True if a task in `current` may move to `target`."""
    return target in TRANSITIONS[current]


def check_transition(task_id: str, current: TaskStatus, target: TaskStatus) -> None:
    """Raise InvalidTransition unless a task in `current` may move to `target`."""
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(f"task {task_id} is {current}; it cannot become {target}")
