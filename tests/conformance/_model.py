"""The state machine's reference model of one task: what a verb leaves it as."""

from __future__ import annotations

from dataclasses import dataclass, field

from conveyor.domain.queues import Lane
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import TaskSpec


@dataclass
class ModelTask:
    """What the model knows of one task."""

    task_id: str
    spec: TaskSpec
    status: TaskStatus
    run_at: float
    expires_at: float | None
    attempts: int = 0
    lease_id: str | None = None
    lease_s: float = 0.0
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    completed_at: float | None = None
    old_leases: list[str] = field(default_factory=list)

    @property
    def lane(self) -> Lane:
        return Lane(self.spec.queue, self.spec.level)

    @property
    def max_attempts(self) -> int:
        assert self.spec.max_attempts is not None
        return self.spec.max_attempts

    def end(self, status: TaskStatus, now: float) -> None:
        self.status = status
        self.completed_at = now
        self.drop_lease()

    def back(self, status: TaskStatus, run_at: float) -> None:
        self.drop_lease()
        self.status = status
        self.run_at = run_at

    def drop_lease(self) -> None:
        if self.lease_id is not None:
            self.old_leases.append(self.lease_id)
        self.lease_id = None
        self.lease_expires_at = None
