"""A random walk through the task lifecycle, checked after every step against a small model.

The model restates the rules of DESIGN.md and `conveyor.domain.lifecycle` in the simplest
terms: what each verb does to each task, not how an engine stores it. Durations end in .25
and the clock moves in steps of 0.5 s, so nothing ever falls due exactly at a step and no
answer depends on `<` versus `<=`. Time only moves in `advance`, which sweeps at once, so
no expired lease or due task is ever seen unswept.

Hypothesis turns a random subset of rules off in each example (swarm testing), which in 40
short examples leaves most of them putting and sweeping with nobody taking. So there is one
rule, `step`, that picks a verb with fixed odds and draws that verb's arguments; a failure
report names the verb and prints each draw. Every example starts with a few tasks put.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import unittest
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from conveyor.domain.clock import ManualClock
from conveyor.domain.queues import Lane, QueueConfig, QueueUpdate, Source, resolve_sources
from conveyor.domain.retry import Backoff, BackoffKind
from conveyor.domain.states import ACTIVE, FINISHED, TaskStatus
from conveyor.domain.strategies import Strategy
from conveyor.domain.tasks import Task, TaskError, TaskResult, TaskSpec
from conveyor.engines import create_engine
from conveyor.errors import IdempotencyConflict, InvalidTransition, LeaseLost, NotFound
from conveyor.service.tasks import TaskService
from tests.conformance._model import ModelTask
from tests.conformance._support import collect, counts_by_level
from tests.conftest import ENGINES, engine_url

T = TypeVar("T")

QUEUES = ("a", "b")
MAX_LEVEL = 1
LEASES_S = (1.25, 30.25)  # one soon outlived, one that usually outlives its task
BACKOFF_S = 2.25
RETENTION_S = 30.25
ADDRESS_LISTS = (
    ("a",),
    ("b",),
    ("a", "b"),
    ("b", "a"),
    ("a:1", "b"),
    ("a:0", "a:1"),
    ("b:1", "a:0"),
    ("a", "b:0"),
)
RESULT = TaskResult(status_code=200, body="done")
ERROR = TaskError(message="nope")

RUNNING, QUEUED, SCHEDULED = TaskStatus.RUNNING, TaskStatus.QUEUED, TaskStatus.SCHEDULED
# how often each verb is picked: mostly taking and settling, which is where the rules are
VERBS = ("put",) * 2 + ("take",) * 3 + ("settle",) * 4 + ("manage",) * 2 + ("advance",) * 2
TASK_FIELDS = st.tuples(
    st.sampled_from(QUEUES),
    st.integers(0, MAX_LEVEL),
    st.sampled_from(["", "g1", "g2"]),
    st.sampled_from([None, None, 1.25, 5.25]),  # delay_s
    st.sampled_from([None, None, 20.25]),  # timeout_s
)
TaskFields = tuple[str, int, str, float | None, float | None]


class EngineMachine(RuleBasedStateMachine):
    """Drives one engine on a manual clock and the model side by side."""

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

    def pick(self, index: int, preferred: frozenset[TaskStatus] | None = None) -> ModelTask:
        """A known task (purged ones too), one in `preferred` if there is any."""
        known = [*self.tasks.values(), *self.purged.values()]
        if preferred is not None:
            known = [t for t in self.tasks.values() if t.status in preferred] or known
        return known[index % len(known)]

    def expect_refusal(self, call: Coroutine[Any, Any, object], *errors: type[Exception]) -> None:
        try:
            self.run(call)
        except errors:
            return
        raise AssertionError(f"expected {[e.__name__ for e in errors]}, the call succeeded")

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
            status=SCHEDULED if delay > 0 else QUEUED,
            run_at=self.now + delay,
            expires_at=None if spec.timeout_s is None else self.now + spec.timeout_s,
        )
        self.purged.pop(task_id, None)
        self.tasks[task_id] = model
        return model

    def lease_holds(self, model: ModelTask, lease_id: str) -> bool:
        return (
            model.task_id in self.tasks
            and model.status is RUNNING
            and model.lease_id == lease_id
            and model.lease_expires_at is not None
            and model.lease_expires_at > self.now
        )

    # ---- producing ----
    @initialize(first=st.lists(TASK_FIELDS, min_size=1, max_size=8))
    def put_first(self, first: list[TaskFields]) -> None:
        """Some work to start from."""
        for fields in first:
            self.put_one(fields, client_id=True)

    @rule(verb=st.sampled_from(VERBS), data=st.data())
    def step(self, verb: str, data: st.DataObject) -> None:
        """One verb, with its arguments drawn from `data`."""
        getattr(self, verb)(data)

    def draw(self, data: st.DataObject, strategy: st.SearchStrategy[T], label: str) -> T:
        return data.draw(strategy, label=label)

    def put_one(self, fields: TaskFields, client_id: bool) -> None:
        queue, level, group, delay_s, timeout_s = fields
        spec = self.new_spec(queue, level, group, client_id)
        spec.delay_s = delay_s
        spec.timeout_s = timeout_s
        task = self.run(self.service.put(spec))
        model = self.remember(task.task_id, spec)
        assert (task.status, task.run_at) == (model.status, model.run_at)

    def put(self, data: st.DataObject) -> None:
        """A put, a bulk put, or a repeat of a client id with the same or other content."""
        kind = self.draw(data, st.sampled_from(["one", "one", "bulk", "again", "conflict"]), "kind")
        count = self.draw(data, st.integers(1, 4), "count")
        repeatable = [t for t in self.tasks.values() if t.spec.task_id is not None]
        if kind in ("again", "conflict") and repeatable:
            model = repeatable[count % len(repeatable)]
            if kind == "again":
                answer = self.run(self.service.put(model.spec))
                assert (answer.task_id, answer.status) == (model.task_id, model.status)
                assert answer.attempts == model.attempts
            else:
                changed = TaskSpec(queue=model.spec.queue, task_id=model.task_id, data="other")
                self.expect_refusal(self.service.put(changed), IdempotencyConflict)
        elif kind == "bulk":
            queue, _, group, _, _ = self.draw(data, TASK_FIELDS, "fields")
            specs = [self.new_spec(queue, i % (MAX_LEVEL + 1), group, False) for i in range(count)]
            ids = self.run(self.service.put_many(specs))
            for task_id, spec in zip(ids, specs, strict=True):
                self.remember(task_id, spec)
        else:
            fields = self.draw(data, TASK_FIELDS, "fields")
            self.put_one(fields, client_id=self.draw(data, st.booleans(), "client_id"))

    # ---- taking ----
    def take(self, data: st.DataObject) -> None:
        """A take by any strategy: how many it gives, from where, and the leases."""
        addresses = self.draw(data, st.sampled_from(ADDRESS_LISTS), "addresses")
        strategy = self.draw(data, st.sampled_from(list(Strategy)), "strategy")
        size = self.draw(data, st.integers(1, 3), "size")
        lease_s = self.draw(data, st.sampled_from(LEASES_S), "lease_s")
        sources = resolve_sources(list(addresses), dict.fromkeys(QUEUES, MAX_LEVEL), MAX_LEVEL)
        live = [s for s in sources if s.queue not in self.paused]
        source_of = {lane: s for s in live for lane in s.lanes()}
        busy = {t.spec.queue for t in self.tasks.values() if t.status is RUNNING}
        waiting = [t for t in self.tasks.values() if t.status is QUEUED and t.lane in source_of]
        if strategy is Strategy.SEQUENTIAL:
            expected = min(size, len({t.spec.queue for t in waiting} - busy))
        else:
            expected = min(size, len(waiting))

        taken = self.run(
            self.service.take(list(addresses), strategy=strategy, size=size, lease_s=lease_s)
        )
        assert len(taken) == expected, (strategy, addresses, len(taken), expected)
        assert len({t.task_id for t in taken}) == len(taken)
        if strategy is Strategy.SEQUENTIAL:
            assert len({t.queue for t in taken}) == len(taken)
            assert not {t.queue for t in taken} & busy
        for task in taken:
            model = self.tasks[task.task_id]
            assert model.status is QUEUED
            assert model.lane in source_of
            assert task.lease_id is not None
            assert task.status is RUNNING
            model.status = RUNNING
            model.attempts += 1
            model.lease_id = task.lease_id
            model.lease_s = lease_s
            model.lease_expires_at = self.now + lease_s
            assert task.attempts == model.attempts
            assert task.lease_expires_at == model.lease_expires_at
        self.check_order(taken, live, source_of, strategy)

    def check_order(
        self,
        taken: list[Task],
        live: list[Source],
        source_of: dict[Lane, Source],
        strategy: Strategy,
    ) -> None:
        """Every strategy serves a source's most urgent level first; active_passive, list order."""
        left = Counter(
            source_of[t.lane]
            for t in self.tasks.values()
            if t.status is QUEUED and t.lane in source_of
        )
        for task in taken:
            source = source_of[Lane(task.queue, task.level)]
            for t in self.tasks.values():
                if t.status is QUEUED and source_of.get(t.lane) == source:
                    assert t.spec.level >= task.level, "a less urgent level was served first"
            if strategy is Strategy.ACTIVE_PASSIVE:
                earlier = live[: live.index(source)]
                assert not any(left[s] for s in earlier), "active_passive skipped a queue"

    # ---- settling a lease ----
    def settle(self, data: st.DataObject) -> None:
        """complete, fail or heartbeat with the current lease, an old one or another's."""
        if not self.tasks and not self.purged:
            return
        verb = self.draw(data, st.sampled_from(["complete", "fail", "heartbeat"]), "verb")
        lease = self.draw(data, st.sampled_from(["current"] * 3 + ["old", "foreign"]), "lease")
        index = self.draw(data, st.integers(0, 1000), "index")
        retry = retry_after_s = extend_s = None
        if verb == "fail":
            retry = self.draw(data, st.booleans(), "retry")
            retry_after_s = self.draw(data, st.sampled_from([None, 0.0, 3.25]), "retry_after_s")
        elif verb == "heartbeat":
            extend_s = self.draw(data, st.sampled_from([None, 5.25]), "extend_s")
        if lease == "current":
            model = self.pick(index, frozenset({RUNNING}))
            lease_id = model.lease_id or "never-leased"
        elif lease == "old":
            had = [t for t in [*self.tasks.values(), *self.purged.values()] if t.old_leases]
            model = had[index % len(had)] if had else self.pick(index)
            lease_id = model.old_leases[index % len(model.old_leases)] if had else "never-leased"
        else:
            model = self.pick(index, frozenset({RUNNING}))
            others = [t.lease_id for t in self.tasks.values() if t.lease_id and t is not model]
            lease_id = others[index % len(others)] if others else "made-up"
        if verb == "complete":
            call: Coroutine[Any, Any, object] = self.engine.complete(
                model.task_id, lease_id, RESULT
            )
        elif verb == "fail":
            call = self.engine.fail(
                model.task_id, lease_id, ERROR, retry=bool(retry), retry_after_s=retry_after_s
            )
        else:
            call = self.engine.heartbeat(model.task_id, lease_id, extend_s)
        if model.task_id in self.purged:
            self.expect_refusal(call, NotFound)
            return
        if not self.lease_holds(model, lease_id):
            self.expect_refusal(call, LeaseLost)
            return
        answer = self.run(call)
        now = self.now
        if verb == "heartbeat":
            assert isinstance(answer, tuple)
            if model.cancel_requested:
                model.end(TaskStatus.CANCELLED, now)
                assert answer == (None, True)
            else:
                model.lease_expires_at = now + (extend_s or model.lease_s)
                assert answer == (model.lease_expires_at, False)
            return
        if model.cancel_requested:
            model.end(TaskStatus.CANCELLED, now)
        elif verb == "complete":
            model.end(TaskStatus.SUCCEEDED, now)
        elif not retry or model.attempts >= model.max_attempts:
            model.end(TaskStatus.FAILED, now)
        else:
            delay = BACKOFF_S if retry_after_s is None else retry_after_s
            model.back(SCHEDULED if delay > 0 else QUEUED, now + delay)
        assert isinstance(answer, Task)
        assert answer.status is model.status
        if verb == "complete":
            assert answer.result == RESULT

    # ---- cancel, requeue, pause ----
    def manage(self, data: st.DataObject) -> None:
        """cancel (at once, or marked while running), requeue the dead letter, pause, resume."""
        verb = self.draw(
            data, st.sampled_from(["cancel", "cancel", "requeue", "pause", "resume"]), "verb"
        )
        aim = self.draw(data, st.sampled_from(["running", "waiting", "failed", "any"]), "aim")
        index = self.draw(data, st.integers(0, 1000), "index")
        if verb in ("pause", "resume"):
            queue = QUEUES[index % len(QUEUES)]
            self.run(self.service.update_queue(queue, QueueUpdate(paused=verb == "pause")))
            (self.paused.add if verb == "pause" else self.paused.discard)(queue)
            return
        if not self.tasks and not self.purged:
            return
        preferred = {
            "running": frozenset({RUNNING}),
            "waiting": frozenset({QUEUED, SCHEDULED}),
            "failed": frozenset({TaskStatus.FAILED}),
            "any": None,
        }[aim]
        model = self.pick(index, preferred)
        call = (self.engine.cancel if verb == "cancel" else self.engine.requeue)(model.task_id)
        if model.task_id in self.purged:
            self.expect_refusal(call, NotFound)
        elif verb == "requeue":
            if model.status is not TaskStatus.FAILED:
                self.expect_refusal(call, InvalidTransition)
                return
            model.back(QUEUED, self.now)
            model.attempts = 0
            model.completed_at = None
            assert self.run(call).status is QUEUED
        elif model.status in FINISHED and model.status is not TaskStatus.CANCELLED:
            self.expect_refusal(call, InvalidTransition)
        else:
            if model.status is RUNNING:
                model.cancel_requested = True
            elif model.status in ACTIVE:
                model.end(TaskStatus.CANCELLED, self.now)
            answer = self.run(call)
            assert answer.status is model.status
            assert answer.cancel_requested or model.status is not RUNNING

    # ---- time ----
    def advance(self, data: st.DataObject) -> None:
        """Move the clock, sweep, and apply the sweep's rules to the model."""
        seconds = self.draw(data, st.sampled_from([0.5, 1.0, 3.0, 7.0, 11.0]), "seconds")
        self.clock.advance(seconds)
        self.run(self.engine.sweep())
        now = self.now
        # in the order sweep's contract names: promote, deadlines, leases, purge
        for t in self.tasks.values():
            if t.status is SCHEDULED and t.run_at <= now:
                t.status = QUEUED
        for t in self.tasks.values():
            if t.status in ACTIVE and t.expires_at is not None and t.expires_at <= now:
                t.end(TaskStatus.EXPIRED, now)
        for t in self.tasks.values():
            expiry = t.lease_expires_at
            if t.status is RUNNING and expiry is not None and expiry <= now:
                if t.cancel_requested:
                    t.end(TaskStatus.CANCELLED, now)
                elif t.attempts >= t.max_attempts:
                    t.end(TaskStatus.FAILED, now)
                else:
                    t.back(QUEUED, now)
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
                if model.status is RUNNING:
                    assert task.lease_id == model.lease_id, where
                    assert task.lease_expires_at == model.lease_expires_at, where
                    assert task.cancel_requested == model.cancel_requested, where
                if model.status is SCHEDULED:
                    assert task.run_at == model.run_at, where
            counts: dict[int, Counter[TaskStatus]] = {}
            for t in expected:
                counts.setdefault(t.spec.level, Counter())[t.status] += 1
            stats = self.run(self.engine.queue_stats(queue))
            assert counts_by_level(stats) == {level: dict(c) for level, c in counts.items()}
            assert stats.queue.paused == (queue in self.paused)
        for task_id in self.purged:
            self.expect_refusal(self.engine.get_task(task_id), NotFound)


# Hypothesis's own default for state machines suppresses every health check; so do we.
SETTINGS = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def _title(name: str) -> str:
    """`redis-cluster` -> `RedisCluster`."""
    return name.title().replace("-", "")


def _test_case(name: str) -> type[unittest.TestCase]:
    class Machine(EngineMachine):
        engine_name = name

    Machine.__name__ = Machine.__qualname__ = f"{_title(name)}Machine"
    case = Machine.TestCase
    case.settings = SETTINGS
    return case


# one TestCase per engine, named for it so that `-k memory` picks it
for _name in ENGINES:
    globals()[f"Test{_title(_name)}StateMachine"] = _test_case(_name)
del _name
