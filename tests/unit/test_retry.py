"""Backoff delays and where a failed attempt or an expired lease sends its task."""

from __future__ import annotations

import random

import pytest

from conveyor.domain.retry import MAX_BACKOFF_S, Backoff, BackoffKind
from conveyor.domain.states import TaskStatus
from conveyor.domain.tasks import after_failure, after_lease_expiry
from conveyor.errors import InvalidInput

NOW = 1_700_000_000.0
FIXED = Backoff(kind=BackoffKind.FIXED, base_s=5.0, cap_s=60.0, jitter=0.0)
EXPONENTIAL = Backoff(kind=BackoffKind.EXPONENTIAL, base_s=2.0, cap_s=60.0, jitter=0.0)

# ---- delays ----


def test_default_backoff_is_exponential_from_one_second_capped_at_five_minutes() -> None:
    backoff = Backoff()
    assert backoff.kind is BackoffKind.EXPONENTIAL
    assert (backoff.base_s, backoff.cap_s, backoff.jitter) == (1.0, 300.0, 0.1)
    assert backoff.validated() is backoff


@pytest.mark.parametrize("attempt", [1, 2, 3, 10, 1_000])
def test_fixed_backoff_waits_base_every_time(attempt: int) -> None:
    assert FIXED.delay_s(attempt) == 5.0


@pytest.mark.parametrize(
    ("attempt", "delay"), [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 32.0), (6, 60.0)]
)
def test_exponential_backoff_doubles_from_base(attempt: int, delay: float) -> None:
    assert EXPONENTIAL.delay_s(attempt) == delay


@pytest.mark.parametrize("attempt", [6, 7, 63, 64, 10_000, 10**9])
def test_exponential_backoff_stops_at_cap(attempt: int) -> None:
    assert EXPONENTIAL.delay_s(attempt) == 60.0


@pytest.mark.parametrize("attempt", [0, -1])
def test_exponential_backoff_before_any_failure_is_base(attempt: int) -> None:
    assert EXPONENTIAL.delay_s(attempt) == 2.0


def test_zero_base_means_no_wait() -> None:
    assert Backoff(base_s=0.0, cap_s=0.0, jitter=0.0).delay_s(5) == 0.0


@pytest.mark.parametrize("kind", list(BackoffKind))
@pytest.mark.parametrize("jitter", [0.1, 0.5, 1.0])
def test_jitter_takes_at_most_its_fraction_off(kind: BackoffKind, jitter: float) -> None:
    backoff = Backoff(kind=kind, base_s=8.0, cap_s=8.0, jitter=jitter)
    rng = random.Random(1234)
    delays = [backoff.delay_s(3, rng) for _ in range(1_000)]
    assert all(8.0 * (1 - jitter) <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 900  # it does vary, so failures together do not retry together


def test_jitter_is_reproducible_with_a_seeded_random() -> None:
    backoff = Backoff(base_s=4.0, jitter=0.5)
    first = [backoff.delay_s(2, random.Random(7)) for _ in range(3)]
    again = [backoff.delay_s(2, random.Random(7)) for _ in range(3)]
    assert first == again


def test_jitter_applies_after_the_cap() -> None:
    backoff = Backoff(base_s=2.0, cap_s=60.0, jitter=0.5)
    rng = random.Random(99)
    delays = [backoff.delay_s(50, rng) for _ in range(200)]
    assert all(30.0 <= d <= 60.0 for d in delays)


# ---- validation ----


@pytest.mark.parametrize(
    "backoff",
    [
        Backoff(base_s=0.0, cap_s=0.0, jitter=0.0),
        Backoff(base_s=MAX_BACKOFF_S, cap_s=MAX_BACKOFF_S, jitter=1.0),
        Backoff(kind=BackoffKind.FIXED, base_s=3.0, cap_s=3.0),
    ],
)
def test_backoff_edges_are_accepted(backoff: Backoff) -> None:
    assert backoff.validated() is backoff


@pytest.mark.parametrize(
    ("backoff", "param"),
    [
        (Backoff(base_s=-0.001), "backoff.base_s"),
        (Backoff(base_s=MAX_BACKOFF_S + 1, cap_s=MAX_BACKOFF_S + 1), "backoff.base_s"),
        (Backoff(base_s=float("nan")), "backoff.base_s"),
        (Backoff(base_s=float("inf")), "backoff.base_s"),
        (Backoff(base_s=10.0, cap_s=9.0), "backoff.cap_s"),
        (Backoff(cap_s=MAX_BACKOFF_S + 1), "backoff.cap_s"),
        (Backoff(cap_s=float("nan")), "backoff.cap_s"),
        (Backoff(jitter=-0.1), "backoff.jitter"),
        (Backoff(jitter=1.01), "backoff.jitter"),
        (Backoff(jitter=float("nan")), "backoff.jitter"),
    ],
)
def test_bad_backoff_is_refused_naming_the_field(backoff: Backoff, param: str) -> None:
    with pytest.raises(InvalidInput) as info:
        backoff.validated()
    assert info.value.param == param
    assert param.removeprefix("backoff.") in info.value.message


# ---- after a failed attempt ----


def fail(
    attempts: int,
    max_attempts: int = 3,
    *,
    backoff: Backoff = FIXED,
    retry: bool = True,
    retry_after_s: float | None = None,
) -> tuple[TaskStatus, float]:
    return after_failure(
        attempts=attempts,
        max_attempts=max_attempts,
        backoff=backoff,
        retry=retry,
        retry_after_s=retry_after_s,
        now=NOW,
        rng=random.Random(0),
    )


def test_failure_with_attempts_left_is_scheduled_after_the_backoff() -> None:
    assert fail(1) == (TaskStatus.SCHEDULED, NOW + 5.0)


def test_failure_backoff_grows_with_the_attempt_number() -> None:
    assert fail(1, 5, backoff=EXPONENTIAL) == (TaskStatus.SCHEDULED, NOW + 2.0)
    assert fail(3, 5, backoff=EXPONENTIAL) == (TaskStatus.SCHEDULED, NOW + 8.0)


def test_failure_of_the_last_attempt_goes_to_the_dead_letter() -> None:
    assert fail(3, 3) == (TaskStatus.FAILED, NOW)


def test_failure_beyond_the_last_attempt_goes_to_the_dead_letter() -> None:
    assert fail(4, 3) == (TaskStatus.FAILED, NOW)


def test_failure_with_a_single_attempt_is_final() -> None:
    assert fail(1, 1) == (TaskStatus.FAILED, NOW)


def test_failure_without_retry_goes_to_the_dead_letter_with_attempts_left() -> None:
    assert fail(1, 10, retry=False) == (TaskStatus.FAILED, NOW)


def test_failure_without_retry_ignores_retry_after() -> None:
    assert fail(1, 10, retry=False, retry_after_s=30.0) == (TaskStatus.FAILED, NOW)


def test_retry_after_replaces_the_backoff() -> None:
    assert fail(1, retry_after_s=42.0) == (TaskStatus.SCHEDULED, NOW + 42.0)


def test_retry_after_cannot_outlive_the_attempts() -> None:
    assert fail(3, 3, retry_after_s=42.0) == (TaskStatus.FAILED, NOW)


def test_retry_after_zero_queues_at_once() -> None:
    assert fail(1, retry_after_s=0.0) == (TaskStatus.QUEUED, NOW)


def test_zero_backoff_queues_at_once() -> None:
    no_wait = Backoff(base_s=0.0, cap_s=0.0, jitter=0.0)
    assert fail(1, backoff=no_wait) == (TaskStatus.QUEUED, NOW)


# ---- after a lease expires ----


@pytest.mark.parametrize(("attempts", "max_attempts"), [(1, 3), (2, 3), (1, 2)])
def test_expired_lease_with_attempts_left_queues_at_once(attempts: int, max_attempts: int) -> None:
    assert after_lease_expiry(attempts=attempts, max_attempts=max_attempts) is TaskStatus.QUEUED


@pytest.mark.parametrize(("attempts", "max_attempts"), [(3, 3), (1, 1), (5, 3)])
def test_expired_lease_of_the_last_attempt_goes_to_the_dead_letter(
    attempts: int, max_attempts: int
) -> None:
    assert after_lease_expiry(attempts=attempts, max_attempts=max_attempts) is TaskStatus.FAILED
