"""Records (files, batches): put, get, list in id order, compare-and-set, delete, active."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from conveyor.domain.ids import new_task_id
from conveyor.engines import Engine
from conveyor.engines.engine import Record
from conveyor.errors import Conflict, NotFound


def record(
    kind: str = "file", project: str = "", *, active: bool = False, body: bytes = b"{}"
) -> Record:
    return Record(kind, new_task_id(), project, 1_700_000_000.0, body, active)


async def put_many(engine: Engine, n: int, **fields: object) -> list[Record]:
    return [await engine.put_record(record(**fields)) for _ in range(n)]  # type: ignore[arg-type]


async def test_put_stores_version_1_and_get_reads_it_back(engine: Engine) -> None:
    new = Record("file", new_task_id(), "acme", 1_700_000_000.5, b'{"a":1}', active=True)
    stored = await engine.put_record(new)
    assert stored == msgspec.structs.replace(new, version=1)
    assert await engine.get_record("file", new.id) == stored
    assert await engine.get_record("batch", new.id) is None
    assert await engine.get_record("file", "missing") is None


async def test_put_of_an_existing_id_conflicts_and_changes_nothing(engine: Engine) -> None:
    first = await engine.put_record(record(body=b"1"))
    with pytest.raises(Conflict):
        await engine.put_record(msgspec.structs.replace(first, body=b"2", version=0))
    assert await engine.get_record("file", first.id) == first
    # the same id of another kind is another record
    other = await engine.put_record(msgspec.structs.replace(first, kind="batch"))
    assert other.kind == "batch"


async def test_list_in_id_order_both_ways_with_after(engine: Engine) -> None:
    stored = await put_many(engine, 7, project="p")
    ids = [r.id for r in stored]
    newest = await engine.list_records("file", "p")
    assert [r.id for r in newest] == ids[::-1]
    assert newest[0] == stored[-1]
    oldest = await engine.list_records("file", "p", newest_first=False)
    assert [r.id for r in oldest] == ids
    page = await engine.list_records("file", "p", after=ids[4], limit=3)
    assert [r.id for r in page] == [ids[3], ids[2], ids[1]]
    page = await engine.list_records("file", "p", after=ids[4], limit=3, newest_first=False)
    assert [r.id for r in page] == [ids[5], ids[6]]
    assert await engine.list_records("file", "p", after=ids[0]) == []
    assert await engine.list_records("file", "p", after=ids[-1], newest_first=False) == []


async def test_paging_walks_every_record_once(engine: Engine) -> None:
    ids = [r.id for r in await put_many(engine, 11, project="p")]
    for newest_first in (True, False):
        seen: list[str] = []
        after: str | None = None
        while page := await engine.list_records(
            "file", "p", after=after, limit=4, newest_first=newest_first
        ):
            seen.extend(r.id for r in page)
            after = page[-1].id
        assert seen == (ids[::-1] if newest_first else ids)


async def test_after_need_not_be_a_stored_id(engine: Engine) -> None:
    ids = [r.id for r in await put_many(engine, 3, project="p")]
    gone = ids[1]
    assert await engine.delete_record("file", gone)
    assert [r.id for r in await engine.list_records("file", "p", after=gone)] == [ids[0]]
    page = await engine.list_records("file", "p", after=gone, newest_first=False)
    assert [r.id for r in page] == [ids[2]]


async def test_list_keeps_projects_and_kinds_apart(engine: Engine) -> None:
    acme = await put_many(engine, 2, project="acme")
    globex = await put_many(engine, 2, project="globex")
    batches = await put_many(engine, 2, kind="batch", project="acme")
    assert [r.id for r in await engine.list_records("file", "acme")] == [r.id for r in acme[::-1]]
    assert [r.id for r in await engine.list_records("file", "globex")] == [
        r.id for r in globex[::-1]
    ]
    assert [r.id for r in await engine.list_records("batch", "acme")] == [
        r.id for r in batches[::-1]
    ]
    assert await engine.list_records("file", "") == []
    assert await engine.list_records("batch", "globex") == []


async def test_replace_bumps_the_version_and_keeps_the_rest(engine: Engine) -> None:
    stored = await engine.put_record(record(project="p", body=b"v1"))
    changed = msgspec.structs.replace(
        stored, body=b"v2", active=True, project="other", created_at=1.0
    )
    replaced = await engine.replace_record(changed, expected_version=1)
    assert replaced == msgspec.structs.replace(stored, body=b"v2", active=True, version=2)
    assert await engine.get_record("file", stored.id) == replaced
    again = await engine.replace_record(
        msgspec.structs.replace(replaced, body=b"v3"), expected_version=2
    )
    assert again.version == 3
    assert again.body == b"v3"


async def test_replace_with_a_stale_version_conflicts(engine: Engine) -> None:
    stored = await engine.put_record(record(body=b"v1"))
    await engine.replace_record(msgspec.structs.replace(stored, body=b"v2"), 1)
    with pytest.raises(Conflict):
        await engine.replace_record(msgspec.structs.replace(stored, body=b"stale"), 1)
    current = await engine.get_record("file", stored.id)
    assert current is not None
    assert (current.body, current.version) == (b"v2", 2)


async def test_replace_of_a_missing_record_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound):
        await engine.replace_record(record(), 1)
    stored = await engine.put_record(record())
    assert await engine.delete_record("file", stored.id)
    with pytest.raises(NotFound):
        await engine.replace_record(stored, 1)


async def test_delete_says_whether_it_existed(engine: Engine) -> None:
    stored = await engine.put_record(record(project="p", active=True))
    assert await engine.delete_record("file", stored.id) is True
    assert await engine.delete_record("file", stored.id) is False
    assert await engine.get_record("file", stored.id) is None
    assert await engine.list_records("file", "p") == []
    assert await engine.list_active("file") == []
    assert await engine.delete_record("file", "never-was") is False
    # the id is free again
    assert (await engine.put_record(stored)).version == 1


async def test_list_active_oldest_first_across_projects(engine: Engine) -> None:
    a = await engine.put_record(record(project="acme", active=True))
    await engine.put_record(record(project="acme"))
    b = await engine.put_record(record(project="globex", active=True))
    c = await engine.put_record(record(project="", active=True))
    await engine.put_record(record(kind="batch", active=True))
    assert [r.id for r in await engine.list_active("file")] == [a.id, b.id, c.id]
    assert [r.id for r in await engine.list_active("file", limit=2)] == [a.id, b.id]
    assert [r.id for r in await engine.list_active("file", after=a.id)] == [b.id, c.id]
    assert [r.project for r in await engine.list_active("file")] == ["acme", "globex", ""]


async def test_replace_moves_records_in_and_out_of_active(engine: Engine) -> None:
    quiet = await engine.put_record(record())
    busy = await engine.put_record(record(active=True))
    quiet = await engine.replace_record(msgspec.structs.replace(quiet, active=True), 1)
    busy = await engine.replace_record(msgspec.structs.replace(busy, active=False), 1)
    assert [r.id for r in await engine.list_active("file")] == [quiet.id]
    active = (await engine.list_active("file"))[0]
    assert active == quiet
    await engine.replace_record(msgspec.structs.replace(quiet, active=False), 2)
    assert await engine.list_active("file") == []


async def test_concurrent_replaces_with_one_version_one_wins(engine: Engine) -> None:
    stored = await engine.put_record(record(body=b"start", active=True))
    attempts = [msgspec.structs.replace(stored, body=str(i).encode()) for i in range(20)]
    outcomes = await asyncio.gather(
        *(engine.replace_record(a, expected_version=1) for a in attempts),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if isinstance(o, Record)]
    losers = [o for o in outcomes if not isinstance(o, Record)]
    assert len(winners) == 1
    assert len(losers) == 19
    assert all(type(o) is Conflict for o in losers), losers
    current = await engine.get_record("file", stored.id)
    assert current == winners[0]
    assert current is not None
    assert current.version == 2


async def test_concurrent_puts_of_one_id_store_one(engine: Engine) -> None:
    new = record()
    outcomes = await asyncio.gather(
        *(engine.put_record(msgspec.structs.replace(new, body=str(i).encode())) for i in range(10)),
        return_exceptions=True,
    )
    assert sum(isinstance(o, Record) for o in outcomes) == 1
    assert sum(isinstance(o, Conflict) for o in outcomes) == 9
