"""Files: the domain's rules, and the service over the memory engine and a local blob store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import msgspec
import pytest

from conveyor.blobs import LocalBlobStore
from conveyor.domain.clock import ManualClock
from conveyor.domain.files import (
    BATCH_EXPIRES_S,
    ExpiresAfter,
    FileObject,
    check_upload,
    expires_at,
    new_file_id,
)
from conveyor.engines.engine import Engine, Record
from conveyor.engines.memory import MemoryEngine
from conveyor.errors import EngineUnavailable, InvalidInput, NotFound
from conveyor.service.files import FileService
from conveyor.settings import Settings, from_environment, to_environment

# ---- domain ----


def test_file_ids_are_prefixed_and_time_ordered() -> None:
    ids = [new_file_id() for _ in range(1000)]
    assert all(i.startswith("file-") and len(i) == 37 for i in ids)
    assert ids == sorted(ids)


def test_the_file_object_has_openais_fields_in_order() -> None:
    file = FileObject(id="file-1", bytes=3, created_at=10, filename="a.jsonl", purpose="batch")
    assert list(msgspec.to_builtins(file)) == [
        "id",
        "object",
        "bytes",
        "created_at",
        "filename",
        "purpose",
        "status",
        "expires_at",
        "status_details",
    ]
    assert msgspec.to_builtins(file)["object"] == "file"
    assert file.status == "processed"
    assert file.expires_at is None
    assert file.status_details is None


@pytest.mark.parametrize(
    "purpose", ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
)
def test_upload_purposes(purpose: str) -> None:
    check_upload("data.jsonl", purpose)


@pytest.mark.parametrize("purpose", ["batch_output", "", "Batch", "other", "assistants_output"])
def test_other_purposes_are_refused(purpose: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_upload("data.jsonl", purpose)
    assert caught.value.param == "purpose"


@pytest.mark.parametrize("filename", ["data.json", "data.txt", "jsonl", "data.jsonl.gz"])
def test_batch_files_must_be_jsonl(filename: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_upload(filename, "batch")
    assert caught.value.message == "Invalid file format for Batch API. Must be .jsonl"
    assert caught.value.param == "file"
    check_upload(filename, "user_data")  # other purposes take any name


def test_filenames_must_be_given_and_not_huge() -> None:
    check_upload("D.JSONL", "batch")
    for filename in ("", "x" * 513):
        with pytest.raises(InvalidInput):
            check_upload(filename, "user_data")


def test_expiry_defaults_and_policy() -> None:
    assert expires_at(1000, "batch", None) == 1000 + BATCH_EXPIRES_S == 1000 + 30 * 86_400
    assert expires_at(1000, "user_data", None) is None
    assert expires_at(1000, "batch_output", None) is None
    assert expires_at(1000, "user_data", ExpiresAfter("created_at", 3600)) == 4600
    assert expires_at(1000, "batch", ExpiresAfter("created_at", 2_592_000)) == 2_593_000


@pytest.mark.parametrize(
    ("policy", "param"),
    [
        (ExpiresAfter("created_at", 3599), "expires_after.seconds"),
        (ExpiresAfter("created_at", 2_592_001), "expires_after.seconds"),
        (ExpiresAfter("created_at", -1), "expires_after.seconds"),
        (ExpiresAfter("last_active_at", 3600), "expires_after.anchor"),
    ],
)
def test_bad_expiry_policies(policy: ExpiresAfter, param: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        expires_at(0, "batch", policy)
    assert caught.value.param == param


# ---- service ----


async def feed(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000.25)


@pytest.fixture
async def engine() -> AsyncIterator[MemoryEngine]:
    engine = MemoryEngine()
    await engine.open()
    yield engine
    await engine.close()


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "files")


def make(
    engine: Engine,
    blobs: LocalBlobStore,
    clock: ManualClock,
    project: str = "",
    max_bytes: int = 1_000_000,
) -> FileService:
    return FileService(engine, blobs, project, max_bytes, clock=clock)


def stored(blobs: LocalBlobStore) -> list[str]:
    return sorted(p.name for p in blobs.root.iterdir()) if blobs.root.exists() else []


async def read(service: FileService, file_id: str) -> bytes:
    return b"".join([chunk async for chunk in await service.content(file_id)])


async def test_create_get_content_delete(
    engine: MemoryEngine, blobs: LocalBlobStore, clock: ManualClock
) -> None:
    files = make(engine, blobs, clock)
    file = await files.create("in.jsonl", "batch", feed([b'{"a":1}\n', b'{"a":2}\n']))
    assert file.bytes == 16
    assert file.created_at == 1_700_000_000
    assert file.expires_at == 1_700_000_000 + BATCH_EXPIRES_S
    assert (file.filename, file.purpose, file.status) == ("in.jsonl", "batch", "processed")
    assert await files.get(file.id) == file
    assert await read(files, file.id) == b'{"a":1}\n{"a":2}\n'
    assert stored(blobs) == [file.id]
    record = await engine.get_record("file", file.id)
    assert record is not None
    assert record.active  # it expires, so maintenance looks at it
    assert record.created_at == 1_700_000_000.25
    assert await files.delete(file.id) == file
    assert stored(blobs) == []
    for call in (files.get, files.content, files.delete):
        with pytest.raises(NotFound) as caught:
            await call(file.id)
        assert caught.value.message == f"No such File object: {file.id}"
        assert caught.value.param == "id"


async def test_a_refused_upload_reads_nothing_and_stores_nothing(
    engine: MemoryEngine, blobs: LocalBlobStore, clock: ManualClock
) -> None:
    files = make(engine, blobs, clock)

    async def untouchable() -> AsyncIterator[bytes]:
        raise AssertionError("the upload was read")
        yield b""

    for filename, purpose, policy in [
        ("in.txt", "batch", None),
        ("in.jsonl", "batch_output", None),
        ("in.jsonl", "batch", ExpiresAfter("created_at", 10)),
    ]:
        with pytest.raises(InvalidInput):
            await files.create(filename, purpose, untouchable(), policy)
    assert stored(blobs) == []
    assert (await files.list()).data == []


async def test_too_large_stores_nothing(
    engine: MemoryEngine, blobs: LocalBlobStore, clock: ManualClock
) -> None:
    files = make(engine, blobs, clock, max_bytes=100)
    with pytest.raises(InvalidInput, match="File is too large"):
        await files.create("in.jsonl", "batch", feed([b"x" * 60] * 2))
    assert stored(blobs) == []
    assert (await files.list()).data == []


async def test_a_failed_record_write_removes_the_blob(
    engine: MemoryEngine, blobs: LocalBlobStore, clock: ManualClock
) -> None:
    files = make(engine, blobs, clock)
    await engine.close()  # the engine now refuses every call
    with pytest.raises(EngineUnavailable):
        await files.create("in.jsonl", "batch", feed([b"{}\n"]))
    assert stored(blobs) == []
    await engine.open()


async def test_projects_do_not_see_each_others_files(
    engine: MemoryEngine, blobs: LocalBlobStore, clock: ManualClock
) -> None:
    acme = make(engine, blobs, clock, "acme")
    globex = make(engine, blobs, clock, "globex")
    file = await acme.create("a.jsonl", "batch", feed([b"{}\n"]))
    for call in (globex.get, globex.content, globex.delete):
        with pytest.raises(NotFound):
            await call(file.id)
    assert (await globex.list()).data == []
    assert [f.id for f in (await acme.list()).data] == [file.id]
    assert await acme.get(file.id) == file  # globex's delete did nothing


async def test_list_orders_pages_and_filters(
    engine: MemoryEngine, blobs: LocalBlobStore, clock: ManualClock
) -> None:
    files = make(engine, blobs, clock)
    made = []
    for i in range(9):
        purpose = "batch" if i % 3 == 0 else "user_data"
        made.append(await files.create(f"f{i}.jsonl", purpose, feed([b"{}\n"])))
        clock.advance(1)
    ids = [f.id for f in made]
    page = await files.list()
    assert [f.id for f in page.data] == ids[::-1]
    assert not page.has_more
    assert [f.id for f in (await files.list(order="asc")).data] == ids
    page = await files.list(limit=4)
    assert ([f.id for f in page.data], page.has_more) == (ids[:4:-1], True)
    page = await files.list(after=page.data[-1].id, limit=4)
    assert ([f.id for f in page.data], page.has_more) == (ids[4:0:-1], True)
    page = await files.list(after=page.data[-1].id, limit=4)
    assert ([f.id for f in page.data], page.has_more) == ([ids[0]], False)
    page = await files.list(after=ids[0], order="asc", limit=8)
    assert ([f.id for f in page.data], page.has_more) == (ids[1:], False)
    # a purpose filter fills the page from as many records as it takes
    page = await files.list(purpose="batch", limit=2)
    assert ([f.id for f in page.data], page.has_more) == ([ids[6], ids[3]], True)
    page = await files.list(purpose="batch", limit=2, after=ids[3])
    assert ([f.id for f in page.data], page.has_more) == ([ids[0]], False)
    assert (await files.list(purpose="batch_output")).data == []


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"order": "newest"}, "order"),
        ({"purpose": "nonsense"}, "purpose"),
    ],
)
async def test_bad_list_options(
    engine: MemoryEngine,
    blobs: LocalBlobStore,
    clock: ManualClock,
    options: dict[str, object],
    param: str,
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await make(engine, blobs, clock).list(**options)  # type: ignore[arg-type]
    assert caught.value.param == param


async def test_output_files(
    engine: MemoryEngine, blobs: LocalBlobStore, clock: ManualClock
) -> None:
    files = make(engine, blobs, clock)
    out = await files.create_output("batch_1_output.jsonl", feed([b"line\n"]))
    assert (out.purpose, out.expires_at) == ("batch_output", None)
    record = await engine.get_record("file", out.id)
    assert record is not None
    assert not record.active
    assert await read(files, out.id) == b"line\n"
    assert [f.id for f in (await files.list(purpose="batch_output")).data] == [out.id]
    later = await files.create_output(
        "errors.jsonl", feed([b"e\n"]), expires_after=ExpiresAfter("created_at", 7200)
    )
    assert later.expires_at == later.created_at + 7200


async def test_expire_deletes_what_is_due_across_projects(
    engine: MemoryEngine, blobs: LocalBlobStore, clock: ManualClock
) -> None:
    acme = make(engine, blobs, clock, "acme")
    globex = make(engine, blobs, clock, "globex")
    hour = ExpiresAfter("created_at", 3600)
    soon = await acme.create("a.txt", "user_data", feed([b"a"]), hour)
    soon_too = await globex.create("b.txt", "user_data", feed([b"b"]), hour)
    later = await acme.create("c.jsonl", "batch", feed([b"c"]))  # 30 days
    never = await acme.create("d.txt", "user_data", feed([b"d"]))
    assert await acme.expire() == 0
    clock.advance(3599)
    assert await acme.expire() == 0
    clock.advance(1)
    assert await acme.expire() == 2  # one service expires every project's files
    assert sorted(stored(blobs)) == sorted([later.id, never.id])
    with pytest.raises(NotFound):
        await acme.get(soon.id)
    with pytest.raises(NotFound):
        await globex.get(soon_too.id)
    clock.advance(BATCH_EXPIRES_S)
    assert await globex.expire() == 1
    assert stored(blobs) == [never.id]
    assert [r.id for r in await engine.list_active("file")] == []


async def test_expire_pages_through_many_active_files(
    engine: MemoryEngine, blobs: LocalBlobStore, clock: ManualClock
) -> None:
    files = make(engine, blobs, clock)
    created = clock.now
    for i in range(2_500):  # records only: expiry must page past the first 1,000
        body = msgspec.json.encode(
            FileObject(
                id=f"file-{i:05d}",
                bytes=0,
                created_at=int(created),
                filename="x",
                purpose="user_data",
                expires_at=int(created) + (3600 if i % 2 else 7200),
            )
        )
        await engine.put_record(Record("file", f"file-{i:05d}", "", created, body, True))
    clock.advance(3600)
    assert await files.expire() == 1_250
    clock.advance(3600)
    assert await files.expire() == 1_250
    assert await engine.list_active("file") == []


async def test_replace_output_writes_one_file_under_a_chosen_id(
    engine: MemoryEngine, blobs: LocalBlobStore, clock: ManualClock
) -> None:
    files = make(engine, blobs, clock, "acme")
    file_id = "file-batch_1-output"
    first = await files.replace_output(file_id, "out.jsonl", feed([b"a\n"]))
    assert (first.id, first.bytes, first.purpose, first.expires_at) == (
        file_id,
        2,
        "batch_output",
        None,
    )
    clock.advance(5)
    again = await files.replace_output(file_id, "out.jsonl", feed([b"a\n", b"b\n"]), 3600)
    assert (again.bytes, again.expires_at) == (4, again.created_at + 3600)
    assert await files.get(file_id) == again
    assert await read(files, file_id) == b"a\nb\n"
    assert [f.id for f in (await files.list()).data] == [file_id]
    assert stored(blobs) == [file_id]
    record = await engine.get_record("file", file_id)
    assert record is not None
    assert (record.version, record.active) == (2, True)
    with pytest.raises(InvalidInput):
        await files.replace_output("batch_1", "out.jsonl", feed([]))
    with pytest.raises(InvalidInput):
        await files.replace_output("file-x", "out.jsonl", feed([]), 10)


# ---- settings ----


def test_blob_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    assert settings.blob_url == str(tmp_path.resolve() / "files")
    assert settings.max_file_bytes == 512 * 1024 * 1024
    assert Settings(blob_dir="file:///srv/blobs").blob_url == "file:///srv/blobs"
    env = from_environment({"CONVEYOR_BLOB_DIR": "/x", "CONVEYOR_MAX_FILE_BYTES": "1000"})
    assert (env.blob_dir, env.max_file_bytes) == ("/x", 1000)
    assert from_environment(to_environment(env)) == env
    with pytest.raises(InvalidInput) as caught:
        Settings(max_file_bytes=0).validated()
    assert caught.value.param == "max_file_bytes"
