"""`client.files`: OpenAI's Files API on `Client` (`Files`) and `AsyncClient` (`AsyncFiles`).

Both are thin: each method sends one call from `conveyor.sdk._batch_calls`. Uploads are
read from disk as they are sent and downloads written to disk as they arrive.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

from conveyor.sdk import _batch_calls as calls
from conveyor.sdk._models import FileInfo
from conveyor.sdk._request import Call

T = TypeVar("T")

PathLike = str | os.PathLike[str]


class Transport(Protocol):
    """What `Files` and `Batches` need of `Client`."""

    def send(self, call: Call[T], /) -> T: ...

    def save(self, call: Call[None], path: PathLike, /) -> Path: ...


class AsyncTransport(Protocol):
    """What `AsyncFiles` and `AsyncBatches` need of `AsyncClient`."""

    async def send(self, call: Call[T], /) -> T: ...

    async def save(self, call: Call[None], path: PathLike, /) -> Path: ...


class Files:
    """Upload, list, read, download and delete files (`client.files`)."""

    def __init__(self, client: Transport) -> None:
        self._client = client

    def upload(
        self, path_or_bytes: PathLike | bytes, purpose: str = "batch", filename: str | None = None
    ) -> FileInfo:
        """Upload a file (streamed from disk) or bytes; `filename` defaults to the path's name."""
        return self._client.send(calls.upload_file(path_or_bytes, purpose, filename))

    def get(self, file_id: str) -> FileInfo:
        """One file's object."""
        return self._client.send(calls.get_file(file_id))

    def list(
        self, *, purpose: str | None = None, order: str = "desc", limit: int | None = None
    ) -> Iterator[FileInfo]:
        """Every file (or the first `limit`), newest first unless order="asc"; pages as needed."""
        pages = calls.file_pages(purpose=purpose, order=order, limit=limit)
        while pages.next is not None:
            yield from pages.read(self._client.send(pages.next))

    def download(self, file_id: str, path: PathLike) -> Path:
        """Write a file's contents to `path` as they arrive; the path written."""
        return self._client.save(calls.file_content(file_id), path)

    def delete(self, file_id: str) -> None:
        """Delete a file and its contents."""
        self._client.send(calls.delete_file(file_id))


class AsyncFiles:
    """Upload, list, read, download and delete files (`async_client.files`)."""

    def __init__(self, client: AsyncTransport) -> None:
        self._client = client

    async def upload(
        self, path_or_bytes: PathLike | bytes, purpose: str = "batch", filename: str | None = None
    ) -> FileInfo:
        """Upload a file (streamed from disk) or bytes; `filename` defaults to the path's name."""
        return await self._client.send(calls.upload_file(path_or_bytes, purpose, filename))

    async def get(self, file_id: str) -> FileInfo:
        """One file's object."""
        return await self._client.send(calls.get_file(file_id))

    async def list(
        self, *, purpose: str | None = None, order: str = "desc", limit: int | None = None
    ) -> AsyncIterator[FileInfo]:
        """Every file (or the first `limit`), newest first unless order="asc"; pages as needed."""
        pages = calls.file_pages(purpose=purpose, order=order, limit=limit)
        while pages.next is not None:
            for item in pages.read(await self._client.send(pages.next)):
                yield item

    async def download(self, file_id: str, path: PathLike) -> Path:
        """Write a file's contents to `path` as they arrive; the path written."""
        return await self._client.save(calls.file_content(file_id), path)

    async def delete(self, file_id: str) -> None:
        """Delete a file and its contents."""
        await self._client.send(calls.delete_file(file_id))
