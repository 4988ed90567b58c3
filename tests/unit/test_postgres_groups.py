"""Group commit's grouping (engines/postgres/groups.py), without a database: calls held
while others are out go together, within the weight bound."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from conveyor.engines.postgres.groups import Group


class Recorder:
    """A stand-in for the statements: records each group sent, answers after a pause."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.alone: list[int] = []

    async def run(self, items: Sequence[int]) -> list[int | None]:
        self.groups.append(list(items))
        await asyncio.sleep(0.01)
        return [item * 10 for item in items]

    async def one(self, item: int) -> int:
        self.alone.append(item)
        await asyncio.sleep(0.01)
        return item * 10


async def test_calls_held_while_others_are_out_go_together_within_the_bound() -> None:
    recorder = Recorder()
    group: Group[int, int] = Group(
        recorder.run, recorder.one, in_flight=1, weigh=lambda item: item, max_weight=10
    )
    results = await asyncio.gather(*(group.call(item) for item in (1, 4, 4, 4, 30, 2)))
    assert results == [10, 40, 40, 40, 300, 20]
    # the first goes at once; then, one flush at a time, as many held calls as stay
    # within 10 (a flush of one call sends it alone), the one heavier than 10 alone
    assert recorder.alone == [1, 4, 30, 2]
    assert recorder.groups == [[4, 4]]


async def test_a_bounded_group_still_uses_every_slot_in_flight() -> None:
    recorder = Recorder()
    group: Group[int, int] = Group(
        recorder.run, recorder.one, in_flight=3, weigh=lambda item: item, max_weight=5
    )
    first = asyncio.gather(*(group.call(1) for _ in range(3)))  # fill the slots
    await asyncio.sleep(0)
    rest = asyncio.gather(*(group.call(5) for _ in range(3)))
    await asyncio.gather(first, rest)
    assert recorder.alone.count(1) == 3
    assert recorder.alone.count(5) == 3  # each at the bound: alone, not queued behind
