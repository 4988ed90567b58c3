"""Storing new tasks: all or none, idempotent for a repeated client-supplied id."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import NewTask
from conveyor.engines._rows import INSERT_WIDTH, new_rows
from conveyor.engines.postgres import queries as q
from conveyor.engines.postgres.tx import Tx
from conveyor.errors import IdempotencyConflict, NotFound


async def put(tx: Tx, tasks: Sequence[NewTask]) -> list[bool]:
    """Insert `tasks` (their queues must exist); per task True if created, False if an
    identical one existed. Raises NotFound, IdempotencyConflict (the caller rolls back)."""
    columns = columns_of(tasks)
    names = sorted({task.queue for task in tasks})
    found, ids = await tx.conn.fetchrow(q.INSERT_TASKS, *columns, names)
    for name in set(names).difference(found):
        raise NotFound(f"queue {name!r} does not exist")
    inserted = set(ids)
    if len(inserted) == len(tasks):
        created = [True] * len(tasks)
    else:
        created = await _which_created(tx, tasks, inserted)
    stored = [task for task, fresh in zip(tasks, created, strict=True) if fresh]
    for (queue, level, status), n in Counter((t.queue, t.level, t.status) for t in stored).items():
        tx.moved(queue, level, None, status, n)
    for task in stored:
        if task.batch_id is not None:
            tx.batch_moved(task.batch_id, None, None, total=1)
    due = [t.run_at for t in stored if t.status is TaskStatus.SCHEDULED]
    due.extend(t.expires_at for t in stored if t.expires_at is not None)
    if due:
        tx.due.append(min(due))
    return created


async def _which_created(tx: Tx, tasks: Sequence[NewTask], inserted: set[str]) -> list[bool]:
    """Which tasks this put created; the others must match what is stored."""
    created: list[bool] = []
    seen: set[str] = set()
    for task in tasks:
        created.append(task.task_id in inserted and task.task_id not in seen)
        seen.add(task.task_id)
    others = list({t.task_id for t, fresh in zip(tasks, created, strict=True) if not fresh})
    stored = dict(await tx.conn.fetch(q.SELECT_FINGERPRINTS, others))
    for task, fresh in zip(tasks, created, strict=True):
        if not fresh and stored[task.task_id] != task.fingerprint:
            raise IdempotencyConflict(
                f"task {task.task_id} exists with other content; use a new task_id"
            )
    return created


def columns_of(tasks: Sequence[NewTask]) -> list[list[Any]]:
    """The 19 columns of INSERT_TASKS (and PUT_NEW), one list per column."""
    rows = new_rows(tasks)
    if not rows:
        return [[] for _ in range(INSERT_WIDTH)]
    return [list(column) for column in zip(*rows, strict=True)]
