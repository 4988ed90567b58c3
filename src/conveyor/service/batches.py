"""Batches: one project's OpenAI-compatible batches over the engine, its files and its tasks.

A batch is a record in the engine (kind "batch", flagged active until it ends) and a task
per input line. `BatchService.advance` moves one batch one step on and is safe to repeat,
so a server killed anywhere resumes where the record says and no line is lost or doubled:
  - validating: the input file is checked, streaming; then a task is created per line, in
    chunks, each with an id made of the batch id and the request's index, so re-creating a
    chunk after a crash finds the same tasks (an identical put is a no-op);
  - in_progress: request counts come from the engine's count of the batch's tasks; when
    none is left unfinished the batch finalizes; at `expires_at` the unfinished tasks are
    cancelled and the batch expires;
  - cancelling: the batch's queued tasks are cancelled, running ones asked to stop; once
    none runs (or after a grace period) the files are written and the batch is cancelled;
  - finalizing: the output and error files are written by streaming the batch's tasks in
    input order, then the batch completes.
Files written at the end have ids made from the batch id, so writing them again replaces
them. Every transition is a compare-and-set on the record's version: with many servers
running maintenance, one wins each step and the others read the new state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import NamedTuple

import msgspec

from conveyor.domain import batches as domain
from conveyor.domain.batch_lines import (
    DEFAULT_MAX_REQUESTS,
    LineReport,
    LineValidator,
    Outcome,
    read_request,
    result_line,
)
from conveyor.domain.batch_specs import BatchSpec
from conveyor.domain.batches import Batch, BatchError, BatchStatus, RequestCounts, Usage
from conveyor.domain.clock import Clock, system_clock
from conveyor.domain.tasks import TaskSpec
from conveyor.engines.engine import BatchCounts, Engine, Record
from conveyor.errors import Conflict, InvalidInput, NotFound
from conveyor.service.files import FileService
from conveyor.service.tasks import TaskService

log = logging.getLogger(__name__)

KIND = "batch"
CREATE_CHUNK = 1_000  # tasks per bulk put while creating a batch's tasks
YIELD_EVERY = 2_000  # lines read between yields to the event loop
MAX_LIST = 100
STOP_GRACE_S = 60.0  # how long a cancelled or expired batch waits for running tasks
CAS_ATTEMPTS = 20

_decode = msgspec.json.Decoder(Batch).decode
_encode = msgspec.json.Encoder().encode

LIVE = (BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING, BatchStatus.FINALIZING)


class BatchPage(NamedTuple):
    """One page of a batch listing, and whether more follow it."""

    data: list[Batch]
    has_more: bool


def task_id_for(batch_id: str, index: int) -> str:
    """The id of the task for request `index` (0-based) of a batch: stable across retries."""
    return f"{batch_id}:{index:08d}"


def output_file_id(batch_id: str, errors: bool) -> str:
    """The id of a batch's output (or error) file: stable, so a rewrite replaces it."""
    return f"file-{batch_id.removeprefix('batch_')}-{'errors' if errors else 'output'}"


class BatchService:
    """One project's batches: create, get, list, cancel; `advance` moves one batch on."""

    def __init__(
        self,
        engine: Engine,
        files: FileService,
        tasks: TaskService,
        *,
        project: str = "",
        max_requests: int = DEFAULT_MAX_REQUESTS,
        clock: Clock = system_clock,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._engine = engine
        self._files = files
        self._tasks = tasks
        self._project = project
        self._max_requests = max_requests
        self._clock = clock
        self._wake = wake

    # ---- what clients call ----

    async def create(self, spec: BatchSpec) -> Batch:
        """Store a new batch (validating) for an input file of the project's.

        Raises NotFound for an unknown file, InvalidInput for one not uploaded for batches.
        """
        try:
            file = await self._files.get(spec.input_file_id)
        except NotFound:
            raise NotFound(
                f"No such File object: {spec.input_file_id:.100}", param="input_file_id"
            ) from None
        if file.purpose != "batch":
            raise InvalidInput(
                f"The input file {file.id} was uploaded with purpose '{file.purpose}';"
                " a batch needs a file uploaded with purpose 'batch'.",
                param="input_file_id",
            )
        now = self._clock()
        batch = domain.new_batch(spec, project=self._project, now=now)
        await self._engine.put_record(
            Record(KIND, batch.id, self._project, now, _encode(batch), active=True)
        )
        self._wake()
        return batch

    async def get(self, batch_id: str) -> Batch:
        """The project's batch with its counts as of now. Raises NotFound."""
        record = await self._record(batch_id)
        return await self._live(_decode(record.body))

    async def list(self, after: str | None = None, limit: int = 20) -> BatchPage:
        """The project's batches, newest first, after the batch id `after`."""
        if not 1 <= limit <= MAX_LIST:
            raise InvalidInput(f"limit must be from 1 to {MAX_LIST}, got {limit}", param="limit")
        records = await self._engine.list_records(
            KIND, self._project, after=after, limit=limit + 1, newest_first=True
        )
        batches = [await self._live(_decode(record.body)) for record in records[:limit]]
        return BatchPage(batches, has_more=len(records) > limit)

    async def cancel(self, batch_id: str) -> Batch:
        """Ask the batch to stop: cancelling at once, cancelled once no task runs.

        Raises NotFound, InvalidTransition (a 409) for a batch that already ended otherwise.
        """
        for _ in range(CAS_ATTEMPTS):
            record = await self._record(batch_id)
            batch = _decode(record.body)
            cancelling = domain.request_cancel(batch, self._clock())
            if cancelling is batch:
                return await self._live(batch)
            try:
                await self._replace(record, cancelling)
            except Conflict:
                continue  # moved on meanwhile: decide again on what it is now
            self._wake()
            return await self._live(cancelling)
        raise Conflict(f"batch {batch_id} kept changing; try again")

    # ---- what maintenance calls ----

    async def advance(self, record: Record) -> None:
        """Move the batch of `record` one step on (see the module docstring)."""
        batch = _decode(record.body)
        now = self._clock()
        if batch.status is BatchStatus.VALIDATING:
            await self._validate_and_create(record, batch)
        elif batch.status is BatchStatus.IN_PROGRESS:
            counts = await self._engine.batch_counts(batch.id)
            if batch.expires_at is not None and now >= batch.expires_at:
                await self._stop(record, batch, expired=True)
            elif counts.unfinished == 0 and counts.total >= batch.request_counts.total:
                finalizing = domain.begin_finalizing(self._counted(batch, counts), now)
                record = await self._replace(record, finalizing)
                await self._finalize(record, finalizing)
            else:
                await self._save_counts(record, batch, counts)
        elif batch.status is BatchStatus.CANCELLING:
            if batch.in_progress_at is None and batch.request_counts.total == 0:
                # cancelled while validating: create what is left, so every line gets a
                # line in the error file, unless the file itself is invalid
                record = await self._create_for_cancelled(record, batch)
                batch = _decode(record.body)
                if batch.status is not BatchStatus.CANCELLING:
                    return
            await self._stop(record, batch, expired=False)
        elif batch.status is BatchStatus.FINALIZING:
            await self._finalize(record, batch)
        else:  # ended: nothing more to do
            await self._replace(record, batch, active=False)

    async def _validate_and_create(self, record: Record, batch: Batch) -> None:
        try:
            report = await self._validate(batch)
        except NotFound as exc:  # the input file was deleted before it was read
            error = BatchError(
                code="invalid_input_file", message=exc.message, param="input_file_id"
            )
            await self._replace(
                record, domain.fail_validation(batch, [error], self._clock()), False
            )
            return
        now = self._clock()
        if not report.valid:
            await self._replace(record, domain.fail_validation(batch, report.errors, now), False)
            return
        record = await self._create_tasks(record, batch, report.total)
        batch = _decode(record.body)
        if batch.status is BatchStatus.VALIDATING:
            await self._replace(record, domain.start(batch, report.total, report.model, now))
            self._wake()

    async def _create_for_cancelled(self, record: Record, batch: Batch) -> Record:
        report = await self._validate(batch)
        if not report.valid:
            ended = domain.finish_cancel(batch, None, None, None, self._clock())
            return await self._replace(record, ended, active=False)
        record = await self._create_tasks(record, batch, report.total)
        batch = _decode(record.body)
        counts = RequestCounts(total=report.total)
        return await self._replace(
            record, msgspec.structs.replace(batch, model=report.model, request_counts=counts)
        )

    async def _validate(self, batch: Batch) -> LineReport:
        validator = LineValidator(batch.endpoint, self._max_requests)
        async for number, line in self._lines(batch.input_file_id):
            validator.feed(line, number)
        return validator.finish()

    async def _create_tasks(self, record: Record, batch: Batch, total: int) -> Record:
        """Put a task per request, in chunks, from where an earlier run stopped."""
        specs: list[TaskSpec] = []
        index = 0
        async for number, line in self._lines(batch.input_file_id):
            request = read_request(line, number, batch.endpoint)
            if request is None:
                continue
            if index >= batch.tasks_created:
                specs.append(
                    TaskSpec(
                        queue=batch.queue,
                        level=batch.level,
                        endpoint=request.endpoint,
                        data=request.body,
                        task_id=task_id_for(batch.id, index),
                        custom_id=request.custom_id,
                        batch_id=batch.id,
                    )
                )
            index += 1
            if len(specs) == CREATE_CHUNK:
                await self._tasks.put_many(specs)
                specs = []
                record = await self._mark_created(record, index)
                if _decode(record.body).status not in (
                    BatchStatus.VALIDATING,
                    BatchStatus.CANCELLING,
                ):
                    return record
        if specs:
            await self._tasks.put_many(specs)
        return await self._mark_created(record, total)

    async def _mark_created(self, record: Record, created: int) -> Record:
        """Note how many tasks exist (a restart skips them); a cancel may have come meanwhile."""
        for _ in range(CAS_ATTEMPTS):
            batch = _decode(record.body)
            try:
                return await self._replace(
                    record, domain.record_progress(batch, tasks_created=created)
                )
            except Conflict:
                record = await self._record(batch.id)
        raise Conflict(f"batch {record.id} kept changing while its tasks were created")

    async def _stop(self, record: Record, batch: Batch, *, expired: bool) -> None:
        """Cancel what has not run; once nothing runs, write the files and end the batch."""
        while await self._engine.cancel_batch(batch.id) > 0:
            pass
        counts = await self._engine.batch_counts(batch.id)
        stopped_at = batch.expires_at if expired else batch.cancelling_at
        waited_s = self._clock() - (stopped_at or self._clock())
        if counts.unfinished > 0 and waited_s < STOP_GRACE_S:
            await self._save_counts(record, batch, counts)
            return  # running tasks stop at their next heartbeat; look again later
        await self._finalize(record, self._counted(batch, counts), expired=expired)

    async def _finalize(self, record: Record, batch: Batch, *, expired: bool = False) -> None:
        """Write the output and error files from the stored results, then end the batch."""
        output, usage = await self._write_file(batch, errors=False, expired=expired)
        errors, _ = await self._write_file(batch, errors=True, expired=expired)
        counts = await self._engine.batch_counts(batch.id)
        batch = self._counted(batch, counts)
        now = self._clock()
        if batch.status is BatchStatus.CANCELLING:
            ended = domain.finish_cancel(batch, output, errors, usage, now)
        elif expired:
            ended = domain.expire(batch, output, errors, usage, now)
        else:
            ended = domain.complete(batch, output, errors, usage, now)
        try:
            await self._replace(record, ended, active=False)
        except Conflict:
            log.info("batch %s changed while its files were written; trying again", batch.id)

    async def _write_file(
        self, batch: Batch, *, errors: bool, expired: bool
    ) -> tuple[str | None, Usage | None]:
        """Stream the lines of one side into its file; its id (None if empty) and usage."""
        file_id = output_file_id(batch.id, errors)
        usage: Usage | None = None
        written = 0

        async def lines() -> AsyncIterator[bytes]:
            nonlocal usage, written
            after: str | None = None
            chunk: list[bytes] = []
            while True:
                page = await self._engine.batch_tasks(batch.id, after=after, limit=1_000)
                for task in page.tasks:
                    result, error = task.result, task.error
                    line = result_line(
                        task_id=task.task_id,
                        custom_id=task.custom_id,
                        status=task.status,
                        status_code=None if result is None else result.status_code,
                        body=None if result is None else result.body,
                        error_code=None if error is None else error.code,
                        error_message=None if error is None else error.message,
                        batch_expired=expired,
                    )
                    if line.to_output == errors:
                        continue
                    if line.outcome is Outcome.COMPLETED and result is not None:
                        usage = domain.add_usage(usage, result.body)
                    chunk.append(line.line)
                    written += 1
                if chunk:
                    yield b"".join(chunk)
                    chunk = []
                if page.next_cursor is None:
                    return
                after = page.next_cursor

        name = f"{batch.id}_{'error' if errors else 'output'}.jsonl"
        await self._files.replace_output(file_id, name, lines(), batch.output_expires_after_s)
        if written == 0:
            await self._files.delete(file_id)
            return None, None
        return file_id, usage

    # ---- helpers ----

    async def _record(self, batch_id: str) -> Record:
        record = await self._engine.get_record(KIND, batch_id)
        if record is None or record.project != self._project:
            raise NotFound(f"No such Batch object: {batch_id:.100}", param="batch_id")
        return record

    async def _replace(self, record: Record, batch: Batch, active: bool = True) -> Record:
        new = msgspec.structs.replace(record, body=_encode(batch), active=active)
        return await self._engine.replace_record(new, record.version)

    async def _live(self, batch: Batch) -> Batch:
        if batch.status not in LIVE:
            return batch
        return self._counted(batch, await self._engine.batch_counts(batch.id))

    @staticmethod
    def _counted(batch: Batch, counts: BatchCounts) -> Batch:
        return domain.record_progress(batch, completed=counts.completed, failed=counts.failed)

    async def _save_counts(self, record: Record, batch: Batch, counts: BatchCounts) -> None:
        """Keep the stored counts near the live ones (listings of ended batches read them)."""
        counted = self._counted(batch, counts)
        if counted.request_counts != batch.request_counts:
            # a conflict means another step moved the batch on; its counts are as fresh
            with contextlib.suppress(Conflict):
                await self._replace(record, counted)

    async def _lines(self, file_id: str) -> AsyncIterator[tuple[int, bytes]]:
        """The file's lines with their 1-based numbers, streamed; yields to the loop now and then."""
        try:
            chunks = await self._files.content(file_id)
        except NotFound:
            raise NotFound(
                f"the input file {file_id} was deleted before the batch read it",
                param="input_file_id",
            ) from None
        number = 0
        rest = b""
        async for chunk in chunks:
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                number += 1
                yield number, line
                if number % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        if rest:
            yield number + 1, rest
