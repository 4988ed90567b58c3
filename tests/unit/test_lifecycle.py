"""What each verb does to a task: leases checked, outcomes decided once for every engine."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from conveyor.domain import lifecycle
from conveyor.domain.lifecycle import CancelAction, Outcome
from conveyor.domain.retry import Backoff, BackoffKind
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import DEADLINE_ERROR, LEASE_EXPIRED_ERROR, TaskError, TaskResult
from conveyor.errors import Conflict, InvalidTransition, LeaseLost

NOW = 1_700_000_000.0
LEASE = "lease-1"
S = TaskStatus
RESULT = TaskResult(status_code=200, body={"answer": 42})
ERROR = TaskError(message="upstream said no", code="upstream")


FIXED_10S = Backoff(kind=BackoffKind.FIXED, base_s=10.0, cap_s=10.0, jitter=0.0)


@dataclass(frozen=True)
class State:
    """A running task on its first of three attempts, holding LEASE for another minute."""

    task_id: str = "t1"
    status: TaskStatus = S.RUNNING
    attempts: int = 1
    max_attempts: int = 3
    backoff: Backoff = FIXED_10S
    lease_id: str | None = LEASE
    lease_expires_at: float | None = NOW + 60.0
    cancel_requested: bool = False


RUNNING = State()
CANCEL_REQUESTED = State(cancel_requested=True)
LAST_ATTEMPT = State(attempts=3)


def not_running(status: TaskStatus) -> State:
    return State(status=status, lease_id=None, lease_expires_at=None)


# ---- the lease ----


def test_current_unexpired_lease_holds() -> None:
    lifecycle.check_lease(RUNNING, LEASE, NOW)


def test_lease_without_expiry_holds() -> None:
    lifecycle.check_lease(State(lease_expires_at=None), LEASE, NOW + 10**9)


@pytest.mark.parametrize(
    ("task", "lease_id", "reason"),
    [
        (RUNNING, "someone-else", "foreign"),
        (RUNNING, "", "empty"),
        (State(lease_id="lease-2"), LEASE, "stale: the task was taken again"),
        (State(lease_expires_at=NOW), LEASE, "expired this instant"),
        (State(lease_expires_at=NOW - 1), LEASE, "expired"),
        (not_running(S.QUEUED), LEASE, "requeued after expiry"),
        (replace(not_running(S.SUCCEEDED), lease_id=LEASE), LEASE, "already completed"),
    ],
)
def test_stale_foreign_or_expired_lease_is_lost(task: State, lease_id: str, reason: str) -> None:
    with pytest.raises(LeaseLost) as info:
        lifecycle.check_lease(task, lease_id, NOW)
    assert "t1" in info.value.message, reason


def test_lease_lost_is_a_conflict() -> None:
    with pytest.raises(Conflict):
        lifecycle.check_lease(RUNNING, "someone-else", NOW)


def test_lease_lost_on_a_finished_task_says_its_state() -> None:
    with pytest.raises(LeaseLost) as info:
        lifecycle.check_lease(not_running(S.SUCCEEDED), LEASE, NOW)
    assert "succeeded" in info.value.message


VERBS_WITH_A_LEASE: dict[str, Callable[[State, str], object]] = {
    "completed": lambda t, lease: lifecycle.completed(t, lease, RESULT, NOW),
    "failed": lambda t, lease: lifecycle.failed(
        t, lease, ERROR, retry=True, retry_after_s=None, now=NOW
    ),
    "heartbeat": lambda t, lease: lifecycle.heartbeat_cancels(t, lease, NOW),
}


@pytest.mark.parametrize("verb", list(VERBS_WITH_A_LEASE))
@pytest.mark.parametrize("task", [RUNNING, CANCEL_REQUESTED])
def test_every_verb_with_a_lease_checks_it_first(verb: str, task: State) -> None:
    with pytest.raises(LeaseLost):
        VERBS_WITH_A_LEASE[verb](task, "someone-else")
    with pytest.raises(LeaseLost):
        VERBS_WITH_A_LEASE[verb](replace(task, lease_expires_at=NOW - 1), LEASE)


# ---- complete ----


def test_completed_succeeds_with_the_result() -> None:
    assert lifecycle.completed(RUNNING, LEASE, RESULT, NOW) == Outcome(
        S.SUCCEEDED, completed_at=NOW, result=RESULT
    )


def test_completed_after_a_cancel_request_ends_cancelled_keeping_the_result() -> None:
    assert lifecycle.completed(CANCEL_REQUESTED, LEASE, RESULT, NOW) == Outcome(
        S.CANCELLED, completed_at=NOW, result=RESULT
    )


# ---- fail ----


def failed(
    task: State, *, retry: bool = True, retry_after_s: float | None = None
) -> lifecycle.Outcome:
    return lifecycle.failed(
        task,
        LEASE,
        ERROR,
        retry=retry,
        retry_after_s=retry_after_s,
        now=NOW,
        rng=random.Random(0),
    )


def test_failed_with_attempts_left_is_scheduled_after_the_backoff() -> None:
    assert failed(RUNNING) == Outcome(S.SCHEDULED, run_at=NOW + 10.0, error=ERROR)


def test_failed_with_retry_after_zero_is_queued_at_once() -> None:
    assert failed(RUNNING, retry_after_s=0.0) == Outcome(S.QUEUED, run_at=NOW, error=ERROR)


def test_failed_with_retry_after_waits_that_long() -> None:
    assert failed(RUNNING, retry_after_s=3.0) == Outcome(S.SCHEDULED, run_at=NOW + 3.0, error=ERROR)


def test_failed_on_the_last_attempt_goes_to_the_dead_letter() -> None:
    assert failed(LAST_ATTEMPT) == Outcome(S.FAILED, completed_at=NOW, error=ERROR)


def test_failed_without_retry_goes_to_the_dead_letter() -> None:
    assert failed(RUNNING, retry=False) == Outcome(S.FAILED, completed_at=NOW, error=ERROR)


def test_failed_after_a_cancel_request_ends_cancelled_not_retried() -> None:
    assert failed(CANCEL_REQUESTED) == Outcome(S.CANCELLED, completed_at=NOW, error=ERROR)


def test_a_retried_task_is_not_completed() -> None:
    outcome = failed(RUNNING)
    assert outcome.completed_at is None
    assert outcome.result is None


# ---- heartbeat ----


def test_heartbeat_on_a_live_lease_extends_it() -> None:
    assert lifecycle.heartbeat_cancels(RUNNING, LEASE, NOW) is None


def test_heartbeat_delivers_a_cancel_request() -> None:
    assert lifecycle.heartbeat_cancels(CANCEL_REQUESTED, LEASE, NOW) == Outcome(
        S.CANCELLED, completed_at=NOW
    )


# ---- lease expiry and deadlines ----


def test_expired_lease_with_attempts_left_requeues_at_once() -> None:
    assert lifecycle.lease_expired(RUNNING, NOW) == Outcome(
        S.QUEUED, run_at=NOW, error=LEASE_EXPIRED_ERROR
    )


def test_expired_lease_on_the_last_attempt_goes_to_the_dead_letter() -> None:
    assert lifecycle.lease_expired(LAST_ATTEMPT, NOW) == Outcome(
        S.FAILED, completed_at=NOW, error=LEASE_EXPIRED_ERROR
    )


def test_expired_lease_after_a_cancel_request_ends_cancelled() -> None:
    assert lifecycle.lease_expired(CANCEL_REQUESTED, NOW) == Outcome(S.CANCELLED, completed_at=NOW)


def test_deadline_passed_expires_the_task() -> None:
    assert lifecycle.deadline_passed(NOW) == Outcome(
        S.EXPIRED, completed_at=NOW, error=DEADLINE_ERROR
    )


def test_lease_and_deadline_errors_carry_codes() -> None:
    assert LEASE_EXPIRED_ERROR.code == "lease_expired"
    assert DEADLINE_ERROR.code == "expired"


# ---- cancel ----


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (S.RUNNING, CancelAction.MARK),
        (S.QUEUED, CancelAction.END),
        (S.SCHEDULED, CancelAction.END),
        (S.CANCELLED, CancelAction.NOTHING),
    ],
)
def test_cancel_action_by_state(status: TaskStatus, action: CancelAction) -> None:
    task = RUNNING if status is S.RUNNING else not_running(status)
    assert lifecycle.cancel_action(task) is action


@pytest.mark.parametrize("status", [S.SUCCEEDED, S.FAILED, S.EXPIRED])
def test_cancel_of_a_task_that_ended_otherwise_is_refused(status: TaskStatus) -> None:
    with pytest.raises(InvalidTransition) as info:
        lifecycle.cancel_action(not_running(status))
    assert str(status) in info.value.message


# ---- requeue ----


def test_requeued_sends_a_dead_lettered_task_back_now() -> None:
    assert lifecycle.requeued(not_running(S.FAILED), NOW) == Outcome(S.QUEUED, run_at=NOW)


@pytest.mark.parametrize("status", [s for s in TaskStatus if s is not S.FAILED])
def test_requeued_refuses_every_task_not_in_the_dead_letter(status: TaskStatus) -> None:
    task = RUNNING if status is S.RUNNING else not_running(status)
    with pytest.raises(InvalidTransition) as info:
        lifecycle.requeued(task, NOW)
    assert str(status) in info.value.message
