"""The blob store interface: whole objects written once by streaming, read by streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

DEFAULT_CHUNK_BYTES = 1024 * 1024


class BlobStore(Protocol):
    """Named byte objects, written whole and atomically; never held whole in memory."""

    async def write(self, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        """Store what `chunks` yields under `key` (replacing it), all or nothing; the size.

        Raises InvalidInput ("File is too large.") past `max_bytes`, leaving nothing behind,
        and InvalidInput for a key that is not a plain name.
        """
        ...

    async def read(self, key: str, chunk_size: int = DEFAULT_CHUNK_BYTES) -> AsyncIterator[bytes]:
        """The object's bytes in chunks, streamed. Raises NotFound (before the first chunk)."""
        ...

    async def delete(self, key: str) -> bool:
        """Delete the object; True if it existed."""
        ...

    async def size(self, key: str) -> int:
        """The object's size in bytes. Raises NotFound."""
        ...

    async def remove_abandoned(self, older_than_s: float) -> int:
        """Remove partial writes that a process killed mid-write left behind, untouched for
        `older_than_s` seconds (a write in progress touches its file at least every slice);
        how many were removed."""
        ...
