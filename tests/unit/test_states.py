"""The task state machine: every allowed transition, and every other one refused."""

from __future__ import annotations

import itertools

import pytest

from conveyor.domain.states import (
    ACTIVE,
    FINISHED,
    TRANSITIONS,
    TaskStatus,
    can_transition,
    check_transition,
)
from conveyor.errors import InvalidTransition

S = TaskStatus

# Written out by hand from DESIGN.md ("States") rather than read from TRANSITIONS, so a
# change to the table has to be made twice, on purpose.
ALLOWED: set[tuple[TaskStatus, TaskStatus]] = {
    (S.SCHEDULED, S.QUEUED),  # the delay or backoff came due
    (S.SCHEDULED, S.CANCELLED),
    (S.SCHEDULED, S.EXPIRED),
    (S.QUEUED, S.RUNNING),  # taken
    (S.QUEUED, S.CANCELLED),
    (S.QUEUED, S.EXPIRED),
    (S.RUNNING, S.SUCCEEDED),  # completed
    (S.RUNNING, S.FAILED),  # attempts spent, or failed without retry
    (S.RUNNING, S.QUEUED),  # lease expired, or failed with no backoff
    (S.RUNNING, S.SCHEDULED),  # failed, retried after a backoff
    (S.RUNNING, S.CANCELLED),
    (S.RUNNING, S.EXPIRED),
    (S.FAILED, S.QUEUED),  # the dead letter re-queued by hand
}
ALL_PAIRS = list(itertools.product(TaskStatus, TaskStatus))
REFUSED = [pair for pair in ALL_PAIRS if pair not in ALLOWED]


def test_the_states_are_the_seven_of_the_design() -> None:
    assert {str(s) for s in TaskStatus} == {
        "queued",
        "scheduled",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "expired",
    }


def test_every_state_is_either_active_or_finished() -> None:
    assert set(TaskStatus) == ACTIVE | FINISHED
    assert not ACTIVE & FINISHED
    assert {S.SUCCEEDED, S.FAILED, S.CANCELLED, S.EXPIRED} == FINISHED


@pytest.mark.parametrize("status", list(TaskStatus))
def test_finished_property_matches_the_finished_set(status: TaskStatus) -> None:
    assert status.finished is (status in FINISHED)


def test_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(TaskStatus)


def test_table_is_exactly_the_allowed_set() -> None:
    table = {(current, target) for current, targets in TRANSITIONS.items() for target in targets}
    assert table == ALLOWED


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_allowed_transition_passes(current: TaskStatus, target: TaskStatus) -> None:
    assert can_transition(current, target)
    check_transition("t1", current, target)


@pytest.mark.parametrize(("current", "target"), REFUSED)
def test_refused_transition_raises_invalid_transition(
    current: TaskStatus, target: TaskStatus
) -> None:
    assert not can_transition(current, target)
    with pytest.raises(InvalidTransition) as info:
        check_transition("t1", current, target)
    message = info.value.message
    assert "t1" in message
    assert str(current) in message
    assert str(target) in message


@pytest.mark.parametrize("status", list(TaskStatus))
def test_no_state_moves_to_itself(status: TaskStatus) -> None:
    assert not can_transition(status, status)


@pytest.mark.parametrize("status", [S.SUCCEEDED, S.CANCELLED, S.EXPIRED])
def test_finished_states_are_terminal(status: TaskStatus) -> None:
    assert not TRANSITIONS[status]


def test_failed_is_terminal_except_for_requeue() -> None:
    assert TRANSITIONS[S.FAILED] == {S.QUEUED}


@pytest.mark.parametrize("status", [S.QUEUED, S.SCHEDULED, S.RUNNING])
def test_every_active_state_can_be_cancelled_or_expire(status: TaskStatus) -> None:
    assert can_transition(status, S.CANCELLED)
    assert can_transition(status, S.EXPIRED)


@pytest.mark.parametrize("status", [s for s in TaskStatus if s is not S.RUNNING])
def test_only_a_running_task_can_end_with_a_result(status: TaskStatus) -> None:
    assert not can_transition(status, S.SUCCEEDED)
    assert not can_transition(status, S.FAILED)


@pytest.mark.parametrize("status", [s for s in TaskStatus if s is not S.QUEUED])
def test_only_a_queued_task_can_be_taken(status: TaskStatus) -> None:
    assert not can_transition(status, S.RUNNING)
