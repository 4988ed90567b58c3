"""The file use cases (OpenAI's Files API): contents in the blob store, objects in the engine.

A file is two things: its bytes, a blob named by the file id, and its object, a record of
kind `file` in the engine, owned by a project. An upload streams into the blob store first
and stores the record only once the bytes are safe, so a listed file always has its
contents; a delete removes the record first, so a file is never listed without them.
Files with an `expires_at` are flagged active, which is what `expire` works through.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import NamedTuple

import msgspec

from conveyor.blobs import BlobStore
from conveyor.domain.clock import Clock, system_clock
from conveyor.domain.files import (
    DEFAULT_MAX_FILE_BYTES,
    FILE_ID_PREFIX,
    OUTPUT_PURPOSE,
    ExpiresAfter,
    FileObject,
    check_expires_after,
    check_filename,
    check_purpose,
    check_upload,
    is_expired,
    new_file,
    new_file_id,
)
from conveyor.engines.engine import Engine, Record
from conveyor.errors import Conflict, InvalidInput, NotFound

log = logging.getLogger(__name__)

KIND = "file"
MAX_LIST_LIMIT = 10_000
EXPIRE_PAGE = 1_000

_decode = msgspec.json.Decoder(FileObject).decode
_encode = msgspec.json.Encoder().encode


class FilePage(NamedTuple):
    """One page of a file listing, and whether more follow it."""

    data: list[FileObject]
    has_more: bool


class FileService:
    """One project's files over an engine and a blob store."""

    def __init__(
        self,
        engine: Engine,
        blobs: BlobStore,
        project: str = "",
        max_bytes: int = DEFAULT_MAX_FILE_BYTES,
        *,
        clock: Clock = system_clock,
    ) -> None:
        self._engine = engine
        self._blobs = blobs
        self._project = project
        self._max_bytes = max_bytes
        self._clock = clock

    @property
    def max_bytes(self) -> int:
        """The largest file this service stores."""
        return self._max_bytes

    async def create(
        self,
        filename: str,
        purpose: str,
        chunks: AsyncIterator[bytes],
        expires_after: ExpiresAfter | None = None,
    ) -> FileObject:
        """Store an upload. Raises InvalidInput (name, purpose, expiry, too large)."""
        check_upload(filename, purpose)
        if expires_after is not None:
            check_expires_after(expires_after)
        return await self._store(filename, purpose, chunks, expires_after)

    async def create_output(
        self,
        filename: str,
        chunks: AsyncIterator[bytes],
        purpose: str = OUTPUT_PURPOSE,
        expires_after: ExpiresAfter | None = None,
    ) -> FileObject:
        """Store a file the server wrote itself (a batch's output or errors)."""
        check_purpose(purpose, upload=False)
        check_filename(filename)
        if expires_after is not None:
            check_expires_after(expires_after)
        return await self._store(filename, purpose, chunks, expires_after)

    async def replace_output(
        self,
        file_id: str,
        filename: str,
        chunks: AsyncIterator[bytes],
        expires_after_s: int | None = None,
        purpose: str = OUTPUT_PURPOSE,
    ) -> FileObject:
        """Store a server-written file under a chosen id, replacing what was stored there.

        A step that writes a file and is run again (a batch's finalization resumed after a
        crash) so leaves one complete file, never two or a torn one.
        """
        check_purpose(purpose, upload=False)
        check_filename(filename)
        policy = None if expires_after_s is None else ExpiresAfter("created_at", expires_after_s)
        if policy is not None:
            check_expires_after(policy)
        if not file_id.startswith(FILE_ID_PREFIX):
            raise InvalidInput(f"a file id starts with {FILE_ID_PREFIX!r}, got {file_id!r:.80}")
        file, record = await self._write(file_id, filename, purpose, chunks, policy)
        while True:
            current = await self._engine.get_record(KIND, file_id)
            try:
                if current is None:
                    await self._engine.put_record(record)
                else:
                    await self._engine.replace_record(record, current.version)
                return file
            except (Conflict, NotFound):
                continue  # another writer moved it meanwhile: replace what it left

    async def _store(
        self,
        filename: str,
        purpose: str,
        chunks: AsyncIterator[bytes],
        policy: ExpiresAfter | None,
    ) -> FileObject:
        file_id = new_file_id()
        file, record = await self._write(file_id, filename, purpose, chunks, policy)
        try:
            await self._engine.put_record(record)
        except Exception:
            # the record was not stored, so nothing refers to the blob. (A cancelled put
            # may still commit, so then the blob stays: an orphan, never a dangling record.)
            await self._blobs.delete(file_id)
            raise
        return file

    async def _write(
        self,
        file_id: str,
        filename: str,
        purpose: str,
        chunks: AsyncIterator[bytes],
        policy: ExpiresAfter | None,
    ) -> tuple[FileObject, Record]:
        """Stream the contents into the blob store; the file and the record to store."""
        now = self._clock()
        size = await self._blobs.write(file_id, chunks, self._max_bytes)
        file = new_file(
            file_id,
            size=size,
            created_at=int(now),
            filename=filename,
            purpose=purpose,
            policy=policy,
        )
        record = Record(
            KIND, file_id, self._project, now, _encode(file), file.expires_at is not None
        )
        return file, record

    async def get(self, file_id: str) -> FileObject:
        """The project's file. Raises NotFound."""
        record = await self._engine.get_record(KIND, file_id)
        if record is None or record.project != self._project:
            raise _no_such_file(file_id)
        return _decode(record.body)

    async def list(
        self,
        after: str | None = None,
        limit: int = MAX_LIST_LIMIT,
        order: str = "desc",
        purpose: str | None = None,
    ) -> FilePage:
        """Up to `limit` of the project's files by creation time, from after the id `after`."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidInput(f"limit must be 1-{MAX_LIST_LIMIT}, got {limit}", param="limit")
        if order not in ("asc", "desc"):
            raise InvalidInput(f"order must be asc or desc, got {order!r:.80}", param="order")
        if purpose is not None:
            check_purpose(purpose, upload=False)
        found: list[FileObject] = []
        cursor = after
        page_size = limit + 1  # one more than asked says whether more follow
        while len(found) <= limit:
            records = await self._engine.list_records(
                KIND, self._project, after=cursor, limit=page_size, newest_first=order == "desc"
            )
            files = (_decode(record.body) for record in records)
            found.extend(f for f in files if purpose is None or f.purpose == purpose)
            if len(records) < page_size:
                break
            cursor = records[-1].id
        return FilePage(found[:limit], has_more=len(found) > limit)

    async def open(self, file_id: str) -> tuple[FileObject, AsyncIterator[bytes]]:
        """The project's file and its contents, streamed. Raises NotFound."""
        file = await self.get(file_id)
        try:
            chunks = await self._blobs.read(file_id)
        except NotFound:
            log.error("file %s is listed but its contents are missing from the blob store", file_id)
            raise NotFound(f"the contents of {file_id} are missing", param="id") from None
        return file, chunks

    async def content(self, file_id: str) -> AsyncIterator[bytes]:
        """The contents of the project's file, streamed. Raises NotFound."""
        _, chunks = await self.open(file_id)
        return chunks

    async def delete(self, file_id: str) -> FileObject:
        """Delete the project's file, object first, then contents. Raises NotFound."""
        file = await self.get(file_id)
        if not await self._engine.delete_record(KIND, file_id):
            raise _no_such_file(file_id)  # deleted meanwhile
        await self._blobs.delete(file_id)
        return file

    async def expire(self, now: float | None = None) -> int:
        """Delete every file, of any project, whose `expires_at` has come; how many."""
        now = self._clock() if now is None else now
        expired = 0
        after: str | None = None
        while True:
            records = await self._engine.list_active(KIND, EXPIRE_PAGE, after=after)
            for record in records:
                if is_expired(_decode(record.body), now) and await self._engine.delete_record(
                    KIND, record.id
                ):
                    await self._blobs.delete(record.id)
                    expired += 1
            if len(records) < EXPIRE_PAGE:
                return expired
            after = records[-1].id


def _no_such_file(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id:.100}", param="id")
