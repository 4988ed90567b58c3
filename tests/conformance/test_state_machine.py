"""A random walk through the task lifecycle, checked after every step against a small model.

The model below restates the rules of DESIGN.md and `conveyor.domain.lifecycle` in the
simplest terms: it knows what each verb does to each task, not how an engine stores it.
Durations end in .25 and the clock moves in steps of 0.5 s, so no deadline, lease or delay
ever falls due exactly at a step, and no answer depends on `<` versus `<=`.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from conveyor.domain.clock import ManualClock
from conveyor.domain.queues import Lane, QueueConfig, QueueUpdate, Source, resolve_sources
from conveyor.domain.retry import Backoff, BackoffKind
from conveyor.domain.states import FINISHED, TaskStatus
from conveyor.domain.strategies import Strategy
from conveyor.domain.tasks import Task, TaskError, TaskResult, TaskSpec
from conveyor.engines import create_engine
from conveyor.errors import IdempotencyConflict, InvalidTransition, LeaseLost, NotFound
from conveyor.service.tasks import TaskService
from tests.conftest import ENGINES, engine_url
from tests.conformance._support import collect, counts_by_level

T = TypeVar("T")

QUEUES = ("a", "b")
MAX_LEVEL = 1
LEASE_S = 10.25
BACKOFF_S = 2.25
RETENTION_S = 30.25
ADDRESS_LISTS = [
    ("a",),
    ("b",),
    ("a", "b"),
    ("b", "a"),
    ("a:1", "b"),
    ("a:0", "a:1"),
    ("b:1", "a:0"),
    ("a", "b:0"),
]
RESULT = TaskResult(status_code=200, body="done")
ERROR = TaskError(message="nope")


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

    def drop_lease(self) -> None:
        if self.lease_id is not None:
            self.old_leases.append(self.lease_id)
        self.lease_id = None
        self.lease_expires_at = None


class EngineMachine(RuleBasedStateMachine):
    """Drives one engine on a manual clock and a model side by side."""

    engine_name: ClassVar[str] = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="conveyor-machine-")
        self.clock = ManualClock()
        try:
            self.engine = create_engine(
                engine_url(self.engine_name, Path(self.directory)), clock=self.clock
            )
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise
        self.loop = asyncio.new_event_loop()
        self.service = TaskService(self.engine, clock=self.clock)
        backoff = Backoff(kind=BackoffKind.FIXED, base_s=BACKOFF_S, cap_s=BACKOFF_S, jitter=0.0)
        self.run(self.engine.open())
        for name in QUEUES:
            config = QueueConfig(
                name=name,
                max_level=MAX_LEVEL,
                lease_s=LEASE_S,
                max_attempts=2,
                backoff=backoff,
                retention_s=RETENTION_S,
            )
            self.run(self.service.register_queue(config))
        self.tasks: dict[str, ModelTask] = {}  # in put order
        self.purged: dict[str, ModelTask] = {}
        self.paused: set[str] = set()
        self.serial = 0

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        try:
            self.run(self.engine.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    # ---- helpers ----
    @property
    def now(self) -> float:
        return self.clock.now

    def pick(self, index: int, only: set[TaskStatus] | None = None) -> ModelTask | None:
        known = [*self.tasks.values(), *self.purged.values()]
        if only is not None:
            known = [t for t in known if t.task_id in self.tasks and t.status in only] or known
        return known[index % len(known)] if known else None

    def new_spec(self, queue: str, level: int, group: str, client_id: bool) -> TaskSpec:
        self.serial += 1
        return TaskSpec(
            queue=queue,
            level=level,
            group=group,
            data={"serial": self.serial},
            max_attempts=1 + self.serial % 3,
            task_id=f"client-{self.serial}" if client_id else None,
        )

    def remember(self, task_id: str, spec: TaskSpec) -> ModelTask:
        delay = spec.delay_s or 0.0
        model = ModelTask(
            task_id=task_id,
            spec=spec,
            status=TaskStatus.SCHEDULED if delay > 0 else TaskStatus.QUEUED,
            run_at=self.now + delay,
            expires_at=None if spec.timeout_s is None else self.now + spec.timeout_s,
        )
        self.purged.pop(task_id, None)
        self.tasks[task_id] = model
        return model

    def lease_holds(self, model: ModelTask, lease_id: str) -> bool:
        return (
            model.status is TaskStatus.RUNNING
            and model.lease_id == lease_id
            and model.lease_expires_at is not None
            and model.lease_expires_at > self.now
        )

    def choose_lease(self, model: ModelTask, which: str) -> str:
        if which == "current" and model.lease_id is not None:
            return model.lease_id
        if which == "stale" and model.old_leases:
            return model.old_leases[-1]
        others = [t.lease_id for t in self.tasks.values() if t.lease_id and t is not model]
        if which == "foreign" and others:
            return others[0]
        return "made-up-lease"

    # ---- producing ----
    @rule(
        queue=st.sampled_from(QUEUES),
        level=st.integers(0, MAX_LEVEL),
        group=st.sampled_from(["", "g1", "g2"]),
        delay_s=st.sampled_from([None, 1.25, 5.25]),
        timeout_s=st.sampled_from([None, 20.25]),
        client_id=st.booleans(),
    )
    def put(
        self,
        queue: str,
        level: int,
        group: str,
        delay_s: float | None,
        timeout_s: float | None,
        client_id: bool,
    ) -> None:
        spec = self.new_spec(queue, level, group, client_id)
        spec.delay_s = delay_s
        spec.timeout_s = timeout_s
        task = self.run(self.service.put(spec))
        model = self.remember(task.task_id, spec)
        assert task.status is model.status
        assert task.run_at == model.run_at

    @rule(
        queues=st.lists(st.sampled_from(QUEUES), min_size=1, max_size=4),
        group=st.sampled_from(["", "g1"]),
    )
    def put_many(self, queues: list[str], group: str) -> None:
        specs = [self.new_spec(q, i % (MAX_LEVEL + 1), group, False) for i, q in enumerate(queues)]
        ids = self.run(self.service.put_many(specs))
        for task_id, spec in zip(ids, specs, strict=True):
            self.remember(task_id, spec)

    @precondition(lambda self: any(t.spec.task_id for t in [*self.tasks.values()]))
    @rule(index=st.integers(0, 1000), same=st.booleans())
    def put_again(self, index: int, same: bool) -> None:
        with_ids = [t for t in self.tasks.values() if t.spec.task_id is not None]
        model = with_ids[index % len(with_ids)]
        if same:
            answer = self.run(self.service.put(model.spec))
            assert answer.task_id == model.task_id
            assert answer.status is model.status
            assert answer.attempts == model.attempts
        else:
            changed = TaskSpec(queue=model.spec.queue, task_id=model.task_id, data="other")
            try:
                self.run(self.service.put(changed))
            except IdempotencyConflict:
                return
            raise AssertionError("a put with the same id and other content was accepted")

    # ---- working ----
    @rule(
        addresses=st.sampled_from(ADDRESS_LISTS),
        strategy=st.sampled_from(list(Strategy)),
        size=st.integers(1, 3),
    )
    def take(self, addresses: tuple[str, ...], strategy: Strategy, size: int) -> None:
        sources = resolve_sources(list(addresses), dict.fromkeys(QUEUES, MAX_LEVEL), MAX_LEVEL)
        live = [s for s in sources if s.queue not in self.paused]
        source_of = {lane: s for s in live for lane in s.lanes()}
        running_queues = {t.spec.queue for t in self.tasks.values() if t.status is TaskStatus.RUNNING}
        waiting = [
            t for t in self.tasks.values() if t.status is TaskStatus.QUEUED and t.lane in source_of
        ]
        if strategy is Strategy.SEQUENTIAL:
            open_queues = {t.spec.queue for t in waiting} - running_queues
            expected = min(size, len(open_queues))
        else:
            expected = min(size, len(waiting))

        taken = self.run(
            self.service.take(list(addresses), strategy=strategy, size=size, lease_s=LEASE_S)
        )
        assert len(taken) == expected, (strategy, addresses, len(taken), expected)
        assert len({t.task_id for t in taken}) == len(taken)
        if strategy is Strategy.SEQUENTIAL:
            assert len({t.queue for t in taken}) == len(taken)
            assert not {t.queue for t in taken} & running_queues
        for task in taken:
            model = self.tasks[task.task_id]
            assert model.status is TaskStatus.QUEUED and model.lane in source_of
            assert task.lease_id is not None
            model.status = TaskStatus.RUNNING
            model.attempts += 1
            model.lease_id = task.lease_id
            model.lease_s = LEASE_S
            model.lease_expires_at = self.now + LEASE_S
            assert task.attempts == model.attempts
            assert task.lease_expires_at == model.lease_expires_at
        self.check_urgency(taken, live, source_of, strategy)

    def check_urgency(
        self, taken: list[Task], live: list[Source], source_of: dict[Lane, Source], strategy: Strategy
    ) -> None:
        """Every strategy serves a source's most urgent level first; active_passive, list order."""
        left = Counter(
            source_of[t.lane]
            for t in self.tasks.values()
            if t.status is TaskStatus.QUEUED and t.lane in source_of
        )
        for task in taken:
            source = source_of[Lane(task.queue, task.level)]
            for t in self.tasks.values():
                if t.status is TaskStatus.QUEUED and source_of.get(t.lane) == source:
                    assert t.spec.level >= task.level, "a less urgent level was served first"
            if strategy is Strategy.ACTIVE_PASSIVE:
                earlier = live[: live.index(source)]
                assert not any(left[s] for s in earlier), "active_passive skipped a queue"

    @rule(index=st.integers(0, 1000), which=st.sampled_from(["current", "stale", "foreign"]))
    def complete(self, index: int, which: str) -> None:
        model = self.pick(index, {TaskStatus.RUNNING})
        if model is None:
            return
        lease = self.choose_lease(model, which)
        outcome = self.attempt(self.engine.complete(model.task_id, lease, RESULT), model, lease)
        if outcome is not None:
            status = TaskStatus.CANCELLED if model.cancel_requested else TaskStatus.SUCCEEDED
            model.end(status, self.now)
            assert outcome.status is status
            assert outcome.result == RESULT

    @rule(
        index=st.integers(0, 1000),
        which=st.sampled_from(["current", "current", "stale"]),
        retry=st.booleans(),
        retry_after_s=st.sampled_from([None, 0.0, 3.25]),
    )
    def fail(self, index: int, which: str, retry: bool, retry_after_s: float | None) -> None:
        model = self.pick(index, {TaskStatus.RUNNING})
        if model is None:
            return
        lease = self.choose_lease(model, which)
        call = self.engine.fail(
            model.task_id, lease, ERROR, retry=retry, retry_after_s=retry_after_s
        )
        outcome = self.attempt(call, model, lease)
        if outcome is None:
            return
        if model.cancel_requested:
            model.end(TaskStatus.CANCELLED, self.now)
        elif not retry or model.attempts >= model.max_attempts:
            model.end(TaskStatus.FAILED, self.now)
        else:
            delay = BACKOFF_S if retry_after_s is None else retry_after_s
            model.drop_lease()
            model.status = TaskStatus.SCHEDULED if delay > 0 else TaskStatus.QUEUED
            model.run_at = self.now + delay
        assert outcome.status is model.status

    @rule(
        index=st.integers(0, 1000),
        which=st.sampled_from(["current", "current", "stale"]),
        extend_s=st.sampled_from([None, 5.25]),
    )
    def heartbeat(self, index: int, which: str, extend_s: float | None) -> None:
        model = self.pick(index, {TaskStatus.RUNNING})
        if model is None:
            return
        lease = self.choose_lease(model, which)
        beat = self.attempt(self.engine.heartbeat(model.task_id, lease, extend_s), model, lease)
        if beat is None:
            return
        if model.cancel_requested:
            model.end(TaskStatus.CANCELLED, self.now)
            assert beat.cancelled is True
        else:
            model.lease_expires_at = self.now + (extend_s or model.lease_s)
            assert beat.cancelled is False
            assert beat.lease_expires_at == model.lease_expires_at

    def attempt(self, call: Coroutine[Any, Any, T], model: ModelTask, lease: str) -> T | None:
        """Run a lease-holding call; None when the model says it must be refused (and was)."""
        if model.task_id in self.purged:
            try:
                self.run(call)
            except NotFound:
                return None
            raise AssertionError("a verb on a purged task succeeded")
        if not self.lease_holds(model, lease):
            try:
                self.run(call)
            except LeaseLost:
                return None
            raise AssertionError(f"a lease that does not hold was accepted ({model.status})")
        return self.run(call)

    # ---- cancel, requeue, pause ----
    @rule(index=st.integers(0, 1000))
    def cancel(self, index: int) -> None:
        model = self.pick(index)
        if model is None:
            return
        call = self.engine.cancel(model.task_id)
        if model.task_id in self.purged:
            try:
                self.run(call)
            except NotFound:
                return
            raise AssertionError("cancelled a purged task")
        if model.status in (TaskStatus.QUEUED, TaskStatus.SCHEDULED):
            model.end(TaskStatus.CANCELLED, self.now)
        elif model.status is TaskStatus.RUNNING:
            model.cancel_requested = True
        elif model.status is not TaskStatus.CANCELLED:
            try:
                self.run(call)
            except InvalidTransition:
                return
            raise AssertionError(f"cancelled a {model.status} task")
        assert self.run(call).status is model.status

    @rule(index=st.integers(0, 1000))
    def requeue(self, index: int) -> None:
        model = self.pick(index, {TaskStatus.FAILED})
        if model is None:
            return
        call = self.engine.requeue(model.task_id)
        if model.task_id in self.purged or model.status is not TaskStatus.FAILED:
            try:
                self.run(call)
            except (NotFound, InvalidTransition) as exc:
                assert isinstance(exc, NotFound) == (model.task_id in self.purged)
                return
            raise AssertionError(f"requeued a {model.status} task")
        answer = self.run(call)
        model.status = TaskStatus.QUEUED
        model.attempts = 0
        model.completed_at = None
        model.run_at = self.now
        assert answer.status is TaskStatus.QUEUED

    @rule(queue=st.sampled_from(QUEUES), paused=st.booleans())
    def pause(self, queue: str, paused: bool) -> None:
        self.run(self.service.update_queue(queue, QueueUpdate(paused=paused)))
        if paused:
            self.paused.add(queue)
        else:
            self.paused.discard(queue)

    # ---- time ----
    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 7.0, 11.0]))
    def advance_and_sweep(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.run(self.engine.sweep())
        now = self.now
        # in the order sweep's contract names: promote, deadlines, leases, purge
        for t in self.tasks.values():
            if t.status is TaskStatus.SCHEDULED and t.run_at <= now:
                t.status = TaskStatus.QUEUED
        for t in self.tasks.values():
            if t.status not in FINISHED and t.expires_at is not None and t.expires_at <= now:
                t.end(TaskStatus.EXPIRED, now)
        for t in self.tasks.values():
            expiry = t.lease_expires_at
            if t.status is TaskStatus.RUNNING and expiry is not None and expiry <= now:
                if t.cancel_requested:
                    t.end(TaskStatus.CANCELLED, now)
                elif t.attempts >= t.max_attempts:
                    t.end(TaskStatus.FAILED, now)
                else:
                    t.drop_lease()
                    t.status = TaskStatus.QUEUED
        for task_id, t in list(self.tasks.items()):
            if t.completed_at is not None and t.completed_at <= now - RETENTION_S:
                self.purged[task_id] = self.tasks.pop(task_id)

    # ---- the check ----
    @invariant()
    def engine_agrees_with_model(self) -> None:
        for queue in QUEUES:
            stored = self.run(collect(self.engine, queue, limit=7))
            expected = [t for t in self.tasks.values() if t.spec.queue == queue]
            assert [t.task_id for t in stored] == [t.task_id for t in expected]
            for task, model in zip(stored, expected, strict=True):
                where = f"task {task.task_id}"
                assert task.status is model.status, where
                assert task.attempts == model.attempts, where
                assert task.completed_at == model.completed_at, where
                if model.status is TaskStatus.RUNNING:
                    assert task.lease_id == model.lease_id, where
                    assert task.lease_expires_at == model.lease_expires_at, where
                    assert task.cancel_requested == model.cancel_requested, where
                if model.status is TaskStatus.SCHEDULED:
                    assert task.run_at == model.run_at, where
            counts: dict[int, Counter[TaskStatus]] = {}
            for t in expected:
                counts.setdefault(t.spec.level, Counter())[t.status] += 1
            stats = self.run(self.engine.queue_stats(queue))
            assert counts_by_level(stats) == {lv: dict(c) for lv, c in counts.items()}
            assert stats.queue.paused == (queue in self.paused)
        for task_id in self.purged:
            try:
                self.run(self.engine.get_task(task_id))
            except NotFound:
                continue
            raise AssertionError(f"task {task_id} outlived its retention")


SETTINGS = settings(max_examples=40, stateful_step_count=30, deadline=None)


def _machine_for(name: str) -> type[EngineMachine]:
    return type(f"{name.title()}Machine", (EngineMachine,), {"engine_name": name})


for _name in ENGINES:
    _case = _machine_for(_name).TestCase
    _case.settings = SETTINGS
    globals()[f"Test{_name.title()}StateMachine"] = _case
