"""The Files and Batch API calls both clients share, as OpenAI shapes them; no I/O.

As in `_calls` (tasks and queues), each function returns a `Call`. The two bits of logic
that span several calls live here too, so that `Client` and `AsyncClient` only send and
sleep: `Pages` walks a list page after page, and `Waiting` decides when to poll a batch
again and when to give up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar
from urllib.parse import quote

import msgspec

from conveyor.errors import InvalidInput, WaitTimeout
from conveyor.sdk._models import BatchInfo, FileInfo
from conveyor.sdk._request import Call, expect
from conveyor.sdk._uploads import upload_body

T = TypeVar("T")

DEFAULT_WINDOW = "24h"
QUEUE_HEADER = "X-Conveyor-Queue"
BATCH_PAGE = 100  # the most batches the server lists in one page
FILE_PAGE = 1_000
# a whole upload or download may take this long (aiohttp's timeout covers the whole
# request, and a 512 MB file on a slow link is minutes)
TRANSFER_TIMEOUT_S = 3_600.0

_encode = msgspec.json.Encoder().encode


class Page(msgspec.Struct, Generic[T], kw_only=True):
    """One page of an OpenAI list object."""

    data: list[T]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


def _id(value: str) -> str:
    return quote(value, safe="")


_file = expect(msgspec.json.Decoder(FileInfo).decode)
_files = expect(msgspec.json.Decoder(Page[FileInfo]).decode)
_batch = expect(msgspec.json.Decoder(BatchInfo).decode)
_batches = expect(msgspec.json.Decoder(Page[BatchInfo]).decode)
_no_body = expect(lambda content: None)


# ---- files ----


def upload_file(
    source: str | os.PathLike[str] | bytes, purpose: str = "batch", filename: str | None = None
) -> Call[FileInfo]:
    """Upload a file from a path (read as it is sent) or from bytes."""
    body = upload_body(source, purpose, filename)
    return Call("POST", "/v1/files", _file, body, timeout_s=TRANSFER_TIMEOUT_S)


def get_file(file_id: str) -> Call[FileInfo]:
    return Call("GET", f"/v1/files/{_id(file_id)}", _file)


def list_files(
    after: str | None, limit: int, *, purpose: str | None = None, order: str = "desc"
) -> Call[Page[FileInfo]]:
    params = {"limit": str(limit), "order": order}
    if after is not None:
        params["after"] = after
    if purpose is not None:
        params["purpose"] = purpose
    return Call("GET", "/v1/files", _files, params=params)


def file_content(file_id: str) -> Call[None]:
    """A file's contents: the client streams the answer's body to disk."""
    path = f"/v1/files/{_id(file_id)}/content"
    return Call("GET", path, _no_body, timeout_s=TRANSFER_TIMEOUT_S)


def delete_file(file_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/files/{_id(file_id)}", _no_body)


# ---- batches ----


def create_batch(
    input_file_id: str,
    endpoint: str,
    *,
    completion_window: str = DEFAULT_WINDOW,
    metadata: Mapping[str, str] | None = None,
    queue: str | None = None,
    output_expires_after_s: int | None = None,
) -> Call[BatchInfo]:
    fields: dict[str, object] = {
        "input_file_id": input_file_id,
        "endpoint": endpoint,
        "completion_window": completion_window,
    }
    if metadata is not None:
        fields["metadata"] = dict(metadata)
    if output_expires_after_s is not None:
        fields["output_expires_after"] = {"anchor": "created_at", "seconds": output_expires_after_s}
    headers = None if queue is None else {QUEUE_HEADER: queue}
    return Call("POST", "/v1/batches", _batch, _encode(fields), headers=headers)


def get_batch(batch_id: str) -> Call[BatchInfo]:
    return Call("GET", f"/v1/batches/{_id(batch_id)}", _batch)


def list_batches(after: str | None, limit: int) -> Call[Page[BatchInfo]]:
    params = {"limit": str(limit)}
    if after is not None:
        params["after"] = after
    return Call("GET", "/v1/batches", _batches, params=params)


def cancel_batch(batch_id: str) -> Call[BatchInfo]:
    return Call("POST", f"/v1/batches/{_id(batch_id)}/cancel", _batch)


# ---- walking a list, waiting for a batch ----


class Pages(Generic[T]):
    """Walks a list page after page: `next` is the call for the next page, None at the end.

    `limit` caps the items handed out in all (None: every item); `read` takes a page's
    answer and returns its items to hand out.
    """

    def __init__(
        self,
        page: Callable[[str | None, int], Call[Page[T]]],
        *,
        after: str | None = None,
        limit: int | None = None,
        page_size: int,
    ) -> None:
        if limit is not None and limit < 0:
            raise InvalidInput(f"limit must be 0 or more, got {limit}", param="limit")
        self._page = page
        self._left = limit
        self._page_size = page_size
        self.next: Call[Page[T]] | None = self._call(after)

    def _call(self, after: str | None) -> Call[Page[T]] | None:
        if self._left == 0:
            return None
        size = self._page_size if self._left is None else min(self._page_size, self._left)
        return self._page(after, size)

    def read(self, page: Page[T]) -> list[T]:
        """The items of `page` to hand out; `next` moves on to the page after it."""
        items = page.data if self._left is None else page.data[: self._left]
        if self._left is not None:
            self._left -= len(items)
        more = page.has_more and page.last_id is not None and bool(page.data)
        self.next = self._call(page.last_id) if more else None
        return items


def file_pages(
    *, purpose: str | None = None, order: str = "desc", limit: int | None = None
) -> Pages[FileInfo]:
    def page(after: str | None, size: int) -> Call[Page[FileInfo]]:
        return list_files(after, size, purpose=purpose, order=order)

    return Pages(page, limit=limit, page_size=FILE_PAGE)


def batch_pages(*, after: str | None = None, limit: int | None = None) -> Pages[BatchInfo]:
    return Pages(list_batches, after=after, limit=limit, page_size=BATCH_PAGE)


ProgressCallback = Callable[[BatchInfo], object]


class Waiting:
    """Polls a batch until it ends: `call` reads it, `pause_s` says what to do next."""

    def __init__(
        self,
        batch_id: str,
        *,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        on_progress: ProgressCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not poll_s > 0:
            raise InvalidInput(f"poll_s must be more than 0, got {poll_s}", param="poll_s")
        self.batch_id = batch_id
        self.call = get_batch(batch_id)
        self._poll_s = poll_s
        self._timeout_s = timeout_s
        self._on_progress = on_progress
        self._clock = clock
        self._deadline = None if timeout_s is None else clock() + timeout_s

    def pause_s(self, batch: BatchInfo) -> float | None:
        """Report `batch`; None if it has ended, else how long to wait before the next poll.

        Raises WaitTimeout once `timeout_s` has passed (the batch itself runs on).
        """
        if self._on_progress is not None:
            self._on_progress(batch)
        if batch.finished:
            return None
        if self._deadline is None:
            return self._poll_s
        left = self._deadline - self._clock()
        if left <= 0:
            raise WaitTimeout(
                f"batch {self.batch_id} is still {batch.status} after {self._timeout_s:g} s"
                " of waiting; it keeps running"
            )
        return min(self._poll_s, left)
