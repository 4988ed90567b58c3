"""Records (files, batches) in Redis: a hash each, and two sorted sets of ids per kind.

All records of one kind share the hash tag `{r:KIND}` (keys.py), so each script touches one
slot. Ids sort as text (ZRANGEBYLEX), which is creation order for the time-ordered ids the
service makes.
"""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.engines.engine import Record
from conveyor.engines.redis.client import Link
from conveyor.engines.redis.codec import fields
from conveyor.engines.redis.keys import Keys
from conveyor.errors import Conflict, NotFound


def to_record(kind: str, record_id: str, flat: Sequence[bytes] | dict[bytes, bytes]) -> Record:
    f = fields(flat)
    return Record(
        kind,
        record_id,
        f[b"project"].decode(),
        float(f[b"ca"]),
        f[b"body"],
        f[b"active"] == b"1",
        int(f[b"version"]),
    )


class Records:
    """The engine's record verbs."""

    def __init__(self, link: Link, keys: Keys) -> None:
        self._link = link
        self._keys = keys

    async def put(self, record: Record) -> Record:
        stored = await self._link.run(
            "record_put",
            self._keys.records(record.kind),
            record.id,
            record.project,
            record.created_at,
            record.body,
            "1" if record.active else "0",
        )
        if not stored:
            raise Conflict(f"a {record.kind} record {record.id!r} exists already")
        return Record(
            record.kind,
            record.id,
            record.project,
            record.created_at,
            record.body,
            record.active,
            1,
        )

    async def get(self, kind: str, record_id: str) -> Record | None:
        flat = await self._link.call("HGETALL", f"{self._keys.records(kind)}rec:{record_id}")
        return to_record(kind, record_id, flat) if flat else None

    async def page(
        self,
        kind: str,
        index: str,
        *,
        after: str | None,
        limit: int,
        newest_first: bool,
    ) -> list[Record]:
        if limit <= 0:
            return []
        reply = await self._link.run(
            "record_page",
            self._keys.records(kind),
            index,
            "desc" if newest_first else "asc",
            after or "",
            limit,
        )
        return [to_record(kind, rid.decode(), flat) for rid, flat in reply]

    async def replace(self, record: Record, expected_version: int) -> Record:
        reply = await self._link.run(
            "record_replace",
            self._keys.records(record.kind),
            record.id,
            record.body,
            "1" if record.active else "0",
            expected_version,
        )
        if reply[0] == -1:
            raise NotFound(f"no {record.kind} record {record.id!r}")
        if reply[0] == 0:
            raise Conflict(
                f"{record.kind} record {record.id!r} is at version {int(reply[1])},"
                f" not {expected_version}: it changed since it was read"
            )
        return to_record(record.kind, record.id, reply[1])

    async def delete(self, kind: str, record_id: str) -> bool:
        return bool(await self._link.run("record_delete", self._keys.records(kind), record_id))
