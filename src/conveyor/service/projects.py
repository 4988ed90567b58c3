"""Projects: each API key's project sees only its own queues and tasks.

A project's queues live in the shared store as `project.name`. A dot cannot appear in a
queue name, so no two projects' queues can meet, and no name a caller sends can reach
into another project. The empty project (no API keys configured) is the store as it is.
"""

from __future__ import annotations

import re

import msgspec

from conveyor.domain.queues import QueueConfig
from conveyor.domain.tasks import Task
from conveyor.engines.engine import QueueStats, Settled, TaskPage
from conveyor.errors import ConveyorError, InvalidInput, NotFound

PROJECT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def validate_project(name: str) -> str:
    """Return `name` if it is a valid project name, else raise InvalidInput."""
    if not PROJECT_NAME.fullmatch(name):
        raise InvalidInput(
            f"a project name must be 1-64 letters, digits, '_' or '-', got {name!r}",
            param="project",
        )
    return name


class Namespace:
    """Maps one project's names to the store's and back."""

    def __init__(self, project: str = "") -> None:
        self.project = validate_project(project) if project else ""
        self._prefix = f"{project}." if project else ""

    def queue(self, name: str) -> str:
        """The store's name for the project's queue `name`."""
        return self._prefix + name

    def owns(self, stored_queue: str) -> bool:
        """True if a queue with this stored name belongs to the project."""
        return stored_queue.startswith(self._prefix)

    def public(self, stored_queue: str) -> str:
        """The name the project knows a stored queue by."""
        return stored_queue[len(self._prefix) :]

    def task(self, task: Task) -> Task:
        """A stored task as the project sees it."""
        if not self._prefix:
            return task
        return msgspec.structs.replace(task, queue=self.public(task.queue))

    def own_task(self, task: Task) -> Task:
        """The task as the project sees it; NotFound if it is another project's."""
        if not self.owns(task.queue):
            raise NotFound(f"task {task.task_id} does not exist")
        return self.task(task)

    def config(self, config: QueueConfig) -> QueueConfig:
        if not self._prefix:
            return config
        return msgspec.structs.replace(config, name=self.public(config.name))

    def stats(self, stats: QueueStats) -> QueueStats:
        if not self._prefix:
            return stats
        return QueueStats(queue=self.config(stats.queue), levels=stats.levels)

    def page(self, page: TaskPage) -> TaskPage:
        if not self._prefix:
            return page
        return TaskPage(tasks=[self.task(t) for t in page.tasks], next_cursor=page.next_cursor)

    def settled(self, outcome: Settled | ConveyorError) -> Settled | ConveyorError:
        if not self._prefix or not isinstance(outcome, Settled):
            return outcome
        return Settled(self.public(outcome.queue), outcome.status)
