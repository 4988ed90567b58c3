"""`client.batches`: OpenAI's Batch API on `Client` (`Batches`) and `AsyncClient`.

Both are thin: each method sends calls from `conveyor.sdk._batch_calls`, where paging and
the wait's decisions live; only the sleeping differs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping

from conveyor.sdk import _batch_calls as calls
from conveyor.sdk._batch_calls import ProgressCallback
from conveyor.sdk._files import AsyncTransport, Transport
from conveyor.sdk._models import BatchInfo


class Batches:
    """Create, inspect, list, cancel and wait for batches (`client.batches`)."""

    def __init__(self, client: Transport) -> None:
        self._client = client

    def create(
        self,
        input_file_id: str,
        endpoint: str,
        completion_window: str = calls.DEFAULT_WINDOW,
        metadata: Mapping[str, str] | None = None,
        queue: str | None = None,
        *,
        output_expires_after_s: int | None = None,
    ) -> BatchInfo:
        """Start a batch over an uploaded JSONL file; its tasks go to `queue` if given."""
        call = calls.create_batch(
            input_file_id,
            endpoint,
            completion_window=completion_window,
            metadata=metadata,
            queue=queue,
            output_expires_after_s=output_expires_after_s,
        )
        return self._client.send(call)

    def get(self, batch_id: str) -> BatchInfo:
        """One batch, with its live request counts."""
        return self._client.send(calls.get_batch(batch_id))

    def list(self, *, after: str | None = None, limit: int | None = None) -> Iterator[BatchInfo]:
        """Every batch (or the first `limit`), newest first; pages as needed."""
        pages = calls.batch_pages(after=after, limit=limit)
        while pages.next is not None:
            yield from pages.read(self._client.send(pages.next))

    def cancel(self, batch_id: str) -> BatchInfo:
        """Cancel a batch: it is `cancelling` until its running requests end."""
        return self._client.send(calls.cancel_batch(batch_id))

    def wait(
        self,
        batch_id: str,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> BatchInfo:
        """Poll a batch every `poll_s` until it ends and return it; `on_progress` sees each poll.

        Raises WaitTimeout after `timeout_s` (the batch runs on).
        """
        waiting = calls.Waiting(
            batch_id, poll_s=poll_s, timeout_s=timeout_s, on_progress=on_progress
        )
        while True:
            batch = self._client.send(waiting.call)
            pause_s = waiting.pause_s(batch)
            if pause_s is None:
                return batch
            time.sleep(pause_s)


class AsyncBatches:
    """Create, inspect, list, cancel and wait for batches (`async_client.batches`)."""

    def __init__(self, client: AsyncTransport) -> None:
        self._client = client

    async def create(
        self,
        input_file_id: str,
        endpoint: str,
        completion_window: str = calls.DEFAULT_WINDOW,
        metadata: Mapping[str, str] | None = None,
        queue: str | None = None,
        *,
        output_expires_after_s: int | None = None,
    ) -> BatchInfo:
        """Start a batch over an uploaded JSONL file; its tasks go to `queue` if given."""
        call = calls.create_batch(
            input_file_id,
            endpoint,
            completion_window=completion_window,
            metadata=metadata,
            queue=queue,
            output_expires_after_s=output_expires_after_s,
        )
        return await self._client.send(call)

    async def get(self, batch_id: str) -> BatchInfo:
        """One batch, with its live request counts."""
        return await self._client.send(calls.get_batch(batch_id))

    async def list(
        self, *, after: str | None = None, limit: int | None = None
    ) -> AsyncIterator[BatchInfo]:
        """Every batch (or the first `limit`), newest first; pages as needed."""
        pages = calls.batch_pages(after=after, limit=limit)
        while pages.next is not None:
            for item in pages.read(await self._client.send(pages.next)):
                yield item

    async def cancel(self, batch_id: str) -> BatchInfo:
        """Cancel a batch: it is `cancelling` until its running requests end."""
        return await self._client.send(calls.cancel_batch(batch_id))

    async def wait(
        self,
        batch_id: str,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> BatchInfo:
        """Poll a batch every `poll_s` until it ends and return it; `on_progress` sees each poll.

        `on_progress` is a plain function, called in the event loop. Raises WaitTimeout
        after `timeout_s` (the batch runs on).
        """
        waiting = calls.Waiting(
            batch_id, poll_s=poll_s, timeout_s=timeout_s, on_progress=on_progress
        )
        while True:
            batch = await self._client.send(waiting.call)
            pause_s = waiting.pause_s(batch)
            if pause_s is None:
                return batch
            await asyncio.sleep(pause_s)
