"""Take strategies, decided by `select` over a small in-test LaneSource."""

from __future__ import annotations

from collections import Counter

import pytest

from conveyor.domain.queues import Lane, Source
from conveyor.domain.strategies import (
    Candidate,
    Rotation,
    Strategy,
    in_list_order,
    parse_strategy,
    select,
)
from conveyor.errors import InvalidInput


class FakeLanes:
    """Queued tasks per lane and running tasks per queue, answering as an engine would."""

    def __init__(self) -> None:
        self.queued: list[Candidate] = []
        self.running: Counter[str] = Counter()
        self.rotation = Rotation()
        self._seq = 0

    def put(self, address: str, count: int = 1, group: str = "") -> None:
        name, _, level = address.partition(":")
        for _ in range(count):
            self._seq += 1
            lane = Lane(name, int(level or 0))
            self.queued.append(Candidate(self._seq, f"{address}#{self._seq}", lane, group))

    # ---- LaneSource ----
    def has_queued(self, lane: Lane) -> bool:
        return any(c.lane == lane for c in self.queued)

    def oldest(self, lane: Lane, limit: int, group: str | None = None) -> list[Candidate]:
        mine = [c for c in self.queued if c.lane == lane and group in (None, c.group)]
        return sorted(mine)[:limit]

    def next_group(self, lane: Lane, after: str | None) -> str | None:
        groups = {c.group for c in self.queued if c.lane == lane}
        later = sorted(g for g in groups if after is None or g > after)
        return later[0] if later else None

    def has_running(self, queue: str) -> bool:
        return self.running[queue] > 0

    # ---- a take, as an engine does it ----
    def take(self, strategy: Strategy, sources: list[Source], size: int) -> list[Candidate]:
        """Select, then claim what was chosen, keeping the rotation between takes."""
        chosen = select(strategy, sources, size, self, self.rotation)
        assert len(set(chosen)) == len(chosen), "a task was chosen twice"
        for candidate in chosen:
            self.queued.remove(candidate)
            self.running[candidate.lane.queue] += 1
        return chosen


def lanes(*addresses: str) -> list[Source]:
    """Sources for addresses, each `name:level` or `name` with levels 0 and 1."""
    sources = []
    for address in addresses:
        name, sep, level = address.partition(":")
        sources.append(Source(name, (int(level),) if sep else (0, 1)))
    return sources


def queues_of(chosen: list[Candidate]) -> list[str]:
    return [str(c.lane) for c in chosen]


@pytest.fixture
def fake() -> FakeLanes:
    return FakeLanes()


# ---- choosing a strategy ----


@pytest.mark.parametrize("name", ["fifo", "active_passive", "round_robin", "sequential", "fair"])
def test_every_strategy_of_the_design_parses(name: str) -> None:
    assert parse_strategy(name) == Strategy(name)


@pytest.mark.parametrize("value", ["FIFO", "lifo", "", "round-robin", None, 1])
def test_unknown_strategy_is_refused_listing_the_choices(value: object) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_strategy(value)
    assert info.value.param == "strategy"
    assert "fifo, active_passive, round_robin, sequential, fair" in info.value.message


# ---- sizes and empty sources ----


@pytest.mark.parametrize("strategy", list(Strategy))
@pytest.mark.parametrize("size", [0, -1])
def test_size_below_one_takes_nothing(fake: FakeLanes, strategy: Strategy, size: int) -> None:
    fake.put("a:0", 3)
    assert fake.take(strategy, lanes("a:0"), size) == []


@pytest.mark.parametrize("strategy", list(Strategy))
def test_no_sources_takes_nothing(fake: FakeLanes, strategy: Strategy) -> None:
    fake.put("a:0", 3)
    assert fake.take(strategy, [], 5) == []


@pytest.mark.parametrize("strategy", list(Strategy))
def test_empty_lanes_give_nothing(fake: FakeLanes, strategy: Strategy) -> None:
    fake.put("other:0", 3)
    assert fake.take(strategy, lanes("a", "b:0"), 5) == []


@pytest.mark.parametrize("strategy", [s for s in Strategy if s is not Strategy.SEQUENTIAL])
def test_take_stops_at_size(fake: FakeLanes, strategy: Strategy) -> None:
    fake.put("a:0", 5)
    fake.put("b:0", 5)
    assert len(fake.take(strategy, lanes("a:0", "b:0"), 7)) == 7


@pytest.mark.parametrize("strategy", list(Strategy))
def test_take_larger_than_the_queue_takes_all_of_it(fake: FakeLanes, strategy: Strategy) -> None:
    fake.put("a:0", 1)
    assert queues_of(fake.take(strategy, lanes("a:0"), 10)) == ["a:0"]
    assert fake.take(strategy, lanes("a:0"), 10) == []


@pytest.mark.parametrize("strategy", list(Strategy))
def test_only_listed_lanes_are_taken_from(fake: FakeLanes, strategy: Strategy) -> None:
    fake.put("a:1", 2)
    fake.put("b:0", 2)
    assert set(queues_of(fake.take(strategy, lanes("a:0", "b:0"), 10))) == {"b:0"}


# ---- fifo ----


def test_fifo_takes_the_oldest_across_queues(fake: FakeLanes) -> None:
    fake.put("a:0")
    fake.put("b:0")
    fake.put("a:0")
    fake.put("c:0")
    chosen = fake.take(Strategy.FIFO, lanes("c:0", "b:0", "a:0"), 4)
    assert [c.seq for c in chosen] == [1, 2, 3, 4]


def test_fifo_serves_a_queues_most_urgent_level_before_older_offline_work(
    fake: FakeLanes,
) -> None:
    fake.put("a:1")  # older, offline
    fake.put("a:0")  # newer, online
    assert queues_of(fake.take(Strategy.FIFO, lanes("a"), 2)) == ["a:0", "a:1"]


def test_fifo_over_levels_listed_one_by_one_is_oldest_first(fake: FakeLanes) -> None:
    fake.put("a:1")
    fake.put("a:0")
    assert queues_of(fake.take(Strategy.FIFO, lanes("a:0", "a:1"), 2)) == ["a:1", "a:0"]


# ---- active_passive ----


def test_active_passive_drains_the_first_queue_before_the_next(fake: FakeLanes) -> None:
    fake.put("b:0", 2)
    fake.put("a:0", 2)
    chosen = fake.take(Strategy.ACTIVE_PASSIVE, lanes("a:0", "b:0"), 3)
    assert queues_of(chosen) == ["a:0", "a:0", "b:0"]


def test_active_passive_falls_through_to_the_next_queue_only_when_empty(
    fake: FakeLanes,
) -> None:
    fake.put("a:0", 2)
    fake.put("b:0", 2)
    sources = lanes("a:0", "b:0")
    assert queues_of(fake.take(Strategy.ACTIVE_PASSIVE, sources, 1)) == ["a:0"]
    assert queues_of(fake.take(Strategy.ACTIVE_PASSIVE, sources, 1)) == ["a:0"]
    assert queues_of(fake.take(Strategy.ACTIVE_PASSIVE, sources, 1)) == ["b:0"]


def test_active_passive_bare_name_serves_its_levels_most_urgent_first(fake: FakeLanes) -> None:
    fake.put("a:1")
    fake.put("a:0")
    fake.put("b:0")
    chosen = fake.take(Strategy.ACTIVE_PASSIVE, lanes("a", "b:0"), 3)
    assert queues_of(chosen) == ["a:0", "a:1", "b:0"]


# ---- round_robin ----


def test_round_robin_takes_one_from_each_queue_in_turn(fake: FakeLanes) -> None:
    fake.put("a:0", 3)
    fake.put("b:0", 3)
    fake.put("c:0", 3)
    chosen = fake.take(Strategy.ROUND_ROBIN, lanes("a:0", "b:0", "c:0"), 5)
    assert queues_of(chosen) == ["a:0", "b:0", "c:0", "a:0", "b:0"]


def test_round_robin_rotation_continues_across_takes(fake: FakeLanes) -> None:
    fake.put("a:0", 3)
    fake.put("b:0", 3)
    fake.put("c:0", 3)
    sources = lanes("a:0", "b:0", "c:0")
    taken = [queues_of(fake.take(Strategy.ROUND_ROBIN, sources, 1))[0] for _ in range(4)]
    assert taken == ["a:0", "b:0", "c:0", "a:0"]
    assert queues_of(fake.take(Strategy.ROUND_ROBIN, sources, 2)) == ["b:0", "c:0"]


def test_round_robin_skips_empty_queues(fake: FakeLanes) -> None:
    fake.put("a:0", 3)
    fake.put("c:0", 1)
    chosen = fake.take(Strategy.ROUND_ROBIN, lanes("a:0", "b:0", "c:0"), 4)
    assert queues_of(chosen) == ["a:0", "c:0", "a:0", "a:0"]


def test_round_robin_rotation_is_kept_per_queue_list(fake: FakeLanes) -> None:
    fake.put("a:0", 3)
    fake.put("b:0", 3)
    fake.take(Strategy.ROUND_ROBIN, lanes("a:0", "b:0"), 1)  # a; next is b
    assert queues_of(fake.take(Strategy.ROUND_ROBIN, lanes("b:0", "a:0"), 1)) == ["b:0"]
    assert queues_of(fake.take(Strategy.ROUND_ROBIN, lanes("a:0", "b:0"), 1)) == ["b:0"]


# ---- sequential ----


def test_sequential_takes_one_task_per_queue(fake: FakeLanes) -> None:
    fake.put("a:0", 3)
    fake.put("b:0", 3)
    assert queues_of(fake.take(Strategy.SEQUENTIAL, lanes("a:0", "b:0"), 10)) == ["a:0", "b:0"]


def test_sequential_gives_nothing_from_a_queue_with_a_running_task(fake: FakeLanes) -> None:
    fake.put("a:0", 3)
    fake.take(Strategy.SEQUENTIAL, lanes("a:0"), 1)
    assert fake.take(Strategy.SEQUENTIAL, lanes("a:0"), 1) == []
    fake.running["a"] -= 1  # the running task finished
    assert queues_of(fake.take(Strategy.SEQUENTIAL, lanes("a:0"), 1)) == ["a:0"]


def test_sequential_counts_running_tasks_at_any_level_of_the_queue(fake: FakeLanes) -> None:
    fake.put("a:0")
    fake.put("a:1")
    fake.take(Strategy.SEQUENTIAL, lanes("a:0"), 1)
    assert fake.take(Strategy.SEQUENTIAL, lanes("a:1"), 1) == []


def test_sequential_levels_listed_apart_still_give_one_per_queue(fake: FakeLanes) -> None:
    fake.put("a:0")
    fake.put("a:1")
    assert queues_of(fake.take(Strategy.SEQUENTIAL, lanes("a:1", "a:0"), 2)) == ["a:1"]


def test_sequential_running_task_elsewhere_does_not_block(fake: FakeLanes) -> None:
    fake.put("a:0")
    fake.running["other"] = 1
    assert queues_of(fake.take(Strategy.SEQUENTIAL, lanes("a:0"), 1)) == ["a:0"]


# ---- fair ----


def groups_of(chosen: list[Candidate]) -> list[str]:
    return [c.group for c in chosen]


def test_fair_rotates_between_groups_within_a_take(fake: FakeLanes) -> None:
    fake.put("a:0", 3, group="x")
    fake.put("a:0", 3, group="y")
    fake.put("a:0", 3, group="z")
    chosen = fake.take(Strategy.FAIR, lanes("a:0"), 5)
    assert groups_of(chosen) == ["x", "y", "z", "x", "y"]


def test_fair_group_rotation_continues_across_takes(fake: FakeLanes) -> None:
    fake.put("a:0", 3, group="x")
    fake.put("a:0", 3, group="y")
    fake.put("a:0", 3, group="z")
    sources = lanes("a:0")
    taken = [groups_of(fake.take(Strategy.FAIR, sources, 1))[0] for _ in range(7)]
    assert taken == ["x", "y", "z", "x", "y", "z", "x"]
    assert groups_of(fake.take(Strategy.FAIR, sources, 2)) == ["y", "z"]


def test_fair_big_group_does_not_starve_a_small_one(fake: FakeLanes) -> None:
    fake.put("a:0", 100, group="big")
    fake.put("a:0", 3, group="small")
    sources = lanes("a:0")
    first_six = groups_of(fake.take(Strategy.FAIR, sources, 6))
    assert first_six.count("small") == 3
    assert groups_of(fake.take(Strategy.FAIR, sources, 3)) == ["big"] * 3


def test_fair_small_group_put_late_is_served_at_the_next_take(fake: FakeLanes) -> None:
    fake.put("a:0", 100, group="big")
    sources = lanes("a:0")
    assert groups_of(fake.take(Strategy.FAIR, sources, 2)) == ["big", "big"]
    fake.put("a:0", 1, group="late")
    assert groups_of(fake.take(Strategy.FAIR, sources, 1)) == ["late"]


def test_fair_rotation_wraps_past_a_group_that_emptied(fake: FakeLanes) -> None:
    fake.put("a:0", 1, group="x")
    fake.put("a:0", 3, group="y")
    sources = lanes("a:0")
    assert groups_of(fake.take(Strategy.FAIR, sources, 2)) == ["x", "y"]
    assert groups_of(fake.take(Strategy.FAIR, sources, 2)) == ["y", "y"]


def test_fair_with_one_group_takes_oldest_first(fake: FakeLanes) -> None:
    fake.put("a:0", 4)
    chosen = fake.take(Strategy.FAIR, lanes("a:0"), 4)
    assert [c.seq for c in chosen] == [1, 2, 3, 4]


def test_fair_serves_lanes_in_list_order_most_urgent_first(fake: FakeLanes) -> None:
    fake.put("a:1", 2, group="x")
    fake.put("a:0", 1, group="y")
    fake.put("b:0", 2, group="x")
    chosen = fake.take(Strategy.FAIR, lanes("a", "b:0"), 4)
    assert queues_of(chosen) == ["a:0", "a:1", "a:1", "b:0"]


def test_fair_rotation_is_kept_per_lane(fake: FakeLanes) -> None:
    fake.put("a:0", 2, group="x")
    fake.put("a:0", 2, group="y")
    fake.put("b:0", 2, group="x")
    fake.put("b:0", 2, group="y")
    assert groups_of(fake.take(Strategy.FAIR, lanes("a:0"), 1)) == ["x"]
    assert groups_of(fake.take(Strategy.FAIR, lanes("b:0"), 1)) == ["x"]
    assert groups_of(fake.take(Strategy.FAIR, lanes("a:0"), 1)) == ["y"]


@pytest.mark.parametrize("strategy", list(Strategy))
@pytest.mark.parametrize(
    "addresses", [("a",), ("a:1",), ("a", "b"), ("b:1", "a:0", "a:1"), ("a:1", "a:0")]
)
@pytest.mark.parametrize("size", [1, 3, 100])
def test_in_list_order_means_what_active_passive_chooses(
    strategy: Strategy, addresses: tuple[str, ...], size: int
) -> None:
    def fill(fake: FakeLanes) -> None:
        for i in range(12):
            fake.put(("a:1", "b:1", "a:0", "b:0")[i % 4], 1 + i % 3, group=f"g{i % 2}")

    sources = lanes(*addresses)
    if not in_list_order(strategy, sources):
        return
    ordered, chosen = FakeLanes(), FakeLanes()
    fill(ordered)
    fill(chosen)
    for _ in range(4):  # rotations included: every take agrees
        expected = ordered.take(Strategy.ACTIVE_PASSIVE, sources, size)
        assert chosen.take(strategy, sources, size) == expected
