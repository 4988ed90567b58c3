"""Blobs as files in one local directory, written through a temporary file and a rename."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from conveyor.blobs.store import DEFAULT_CHUNK_BYTES
from conveyor.errors import InvalidInput, NotFound

KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}")
TEMP_PREFIX = ".tmp-"
# writes go to disk in slices of about this size, each in a worker thread
FLUSH_BYTES = 1024 * 1024


def too_large(max_bytes: int) -> InvalidInput:
    """The error for an upload past the limit (OpenAI's message, then the limit)."""
    return InvalidInput(f"File is too large. Files may be at most {max_bytes} bytes.", param="file")


class LocalBlobStore:
    """One file per key under `root`; a write is renamed into place only once complete.

    Every write lands first in a `.tmp-*` file in the root (the same file system, so the
    rename is atomic), is fsynced, renamed over the key, and the directory is fsynced:
    a reader sees the whole object or none, even across a crash. File I/O runs in worker
    threads, a slice at a time, so the event loop never waits on the disk.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if not KEY.fullmatch(key):
            raise InvalidInput(f"blob key {key!r:.80} is not a plain name", param="key")
        return self.root / key

    async def write(self, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        target = self._path(key)
        file, temp = await asyncio.to_thread(self._open_temp)
        written = 0
        try:
            pending: list[bytes] = []
            pending_bytes = 0
            async for chunk in chunks:
                written += len(chunk)
                if written > max_bytes:
                    raise too_large(max_bytes)
                pending.append(chunk)
                pending_bytes += len(chunk)
                if pending_bytes >= FLUSH_BYTES:
                    await asyncio.to_thread(file.writelines, pending)
                    pending, pending_bytes = [], 0
            await asyncio.to_thread(_finish, file, pending, temp, target)
        except BaseException:
            # also on cancellation (a client that hung up): nothing may be left behind
            file.close()
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise
        return written

    def _open_temp(self) -> tuple[BinaryIO, Path]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.root)
        return os.fdopen(fd, "wb"), Path(name)

    async def read(self, key: str, chunk_size: int = DEFAULT_CHUNK_BYTES) -> AsyncIterator[bytes]:
        path = self._path(key)
        if not await asyncio.to_thread(path.is_file):
            raise NotFound(f"no blob {key!r}")
        return _chunks(path, chunk_size)

    async def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return False
        return True

    async def size(self, key: str) -> int:
        path = self._path(key)
        try:
            stat = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            raise NotFound(f"no blob {key!r}") from None
        return stat.st_size

    async def remove_abandoned(self, older_than_s: float) -> int:
        return await asyncio.to_thread(self._remove_abandoned, time.time() - older_than_s)

    def _remove_abandoned(self, cutoff: float) -> int:
        removed = 0
        try:
            temporaries = list(self.root.glob(f"{TEMP_PREFIX}*"))
        except FileNotFoundError:
            return 0
        for temp in temporaries:
            with contextlib.suppress(FileNotFoundError):  # another server removed it first
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()
                    removed += 1
        return removed


def _finish(file: BinaryIO, pending: list[bytes], temp: Path, target: Path) -> None:
    """Write the rest, make it durable, and rename it into place (in a worker thread)."""
    with file:
        file.writelines(pending)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, target)
    _fsync_directory(target.parent)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _chunks(path: Path, chunk_size: int) -> AsyncIterator[bytes]:
    try:
        file = await asyncio.to_thread(path.open, "rb")
    except FileNotFoundError:  # deleted between the check and the first read
        raise NotFound(f"no blob {path.name!r}") from None
    try:
        while chunk := await asyncio.to_thread(file.read, chunk_size):
            yield chunk
    finally:
        file.close()
