"""The SQLite engine: one durable file, one connection, group commit (see writer.py).

Writes are functions of a `Tx`; each is atomic and commits with whatever else was queued
in the same event-loop iteration. Reads use the same connection between commits.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import sqlite3
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from conveyor.domain import lifecycle
from conveyor.domain.clock import Clock, system_clock
from conveyor.domain.events import NewEvent, TaskEvent
from conveyor.domain.queues import QueueConfig, QueueUpdate
from conveyor.domain.states import TaskStatus
from conveyor.domain.strategies import Rotation, select
from conveyor.domain.tasks import NewTask, Task, TaskError, TaskResult
from conveyor.engines._rows import new_rows
from conveyor.engines.engine import (
    BatchCounts,
    Completion,
    DueCallback,
    Heartbeat,
    LevelStats,
    QueueStats,
    Record,
    Settled,
    SweepReport,
    TakeRequest,
    TaskPage,
    WorkWatch,
    parse_cursor,
)
from conveyor.engines.notifier import LocalNotifier
from conveyor.engines.sqlite import batch_counts, batches, records
from conveyor.engines.sqlite import queries as q
from conveyor.engines.sqlite.lanes import Lanes
from conveyor.engines.sqlite.queries import STATUS_CODES
from conveyor.engines.sqlite.rows import Row, decode_any, encode, to_task
from conveyor.engines.sqlite.settle import settle, settle_many, state_of, states
from conveyor.engines.sqlite.store import (
    Checkpointer,
    FileLock,
    check_synchronous,
    connect_writer,
    flush_counts,
    load_counts,
)
from conveyor.engines.sqlite.sweep import sweep
from conveyor.engines.sqlite.writer import Tx, Writer
from conveyor.errors import (
    Conflict,
    ConveyorError,
    EngineUnavailable,
    IdempotencyConflict,
    NotFound,
)

T = TypeVar("T")
_config = msgspec.json.Decoder(QueueConfig)


class SqliteEngine:
    """Queues and tasks in one SQLite file; durable across process kills."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock = system_clock,
        synchronous: str = "normal",
        rng: random.Random | None = None,
    ) -> None:
        self._path = Path(path)
        self._clock = clock
        self._synchronous = check_synchronous(synchronous)
        self._rng = rng or random.Random()
        self._rotation = Rotation()
        # the writer thread's view of the queues table, kept exact because it alone writes it
        self._configs: dict[str, QueueConfig] = {}
        self._notifier = LocalNotifier()
        self._writer: Writer | None = None
        self._checkpointer: Checkpointer | None = None
        self._lock = FileLock(self._path)

    # ---- lifecycle ----
    async def open(self) -> None:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except OSError as exc:
            raise EngineUnavailable(f"cannot open the SQLite store {self._path}: {exc}") from exc
        try:
            conn = connect_writer(self._path, self._synchronous)
        except (OSError, sqlite3.Error) as exc:
            self._lock.release()
            raise EngineUnavailable(f"cannot open the SQLite store {self._path}: {exc}") from exc
        except EngineUnavailable:
            self._lock.release()
            raise
        self._checkpointer = Checkpointer(self._path)
        self._checkpointer.start()
        self._writer = Writer(
            conn,
            flush_counts=flush_counts,
            deliver=self._deliver,
            checkpoint=self._checkpoint,
            counts=load_counts(conn),
        )
        self._configs = {
            config.name: config
            for (raw,) in conn.execute(q.SELECT_QUEUES)
            if (config := _config.decode(raw))
        }

    def _checkpoint(self) -> None:
        """Between two transactions: ask the checkpointer for a pass, and restart the WAL
        here if the checkpointer cannot keep it short."""
        checkpointer = self._checkpointer
        if checkpointer is None:
            return
        if checkpointer.overdue():
            checkpointer.force()
        checkpointer.request()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer.conn.close()
            self._writer = None
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.stop)
            self._checkpointer = None
        self._lock.release()

    async def ready(self) -> bool:
        try:
            return bool(await self._read(lambda conn: conn.execute("SELECT 1").fetchone()))
        except Exception:
            return False

    async def _write(self, op: Any) -> Any:
        if self._writer is None:
            raise EngineUnavailable("the SQLite engine is not open")
        return await self._writer.run(op)

    async def _read(self, fn: Any) -> Any:
        # reads run between flushes on the same connection, so they see committed state
        if self._writer is None:
            raise EngineUnavailable("the SQLite engine is not open")
        return fn(self._writer.conn)

    def _deliver(self, work: set[str], due: list[float], changed: list[str]) -> None:
        if changed:
            self._notifier.tasks_changed(changed)
        if work:
            self._notifier.work_arrived(work)
        if due:
            self._notifier.due(min(due))

    # ---- queues ----
    def _store_queue(
        self, tx: Tx, config: QueueConfig, existing: QueueConfig | None
    ) -> QueueConfig:
        tx.conn.execute(q.UPSERT_QUEUE, (config.name, encode(config)))
        self._configs[config.name] = config
        if existing is not None and existing.paused and not config.paused:
            tx.work.add(config.name)
        return config

    async def register_queue(self, config: QueueConfig, *, replace: bool = True) -> QueueConfig:
        def op(tx: Tx) -> QueueConfig:
            existing = self._configs.get(config.name)
            if existing is not None and not replace:
                return existing
            created_at = self._clock() if existing is None else existing.created_at
            stored = msgspec.structs.replace(config, created_at=created_at)
            return self._store_queue(tx, stored, existing)

        result: QueueConfig = await self._write(op)
        return result

    async def get_queue(self, name: str) -> QueueConfig:
        row = await self._read(lambda conn: conn.execute(q.SELECT_QUEUE, (name,)).fetchone())
        if row is None:
            raise NotFound(f"queue {name!r} does not exist")
        return _config.decode(row[0])

    async def list_queues(self) -> list[QueueConfig]:
        rows = await self._read(lambda conn: conn.execute(q.SELECT_QUEUES).fetchall())
        return [_config.decode(raw) for (raw,) in rows]

    async def update_queue(self, name: str, update: QueueUpdate) -> QueueConfig:
        def op(tx: Tx) -> QueueConfig:
            existing = self._known(name)
            return self._store_queue(tx, update.apply(existing), existing)

        result: QueueConfig = await self._write(op)
        return result

    def _levels_with(self, queue: str, status: TaskStatus) -> list[int]:
        """The levels of `queue` holding tasks in `status`, from the committed counts."""
        assert self._writer is not None
        return [lv for (name, lv, st) in self._writer.counts if name == queue and st is status]

    def _known(self, name: str) -> QueueConfig:
        try:
            return self._configs[name]
        except KeyError:
            raise NotFound(f"queue {name!r} does not exist") from None

    async def queue_stats(self, name: str) -> QueueStats:
        config = await self.get_queue(name)
        now = self._clock()

        def read(conn: sqlite3.Connection) -> list[LevelStats]:
            counts: dict[int, dict[TaskStatus, int]] = {}
            for level, status, n in conn.execute(q.SELECT_QUEUE_COUNTS, (name,)):
                counts.setdefault(level, {})[q.STATUSES[status]] = n
            levels = []
            for level in sorted(counts):
                age = None
                if counts[level].get(TaskStatus.QUEUED):
                    row = conn.execute(q.OLDEST_RUN_AT, (name, level)).fetchone()
                    age = None if row is None else now - row[0]
                levels.append(
                    LevelStats(level=level, counts=counts[level], oldest_queued_age_s=age)
                )
            return levels

        return QueueStats(queue=config, levels=await self._read(read))

    async def obliterate_queue(self, name: str, *, force: bool = False) -> int:
        def op(tx: Tx) -> int:
            self._known(name)
            if not force and Lanes(tx).has_running(name):
                raise Conflict(
                    f"queue {name!r} has running tasks; pass force to obliterate it anyway"
                )
            tx.conn.execute(q.DELETE_QUEUE_EVENTS, (name,))
            tx.conn.execute(q.DELETE_QUEUE_BATCH_COUNTS, (name,))  # a batch's tasks share a queue
            deleted = tx.conn.execute(q.DELETE_QUEUE_TASKS, (name,)).rowcount
            for key in [k for k in {*tx.writer.counts, *tx.writer.pending} if k[0] == name]:
                tx.delta[key] -= tx.count(key)
            tx.conn.execute(q.DELETE_QUEUE, (name,))
            del self._configs[name]
            return int(deleted)

        result: int = await self._write(op)
        return result

    # ---- tasks ----
    async def put(self, tasks: Sequence[NewTask]) -> list[bool]:
        result: list[bool] = await self._write(partial(self._put, tasks))
        return result

    def _put(self, tasks: Sequence[NewTask], tx: Tx) -> list[bool]:
        for name in {task.queue for task in tasks}:
            self._known(name)
        conn = tx.conn
        before = conn.execute(q.MAX_SEQ).fetchone()[0]
        changes = conn.total_changes
        conn.executemany(
            q.INSERT_TASK,
            new_rows(tasks),
        )
        if conn.total_changes - changes == len(tasks):
            created = [True] * len(tasks)
        else:
            created = self._which_created(conn, tasks, before)
        stored = [task for task, fresh in zip(tasks, created, strict=True) if fresh]
        for (queue, level, status), n in Counter(
            (t.queue, t.level, t.status) for t in stored
        ).items():
            tx.moved(queue, level, None, status, n)
        batched: batch_counts.Delta = {}
        for task in stored:
            batch_counts.note_change(batched, task.batch_id, None, None, total=1)
        batch_counts.apply(conn, batched)
        due = [t.run_at for t in stored if t.status is TaskStatus.SCHEDULED]
        due.extend(t.expires_at for t in stored if t.expires_at is not None)
        if due:
            tx.due.append(min(due))
        return created

    @staticmethod
    def _which_created(
        conn: sqlite3.Connection, tasks: Sequence[NewTask], before: int
    ) -> list[bool]:
        ids = list({t.task_id for t in tasks})
        stored: dict[str, tuple[int, str]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT task_id, seq, fingerprint FROM tasks WHERE task_id IN ({marks})"
            stored.update((tid, (seq, fp)) for tid, seq, fp in conn.execute(sql, chunk))
        created: list[bool] = []
        seen: set[str] = set()
        for task in tasks:
            seq, fingerprint = stored[task.task_id]
            if fingerprint != task.fingerprint:
                raise IdempotencyConflict(
                    f"task {task.task_id} exists with other content; use a new task_id"
                )
            created.append(seq > before and task.task_id not in seen)
            seen.add(task.task_id)
        return created

    async def take(self, request: TakeRequest) -> list[Task]:
        rows: list[Row] = await self._write(partial(self._take, request))
        return [to_task(row) for row in rows]

    def _take(self, request: TakeRequest, tx: Tx) -> list[Row]:
        sources = [
            s
            for s in request.sources
            if (config := self._configs.get(s.queue)) is not None and not config.paused
        ]
        chosen = select(request.strategy, sources, request.size, Lanes(tx), self._rotation)
        if not chosen:
            return []
        now = self._clock()
        expires_at = now + request.lease_s
        sql = q.CLAIM.format(marks=",".join("?" * len(chosen)))
        args = (now, request.worker_id, expires_at, request.lease_s, *(c.seq for c in chosen))
        rows = tx.conn.execute(sql, args).fetchall()
        order = {c.seq: i for i, c in enumerate(chosen)}
        rows.sort(key=lambda row: order[row[0]])
        for row in rows:
            tx.moved(row[2], row[3], TaskStatus.QUEUED, TaskStatus.RUNNING)
        tx.due.append(expires_at)
        return rows

    async def complete(self, task_id: str, lease_id: str, result: TaskResult) -> Task:
        def op(tx: Tx) -> Row:
            state = state_of(tx, task_id)
            return settle(tx, state, lifecycle.completed(state, lease_id, result, self._clock()))

        return to_task(await self._write(op))

    async def complete_many(self, items: Sequence[Completion]) -> list[Settled | ConveyorError]:
        def op(tx: Tx) -> list[Settled | ConveyorError]:
            now = self._clock()
            decided = lifecycle.completions(
                states(tx, [item.task_id for item in items]), items, now
            )
            settle_many(tx, [d for d in decided if isinstance(d, tuple)])
            return [
                d if isinstance(d, ConveyorError) else Settled(d[0].queue, d[1].status)
                for d in decided
            ]

        result: list[Settled | ConveyorError] = await self._write(op)
        return result

    async def fail(
        self,
        task_id: str,
        lease_id: str,
        error: TaskError,
        *,
        retry: bool = True,
        retry_after_s: float | None = None,
    ) -> Task:
        def op(tx: Tx) -> Row:
            state = state_of(tx, task_id)
            outcome = lifecycle.failed(
                state,
                lease_id,
                error,
                retry=retry,
                retry_after_s=retry_after_s,
                now=self._clock(),
                rng=self._rng,
            )
            return settle(tx, state, outcome)

        return to_task(await self._write(op))

    async def heartbeat(
        self, task_id: str, lease_id: str, extend_s: float | None = None
    ) -> Heartbeat:
        def op(tx: Tx) -> Heartbeat:
            state = state_of(tx, task_id)
            now = self._clock()
            outcome = lifecycle.heartbeat_cancels(state, lease_id, now)
            if outcome is not None:
                settle(tx, state, outcome)
                return Heartbeat(lease_expires_at=None, cancelled=True)
            expires_at = now + (extend_s if extend_s is not None else (state.lease_s or 0.0))
            tx.conn.execute(q.EXTEND_LEASE, (expires_at, state.seq))
            return Heartbeat(lease_expires_at=expires_at, cancelled=False)

        result: Heartbeat = await self._write(op)
        return result

    async def cancel(self, task_id: str) -> Task:
        def op(tx: Tx) -> Row:
            state = state_of(tx, task_id)
            action = lifecycle.cancel_action(state)
            if action is lifecycle.CancelAction.MARK:
                row: Row = tx.conn.execute(q.MARK_CANCEL, (state.seq,)).fetchone()
                return row
            if action is lifecycle.CancelAction.END:
                outcome = lifecycle.Outcome(TaskStatus.CANCELLED, completed_at=self._clock())
                return settle(tx, state, outcome)
            row = tx.conn.execute(q.SELECT_TASK, (task_id,)).fetchone()
            return row

        return to_task(await self._write(op))

    async def requeue(self, task_id: str) -> Task:
        def op(tx: Tx) -> Row:
            state = state_of(tx, task_id)
            outcome = lifecycle.requeued(state, self._clock())
            tx.conn.execute(q.RESET_FOR_REQUEUE, (state.seq,))
            return settle(tx, state, outcome)

        return to_task(await self._write(op))

    async def append_events(self, task_id: str, lease_id: str, events: Sequence[NewEvent]) -> int:
        def op(tx: Tx) -> int:
            state = state_of(tx, task_id)
            now = self._clock()
            lifecycle.check_lease(state, lease_id, now)
            last: int = tx.conn.execute(q.LAST_EVENT_ID, (state.seq,)).fetchone()[0]
            tx.conn.executemany(
                q.INSERT_EVENT,
                [
                    (state.seq, last + offset + 1, e.event, e.data_json, now)
                    for offset, e in enumerate(events)
                ],
            )
            tx.changed.append(task_id)
            return last + len(events)

        result: int = await self._write(op)
        return result

    async def list_events(
        self, task_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[TaskEvent]:
        def read(conn: sqlite3.Connection) -> list[TaskEvent]:
            row = conn.execute(q.SELECT_SEQ, (task_id,)).fetchone()
            if row is None:
                raise NotFound(f"task {task_id} does not exist")
            return [
                TaskEvent(event_id, event, decode_any(data), created_at)
                for event_id, event, data, created_at in conn.execute(
                    q.LIST_EVENTS, (row[0], after, limit)
                )
            ]

        events: list[TaskEvent] = await self._read(read)
        return events

    async def get_task(self, task_id: str) -> Task:
        row = await self._read(lambda conn: conn.execute(q.SELECT_TASK, (task_id,)).fetchone())
        if row is None:
            raise NotFound(f"task {task_id} does not exist")
        return to_task(row)

    async def list_tasks(
        self,
        queue: str,
        status: TaskStatus | None = None,
        *,
        after: str | None = None,
        limit: int = 100,
    ) -> TaskPage:
        await self.get_queue(queue)
        start = parse_cursor(after)
        statuses = list(q.STATUSES) if status is None else [status]

        def read(conn: sqlite3.Connection) -> list[Row]:
            # each state's (or queued level's) rows come in seq order; merged, the queue's order
            runs = [
                conn.execute(
                    q.LIST_BY_STATUS, (queue, STATUS_CODES[s], start, limit + 1)
                ).fetchall()
                for s in statuses
                if s is not TaskStatus.QUEUED
            ]
            if TaskStatus.QUEUED in statuses:
                runs.extend(
                    conn.execute(q.LIST_QUEUED, (queue, level, start, limit + 1)).fetchall()
                    for level in self._levels_with(queue, TaskStatus.QUEUED)
                )
            return list(itertools.islice(heapq.merge(*runs), limit + 1))

        rows = await self._read(read)
        cursor = str(rows[limit - 1][0]) if len(rows) > limit else None
        return TaskPage(tasks=[to_task(row) for row in rows[:limit]], next_cursor=cursor)

    # ---- batches ----
    async def batch_counts(self, batch_id: str) -> BatchCounts:
        counts: BatchCounts = await self._read(partial(batch_counts.count, batch_id=batch_id))
        return counts

    async def batch_tasks(
        self, batch_id: str, *, after: str | None = None, limit: int = 1000
    ) -> TaskPage:
        start = parse_cursor(after)
        rows: list[Row] = await self._read(
            partial(batches.page, batch_id=batch_id, after=start, limit=limit)
        )
        cursor = str(rows[limit - 1][0]) if len(rows) > limit else None
        return TaskPage(tasks=[to_task(row) for row in rows[:limit]], next_cursor=cursor)

    async def cancel_batch(self, batch_id: str, limit: int = 500) -> int:
        def op(tx: Tx) -> int:
            return batches.cancel(tx, batch_id, limit, self._clock())

        acted: int = await self._write(op)
        return acted

    # ---- callbacks ----
    async def claim_callbacks(self, limit: int, hold_s: float) -> list[DueCallback]:
        def op(tx: Tx) -> list[Row]:
            now = self._clock()
            rows: list[Row] = tx.conn.execute(
                q.CLAIM_CALLBACKS, (now + hold_s, now, limit)
            ).fetchall()
            return rows

        rows: list[Row] = await self._write(op)
        return [DueCallback(to_task(row[1:]), row[0]) for row in rows]

    async def settle_callback(self, task_id: str, *, retry_at: float | None) -> None:
        def op(tx: Tx) -> None:
            tx.conn.execute(q.SETTLE_CALLBACK, (retry_at, task_id))
            if retry_at is not None:
                tx.changed.append(task_id)

        await self._write(op)

    async def wait_for_callbacks(self, timeout_s: float) -> None:
        await self._notifier.wait_for_callbacks(timeout_s)

    # ---- records ----
    async def put_record(self, record: Record) -> Record:
        stored: Record = await self._write(partial(records.put, record))
        return stored

    async def get_record(self, kind: str, record_id: str) -> Record | None:
        found: Record | None = await self._read(
            partial(records.get, kind=kind, record_id=record_id)
        )
        return found

    async def list_records(
        self,
        kind: str,
        project: str,
        *,
        after: str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[Record]:
        def read(conn: sqlite3.Connection) -> list[Record]:
            return records.list_page(conn, kind, project, after, limit, newest_first)

        page: list[Record] = await self._read(read)
        return page

    async def replace_record(self, record: Record, expected_version: int) -> Record:
        stored: Record = await self._write(partial(records.replace, record, expected_version))
        return stored

    async def delete_record(self, kind: str, record_id: str) -> bool:
        deleted: bool = await self._write(partial(records.delete, kind, record_id))
        return deleted

    async def list_active(
        self, kind: str, limit: int = 1000, *, after: str | None = None
    ) -> list[Record]:
        def read(conn: sqlite3.Connection) -> list[Record]:
            return records.active(conn, kind, limit, after)

        found: list[Record] = await self._read(read)
        return found

    # ---- maintenance ----
    async def sweep(self) -> SweepReport:
        report: SweepReport = await self._write(self._sweep)
        self._notifier.swept(report.next_due_at)
        return report

    def _sweep(self, tx: Tx) -> SweepReport:
        return sweep(tx, self._clock(), self._configs)

    def watch(self, queues: Sequence[str]) -> AbstractAsyncContextManager[WorkWatch]:
        return self._notifier.watch(queues)

    def watch_task(self, task_id: str) -> AbstractAsyncContextManager[WorkWatch]:
        return self._notifier.watch_task(task_id)

    async def wait_for_due(self, timeout_s: float) -> None:
        await self._notifier.wait_for_due(timeout_s)
