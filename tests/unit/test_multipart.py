"""The streaming multipart reader: parts and their bytes as they arrive, whatever the chunking."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conveyor.errors import InvalidInput
from conveyor.http.multipart import MultipartReader, Part, drain

BOUNDARY = "----conveyor-test-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def body(*parts: tuple[str, str | None, bytes], close: bool = True) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + data + b"\r\n"
    return out + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(reader: MultipartReader) -> list[tuple[Part, bytes]]:
    parts = []
    while (part := await reader.next_part()) is not None:
        parts.append((part, b"".join([chunk async for chunk in reader.data()])))
    return parts


@pytest.mark.parametrize("size", [1, 7, 64, 65_536])
async def test_parts_and_bytes_whatever_the_chunking(size: int) -> None:
    payload = bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n" + b"\r\n" * 3
    data = body(("purpose", None, b"batch"), ("file", "in.jsonl", payload))
    parts = await read_all(MultipartReader(chunked(data, size), CONTENT_TYPE))
    assert parts == [
        (Part("purpose", None, None), b"batch"),
        (Part("file", "in.jsonl", "application/octet-stream"), payload),
    ]


async def test_text_and_skipping_unread_parts() -> None:
    data = body(("a", None, b"skipped"), ("b", None, "vérifié".encode()))
    reader = MultipartReader(chunked(data, 5), CONTENT_TYPE)
    assert (await reader.next_part()) == Part("a", None, None)
    assert (await reader.next_part()) == Part("b", None, None)
    assert await reader.text("b") == "vérifié"
    assert await reader.next_part() is None


async def test_text_is_limited_and_must_be_utf8() -> None:
    reader = MultipartReader(chunked(body(("purpose", None, b"x" * 2000)), 100), CONTENT_TYPE)
    await reader.next_part()
    with pytest.raises(InvalidInput) as caught:
        await reader.text("purpose")
    assert caught.value.param == "purpose"
    reader = MultipartReader(chunked(body(("purpose", None, b"\xff")), 100), CONTENT_TYPE)
    await reader.next_part()
    with pytest.raises(InvalidInput, match="UTF-8"):
        await reader.text("purpose")


async def test_a_body_cut_short_is_refused_not_taken_as_complete() -> None:
    data = body(("file", "in.jsonl", b"0123456789" * 100), close=False)[:-40]
    reader = MultipartReader(chunked(data, 64), CONTENT_TYPE)
    assert (await reader.next_part()) is not None
    with pytest.raises(InvalidInput, match="ended before its closing boundary"):
        [chunk async for chunk in reader.data()]


@pytest.mark.parametrize(
    "content_type",
    ["", "application/json", "multipart/form-data", "multipart/mixed; boundary=x"],
)
def test_only_multipart_form_data_with_a_boundary(content_type: str) -> None:
    with pytest.raises(InvalidInput, match="multipart/form-data"):
        MultipartReader(chunked(b"", 1), content_type)


async def test_garbage_is_refused() -> None:
    garbage = f"--{BOUNDARY}\r\nno colon here\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()
    reader = MultipartReader(chunked(garbage, 10), CONTENT_TYPE)
    with pytest.raises(InvalidInput, match="malformed"):
        await read_all(reader)
    nameless = f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{BOUNDARY}--\r\n"
    reader = MultipartReader(chunked(nameless.encode(), 10), CONTENT_TYPE)
    with pytest.raises(InvalidInput, match="name"):
        await read_all(reader)


async def test_drain_reads_to_the_end_or_gives_up() -> None:
    assert await drain(chunked(b"x" * 1000, 100), 5000) is True
    assert await drain(chunked(b"x" * 1000, 100), 500) is False
