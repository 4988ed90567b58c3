"""Batches over every engine: a batch's whole life, driven step by step on a manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conveyor.blobs import LocalBlobStore
from conveyor.domain.batch_specs import validate_create
from conveyor.domain.batches import Batch, BatchStatus
from conveyor.domain.clock import ManualClock
from conveyor.domain.queues import QueueConfig
from conveyor.domain.tasks import TaskResult
from conveyor.engines.engine import Engine
from conveyor.errors import InvalidTransition, NotFound
from conveyor.service.batches import KIND, BatchService, task_id_for
from conveyor.service.files import FileService
from conveyor.service.tasks import TaskService
from tests.conftest import EngineFactory

ENDPOINT = "/v1/chat/completions"


def line(custom_id: str, content: str = "hi", **extra: Any) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": content}], **extra}
    request = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
    return msgspec.json.encode(request) + b"\n"


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 7_000):  # lines cross chunk boundaries
        yield data[start : start + 7_000]


class Setup:
    def __init__(self, engine: Engine, tmp_path: Path, clock: ManualClock) -> None:
        self.engine = engine
        self.clock = clock
        self.files = FileService(engine, LocalBlobStore(tmp_path / "blobs"), clock=clock)
        self.tasks = TaskService(engine, clock=clock)
        self.batches = BatchService(engine, self.files, self.tasks, clock=clock)

    async def upload(self, lines: Sequence[bytes]) -> str:
        file = await self.files.create("input.jsonl", "batch", chunks(b"".join(lines)))
        return file.id

    async def create(self, lines: Sequence[bytes], window: str = "24h") -> Batch:
        file_id = await self.upload(lines)
        spec = validate_create(input_file_id=file_id, endpoint=ENDPOINT, completion_window=window)
        return await self.batches.create(spec)

    async def step(self, batch_id: str) -> Batch:
        record = await self.engine.get_record(KIND, batch_id)
        assert record is not None
        await self.batches.advance(record)
        return await self.batches.get(batch_id)

    async def run(self, status_code: int = 200, limit: int | None = None) -> int:
        """Take and complete queued batch tasks as a model server would answer them."""
        done = 0
        while limit is None or done < limit:
            size = 50 if limit is None else min(50, limit - done)
            taken = await self.tasks.take(["batch"], size=size)
            if not taken:
                return done
            for task in taken:
                assert task.lease_id is not None
                data = msgspec.json.decode(msgspec.json.encode(task.data))
                body = {
                    "echo": data["messages"][0]["content"],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                }
                result = TaskResult(status_code=status_code, body=body)
                await self.tasks.complete(task.task_id, task.lease_id, result)
                done += 1
        return done

    async def content(self, file_id: str | None) -> list[dict[str, Any]]:
        assert file_id is not None
        data = b"".join([chunk async for chunk in await self.files.content(file_id)])
        return [msgspec.json.decode(text) for text in data.splitlines()]


@pytest.fixture
async def setup(make_engine: EngineFactory, tmp_path: Path) -> Setup:
    clock = ManualClock(1_800_000_000.0)
    return Setup(await make_engine(clock), tmp_path, clock)


async def test_a_batch_runs_from_validating_to_completed(setup: Setup) -> None:
    batch = await setup.create([line(f"req-{n}", f"q{n}") for n in range(25)])
    assert batch.status is BatchStatus.VALIDATING
    batch = await setup.step(batch.id)
    assert batch.status is BatchStatus.IN_PROGRESS
    assert batch.request_counts.total == 25
    assert batch.model == "m"
    await setup.run(limit=10)
    batch = await setup.batches.get(batch.id)
    assert (batch.request_counts.completed, batch.request_counts.failed) == (10, 0)
    await setup.run()
    batch = await setup.step(batch.id)  # finalizes: files written, completed
    assert batch.status is BatchStatus.COMPLETED
    assert batch.request_counts.completed == 25
    assert batch.finalizing_at is not None
    assert batch.completed_at is not None
    assert batch.error_file_id is None  # no line failed
    lines = await setup.content(batch.output_file_id)
    assert [entry["custom_id"] for entry in lines] == [f"req-{n}" for n in range(25)]
    assert lines[3]["response"]["status_code"] == 200
    assert lines[3]["response"]["body"]["echo"] == "q3"
    assert lines[3]["error"] is None
    assert batch.usage is not None
    assert batch.usage.total_tokens == 25 * 5
    record = await setup.engine.get_record(KIND, batch.id)
    assert record is not None
    assert not record.active


async def test_non_2xx_responses_go_to_the_error_file(setup: Setup) -> None:
    batch = await setup.step((await setup.create([line("a"), line("b")])).id)
    await setup.run(status_code=400)
    batch = await setup.step(batch.id)
    assert batch.status is BatchStatus.COMPLETED
    assert batch.output_file_id is None  # a side with no lines has no file
    assert (batch.request_counts.completed, batch.request_counts.failed) == (0, 2)
    errors = await setup.content(batch.error_file_id)
    assert [entry["response"]["status_code"] for entry in errors] == [400, 400]


async def test_a_bad_file_fails_validation_and_creates_no_task(setup: Setup) -> None:
    lines = [line("a"), b"not json\n", line("a"), line("c", stream=True)]
    batch = await setup.step((await setup.create(lines)).id)
    assert batch.status is BatchStatus.FAILED
    assert batch.errors is not None
    found = [(error.line, error.code) for error in batch.errors.data]
    assert found == [
        (2, "invalid_json_line"),
        (3, "duplicate_custom_id"),
        (4, "streaming_unsupported"),
    ]
    assert await setup.tasks.take(["batch"], size=10) == []


async def test_cancel_stops_queued_tasks_and_keeps_results(setup: Setup) -> None:
    batch = await setup.step((await setup.create([line(f"r{n}") for n in range(6)])).id)
    await setup.run(limit=2)
    cancelling = await setup.batches.cancel(batch.id)
    assert cancelling.status is BatchStatus.CANCELLING
    assert (await setup.batches.cancel(batch.id)).status is BatchStatus.CANCELLING  # again: fine
    batch = await setup.step(batch.id)
    assert batch.status is BatchStatus.CANCELLED
    assert batch.cancelling_at is not None
    assert batch.cancelled_at is not None
    output = await setup.content(batch.output_file_id)
    assert [entry["custom_id"] for entry in output] == ["r0", "r1"]
    errors = await setup.content(batch.error_file_id)
    assert [entry["error"]["code"] for entry in errors] == ["batch_cancelled"] * 4
    assert await setup.tasks.take(["batch"], size=10) == []
    failed = await setup.step((await setup.create([b"{not json\n"])).id)
    with pytest.raises(InvalidTransition, match="Cannot cancel a batch with status 'failed'"):
        await setup.batches.cancel(failed.id)


async def test_cancel_waits_for_running_tasks_then_finishes(setup: Setup) -> None:
    batch = await setup.step((await setup.create([line("a"), line("b")])).id)
    (running,) = await setup.tasks.take(["batch"], size=1)
    await setup.batches.cancel(batch.id)
    batch = await setup.step(batch.id)
    assert batch.status is BatchStatus.CANCELLING  # one still runs: it is asked to stop
    assert running.lease_id is not None
    await setup.tasks.complete(running.task_id, running.lease_id, TaskResult(body={"ok": 1}))
    batch = await setup.step(batch.id)
    assert batch.status is BatchStatus.CANCELLED
    assert [e["custom_id"] for e in await setup.content(batch.output_file_id)] == ["a"]


async def test_a_batch_expires_at_the_end_of_its_window(setup: Setup) -> None:
    batch = await setup.step((await setup.create([line(f"r{n}") for n in range(4)], "1h")).id)
    await setup.run(limit=1)
    setup.clock.advance(3_601)
    batch = await setup.step(batch.id)
    assert batch.status is BatchStatus.EXPIRED
    assert batch.expired_at is not None
    errors = await setup.content(batch.error_file_id)
    assert [entry["error"]["code"] for entry in errors] == ["batch_expired"] * 3
    assert len(await setup.content(batch.output_file_id)) == 1


async def test_steps_repeated_after_a_crash_lose_and_double_nothing(setup: Setup) -> None:
    batch = await setup.create([line(f"r{n}") for n in range(2_500)])
    record = await setup.engine.get_record(KIND, batch.id)
    assert record is not None
    # a server died after creating the first tasks but before noting it anywhere
    await setup.batches.advance(record)  # validating -> in_progress, all tasks created
    await setup.batches.advance(record)  # the same step again, from the stale record
    batch = await setup.batches.get(batch.id)
    assert batch.status is BatchStatus.IN_PROGRESS
    counts = await setup.engine.batch_counts(batch.id)
    assert counts.total == 2_500
    await setup.run()
    batch = await setup.step(batch.id)
    finalizing = await setup.engine.get_record(KIND, batch.id)
    assert finalizing is not None
    lines = await setup.content(batch.output_file_id)
    assert len(lines) == 2_500
    assert len({entry["custom_id"] for entry in lines}) == 2_500


async def test_batches_are_listed_newest_first_and_belong_to_their_project(
    setup: Setup,
) -> None:
    made = [await setup.create([line("a")]) for _ in range(3)]
    page = await setup.batches.list(limit=2)
    assert [b.id for b in page.data] == [made[2].id, made[1].id]
    assert page.has_more
    rest = await setup.batches.list(after=page.data[-1].id, limit=2)
    assert [b.id for b in rest.data] == [made[0].id]
    assert not rest.has_more
    other = BatchService(setup.engine, setup.files, setup.tasks, project="other", clock=setup.clock)
    with pytest.raises(NotFound):
        await other.get(made[0].id)
    assert (await other.list()).data == []


def test_task_ids_sort_in_input_order() -> None:
    ids = [task_id_for("batch_X", n) for n in (0, 9, 10, 99_999_999)]
    assert ids == sorted(ids)


async def test_a_batch_whose_input_file_is_deleted_fails(setup: Setup) -> None:
    batch = await setup.create([line("a")])
    await setup.files.delete(batch.input_file_id)
    failed = await setup.step(batch.id)
    assert failed.status is BatchStatus.FAILED
    assert failed.errors is not None
    assert [error.code for error in failed.errors.data] == ["invalid_input_file"]


async def test_retention_keeps_a_running_batchs_results_until_its_files_are_written(
    setup: Setup,
) -> None:
    await setup.tasks.register_queue(QueueConfig(name="batch", retention_s=60))
    batch = await setup.step((await setup.create([line("a"), line("b")])).id)
    await setup.run(limit=1)
    setup.clock.advance(3_600)  # the first result is past the queue's retention
    assert (await setup.engine.sweep()).purged == 0  # but its batch still runs
    await setup.run()
    batch = await setup.step(batch.id)
    assert batch.status is BatchStatus.COMPLETED
    assert [e["custom_id"] for e in await setup.content(batch.output_file_id)] == ["a", "b"]
    setup.clock.advance(3_600)
    assert (await setup.engine.sweep()).purged == 2  # the batch ended: its tasks may go
