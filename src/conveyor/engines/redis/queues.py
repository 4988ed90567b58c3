"""Queues in Redis: configs in each queue's meta hash, names in one set, and obliterating.

A queue's config lives in `P:{q:NAME}:meta` beside the fields its scripts read (paused,
ret = retention_s), and changes by compare-and-set on the stored config, so a config is
always decided in Python (QueueUpdate.apply) and written whole.
"""

from __future__ import annotations

import msgspec
from redis.exceptions import ResponseError

from conveyor.domain.clock import Clock
from conveyor.domain.queues import QueueConfig, QueueUpdate
from conveyor.domain.states import TaskStatus
from conveyor.engines.engine import LevelStats, QueueStats
from conveyor.engines.redis.client import Link
from conveyor.engines.redis.keys import Keys
from conveyor.errors import Conflict, NotFound

_config = msgspec.json.Decoder(QueueConfig)
_encode = msgspec.json.Encoder().encode
TRIES = 10
ERASE_CHUNK = 1_000
_STATUSES = {status.value: status for status in TaskStatus}


def _missing(name: str) -> NotFound:
    return NotFound(f"queue {name!r} does not exist")


class Queues:
    """The engine's queue verbs."""

    def __init__(self, link: Link, keys: Keys, clock: Clock) -> None:
        self._link = link
        self._keys = keys
        self._clock = clock

    async def _stored(self, name: str) -> tuple[bytes | None, QueueConfig | None]:
        raw = await self._link.call("HGET", f"{self._keys.queue(name)}meta", "config")
        return raw, None if raw is None else _config.decode(raw)

    async def _write(self, config: QueueConfig, expected: bytes | None, wake: bool) -> int:
        """Compare and set the stored config: 1 stored, 0 it moved, -1 being obliterated."""
        batch = self._link.batch()
        batch.script(
            "register",
            self._keys.queue(config.name),
            self._keys.prefix,
            _encode(config),
            "1" if config.paused else "0",
            config.retention_s,
            expected or b"",
            "1" if wake else "0",
        )
        batch.call("SADD", self._keys.queues, config.name)
        reply, _ = await batch.run()
        if isinstance(reply, Exception):
            raise reply
        return int(reply[0])

    async def register(self, config: QueueConfig, *, replace: bool) -> QueueConfig:
        for _ in range(TRIES):
            raw, existing = await self._stored(config.name)
            if existing is not None and not replace:
                return existing
            created_at = self._clock() if existing is None else existing.created_at
            stored = msgspec.structs.replace(config, created_at=created_at)
            wake = existing is not None and existing.paused and not stored.paused
            written = await self._write(stored, raw, wake)
            if written == 1:
                return stored
            if written == -1:  # an obliterate stopped half-way: finish it first
                await self._erase(config.name)
        raise Conflict(f"queue {config.name!r} kept changing while it was registered")

    async def get(self, name: str) -> QueueConfig:
        _, config = await self._stored(name)
        if config is None:
            raise _missing(name)
        return config

    async def list(self) -> list[QueueConfig]:
        names = sorted(n.decode() for n in await self._link.call("SMEMBERS", self._keys.queues))
        batch = self._link.batch()
        for name in names:
            batch.call("HGET", f"{self._keys.queue(name)}meta", "config")
        return [_config.decode(raw) for raw in await batch.run() if isinstance(raw, bytes)]

    async def update(self, name: str, update: QueueUpdate) -> QueueConfig:
        for _ in range(TRIES):
            raw, existing = await self._stored(name)
            if existing is None:
                raise _missing(name)
            config = update.apply(existing)
            if await self._write(config, raw, existing.paused and not config.paused) == 1:
                return config
        raise Conflict(f"queue {name!r} kept changing while it was updated")

    async def stats(self, name: str) -> QueueStats:
        raw, counts, oldest = await self._link.run(
            "stats", self._keys.queue(name), self._keys.prefix
        )
        if raw is None:
            raise _missing(name)
        now = self._clock()
        levels: dict[int, dict[TaskStatus, int]] = {}
        for i in range(0, len(counts), 2):
            level, _, status = counts[i].decode().partition(":")
            if n := int(counts[i + 1]):
                levels.setdefault(int(level), {})[_STATUSES[status]] = n
        ages = {int(oldest[i]): now - float(oldest[i + 1]) for i in range(0, len(oldest), 2)}
        return QueueStats(
            queue=_config.decode(raw),
            levels=[
                LevelStats(level=lv, counts=levels[lv], oldest_queued_age_s=ages.get(lv))
                for lv in sorted(levels)
            ],
        )

    async def obliterate(self, name: str, *, force: bool) -> int:
        """Delete the queue and its tasks; how many tasks. Raises NotFound, Conflict."""
        try:
            count = await self._link.run(
                "obliterate", self._keys.queue(name), self._keys.prefix, "1" if force else "0"
            )
        except ResponseError as exc:
            text = str(exc)
            if text.startswith("NOQUEUE"):
                raise _missing(name) from None
            if text.startswith("RUNNING"):
                raise Conflict(
                    f"queue {name!r} has running tasks; pass force to obliterate it anyway"
                ) from None
            raise
        await self._erase(name)
        return int(count)

    async def _erase(self, name: str) -> None:
        """Delete every key of a queue marked gone, then its meta hash (admin path: SCAN, on the node holding them)."""
        base = self._keys.queue(name)
        task_prefix = f"{base}t:".encode()
        batch_prefix = f"{base}b:".encode()
        meta = f"{base}meta".encode()
        cursor = 0
        while True:
            cursor, found = await self._link.scan(base, cursor, ERASE_CHUNK)
            keys = [k for k in found if k != meta]
            tasks = [k[len(task_prefix) :].decode() for k in keys if k.startswith(task_prefix)]
            batches = [k[len(batch_prefix) :].decode() for k in keys if k.startswith(batch_prefix)]
            batch = self._link.batch()
            if tasks:
                batch.call("HDEL", self._keys.index, *tasks)
            if batches:
                batch.call("HDEL", self._keys.batches, *batches)
            if keys:
                batch.call("UNLINK", *keys)
            await batch.run()
            if cursor == 0:
                break
        batch = self._link.batch()
        batch.call("DEL", meta)
        batch.call("SREM", self._keys.queues, name)
        await batch.run()
