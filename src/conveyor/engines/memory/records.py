"""The memory engine's records (files, batches): by id, by project in id order, and active."""

from __future__ import annotations

import itertools

import msgspec
from sortedcontainers import SortedList

from conveyor.engines.engine import Record
from conveyor.errors import Conflict, NotFound


class Records:
    """Every record, with the two orders the engine lists them in."""

    def __init__(self) -> None:
        self._by_id: dict[tuple[str, str], Record] = {}
        self._by_project: dict[tuple[str, str], SortedList] = {}  # (kind, project) -> ids
        self._active: dict[str, SortedList] = {}  # kind -> ids

    def put(self, record: Record) -> Record:
        key = (record.kind, record.id)
        if key in self._by_id:
            raise Conflict(f"a {record.kind} record {record.id!r} exists already")
        stored = msgspec.structs.replace(record, version=1)
        self._by_id[key] = stored
        self._by_project.setdefault((record.kind, record.project), SortedList()).add(record.id)
        if stored.active:
            self._active.setdefault(record.kind, SortedList()).add(record.id)
        return stored

    def get(self, kind: str, record_id: str) -> Record | None:
        return self._by_id.get((kind, record_id))

    def page(
        self, kind: str, project: str, after: str | None, limit: int, newest_first: bool
    ) -> list[Record]:
        ids = self._by_project.get((kind, project))
        if not ids:
            return []
        if newest_first:
            run = ids.irange(maximum=after, inclusive=(True, False), reverse=True)
        else:
            run = ids.irange(minimum=after, inclusive=(False, True))
        return [self._by_id[(kind, rid)] for rid in itertools.islice(run, max(limit, 0))]

    def replace(self, record: Record, expected_version: int) -> Record:
        key = (record.kind, record.id)
        current = self._by_id.get(key)
        if current is None:
            raise NotFound(f"no {record.kind} record {record.id!r}")
        if current.version != expected_version:
            raise Conflict(
                f"{record.kind} record {record.id!r} is at version {current.version},"
                f" not {expected_version}: it changed since it was read"
            )
        stored = msgspec.structs.replace(
            current, body=record.body, active=record.active, version=current.version + 1
        )
        self._by_id[key] = stored
        if stored.active and not current.active:
            self._active.setdefault(record.kind, SortedList()).add(record.id)
        elif current.active and not stored.active:
            self._active[record.kind].remove(record.id)
        return stored

    def delete(self, kind: str, record_id: str) -> bool:
        current = self._by_id.pop((kind, record_id), None)
        if current is None:
            return False
        ids = self._by_project[(kind, current.project)]
        ids.remove(record_id)
        if not ids:
            del self._by_project[(kind, current.project)]
        if current.active:
            self._active[kind].remove(record_id)
        return True

    def active(self, kind: str, limit: int, after: str | None) -> list[Record]:
        ids = self._active.get(kind)
        if not ids:
            return []
        run = ids.irange(minimum=after, inclusive=(False, True))
        return [self._by_id[(kind, rid)] for rid in itertools.islice(run, max(limit, 0))]
