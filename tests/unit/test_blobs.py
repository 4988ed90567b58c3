"""The local blob store: streamed, atomic, size-limited writes; streamed reads; deletes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from conveyor.blobs import LocalBlobStore, create_blob_store
from conveyor.errors import InvalidInput, NotFound


async def feed(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk


async def read_all(store: LocalBlobStore, key: str, chunk_size: int = 1 << 20) -> bytes:
    return b"".join([chunk async for chunk in await store.read(key, chunk_size)])


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


async def test_write_then_read_back_in_chunks(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")  # created on the first write
    data = [bytes([i]) * 300_000 for i in range(10)]
    assert await store.write("file-1", feed(data), max_bytes=10**9) == 3_000_000
    assert await store.size("file-1") == 3_000_000
    assert await read_all(store, "file-1") == b"".join(data)
    sizes = [len(c) async for c in await store.read("file-1", chunk_size=1_000_000)]
    assert sizes == [1_000_000] * 3
    assert leftovers(tmp_path / "blobs") == ["file-1"]


async def test_an_empty_object(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    assert await store.write("empty", feed([]), max_bytes=10) == 0
    assert await read_all(store, "empty") == b""


async def test_a_write_past_the_limit_leaves_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(InvalidInput, match=r"^File is too large\.") as caught:
        await store.write("big", feed([b"x" * 60, b"y" * 60]), max_bytes=100)
    assert caught.value.param == "file"
    assert leftovers(tmp_path) == []
    assert await store.write("exact", feed([b"x" * 60, b"y" * 40]), max_bytes=100) == 100


async def test_a_failing_source_leaves_nothing_and_keeps_the_old_object(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await store.write("k", feed([b"old"]), max_bytes=100)

    async def broken() -> AsyncIterator[bytes]:
        yield b"new" * 1_000_000
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        await store.write("k", broken(), max_bytes=10**9)
    assert leftovers(tmp_path) == ["k"]
    assert await read_all(store, "k") == b"old"


async def test_a_cancelled_write_leaves_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    started = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            started.set()
            await asyncio.sleep(0.001)
            yield b"z" * 100_000

    job = asyncio.ensure_future(store.write("k", endless(), max_bytes=10**12))
    await started.wait()
    await asyncio.sleep(0.05)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert leftovers(tmp_path) == []


async def test_partial_writes_of_a_killed_process_are_removed_once_abandoned(
    tmp_path: Path,
) -> None:
    store = LocalBlobStore(tmp_path)
    await store.write("kept", feed([b"done"]), max_bytes=10)
    abandoned = tmp_path / ".tmp-killed"  # a write whose process died before the rename
    abandoned.write_bytes(b"half")
    an_hour_ago = time.time() - 3601
    os.utime(abandoned, (an_hour_ago, an_hour_ago))
    in_progress = tmp_path / ".tmp-live"  # touched just now: a write still going on
    in_progress.write_bytes(b"still coming")
    old_object = tmp_path / "old-object"  # a stored object is never touched, however old
    old_object.write_bytes(b"x")
    os.utime(old_object, (an_hour_ago, an_hour_ago))

    assert await store.remove_abandoned(older_than_s=3600) == 1
    assert leftovers(tmp_path) == [".tmp-live", "kept", "old-object"]
    assert await LocalBlobStore(tmp_path / "never-written").remove_abandoned(3600) == 0


async def test_missing_objects(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(NotFound):
        await store.read("nope")
    with pytest.raises(NotFound):
        await store.size("nope")
    assert await store.delete("nope") is False
    await store.write("k", feed([b"1"]), max_bytes=1)
    assert await store.delete("k") is True
    assert await store.delete("k") is False
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("key", ["", "../x", "a/b", ".hidden", "x" * 201, "sp ace"])
async def test_keys_must_be_plain_names(tmp_path: Path, key: str) -> None:
    store = LocalBlobStore(tmp_path / "root")
    with pytest.raises(InvalidInput):
        await store.write(key, feed([b"1"]), max_bytes=10)
    with pytest.raises(InvalidInput):
        await store.read(key)
    with pytest.raises(InvalidInput):
        await store.delete(key)
    assert not (tmp_path / "x").exists()


def test_create_blob_store_takes_paths_and_file_urls(tmp_path: Path) -> None:
    for given in (str(tmp_path), f"file://{tmp_path}", "relative/dir"):
        store = create_blob_store(given)
        assert isinstance(store, LocalBlobStore)
    assert create_blob_store(f"file://{tmp_path}").root == tmp_path  # type: ignore[attr-defined]
    assert create_blob_store("relative/dir").root == Path("relative/dir")  # type: ignore[attr-defined]


@pytest.mark.parametrize("url", ["s3://bucket/prefix", "https://example.com/x", "file://"])
def test_create_blob_store_refuses_other_schemes(url: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        create_blob_store(url)
    assert caught.value.param == "blob_dir"
