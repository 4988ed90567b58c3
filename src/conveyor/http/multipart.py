"""A multipart/form-data body read part by part while it arrives, never held whole.

Starlette's `request.form()` spools every file to a temporary file before the route sees
it; an upload route that streams to the blob store wants each part's bytes as they come.
`MultipartReader` drives python-multipart's push parser from `request.stream()` and hands
out one part at a time: its headers, then its bytes, chunk by chunk. What a parsed chunk
yields is consumed before the next chunk is read, so memory holds one chunk at a time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import NamedTuple

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from conveyor.errors import InvalidInput

HEADERS, DATA, END, DONE = range(4)


class Part(NamedTuple):
    """A part's name, and its filename if it is a file."""

    name: str
    filename: str | None
    content_type: str | None


def _malformed(detail: str) -> InvalidInput:
    return InvalidInput(f"malformed multipart/form-data body: {detail}")


class MultipartReader:
    """Reads a multipart/form-data `stream`: `next_part`, then that part's `data` or `text`."""

    def __init__(self, stream: AsyncIterator[bytes], content_type: str) -> None:
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise InvalidInput(
                "send the upload as multipart/form-data (with a boundary), got"
                f" {content_type or 'no content type'!r:.100}"
            )
        self._stream = stream
        self._events: deque[tuple[int, object]] = deque()
        self._headers: list[tuple[bytes, bytes]] = []
        self._field = bytearray()
        self._value = bytearray()
        self._ended = False  # the stream is used up
        self._in_part = False  # a part's headers were handed out and its END not yet seen
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._headers.clear,
                "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
                "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": lambda data, start, end: self._events.append(
                    (DATA, data[start:end])
                ),
                "on_part_end": lambda: self._events.append((END, None)),
                "on_end": lambda: self._events.append((DONE, None)),
            },
        )

    def _header_end(self) -> None:
        self._headers.append((bytes(self._field).lower(), bytes(self._value)))
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        headers = dict(self._headers)
        disposition, options = parse_options_header(headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise _malformed("a part without Content-Disposition: form-data; name=...")
        filename = options.get(b"filename")
        content_type = headers.get(b"content-type")
        part = Part(
            options[b"name"].decode("utf-8", "replace"),
            None if filename is None else filename.decode("utf-8", "replace"),
            None if content_type is None else content_type.decode("latin-1"),
        )
        self._events.append((HEADERS, part))

    async def _next_event(self) -> tuple[int, object]:
        while not self._events:
            if self._ended:
                raise _malformed("the body ended before its closing boundary")
            try:
                chunk = await anext(self._stream)
            except StopAsyncIteration:
                self._ended = True
                continue
            try:
                self._parser.write(chunk)
            except MultipartParseError as exc:
                raise _malformed(str(exc)) from None
        return self._events.popleft()

    async def next_part(self) -> Part | None:
        """The next part's headers (skipping what is left of the current one), or None."""
        while True:
            kind, value = await self._next_event()
            if kind == HEADERS:
                self._in_part = True
                assert isinstance(value, Part)
                return value
            if kind == END:
                self._in_part = False
            elif kind == DONE:
                return None

    async def data(self) -> AsyncIterator[bytes]:
        """The current part's bytes, chunk by chunk as they arrive."""
        while self._in_part:
            kind, value = await self._next_event()
            if kind == DATA:
                assert isinstance(value, bytes)
                if value:
                    yield value
            elif kind == END:
                self._in_part = False
            else:
                raise _malformed("a part did not end")

    async def text(self, name: str, max_bytes: int = 1024) -> str:
        """The current part's bytes as UTF-8 text, refused past `max_bytes`."""
        value = bytearray()
        async for chunk in self.data():
            value += chunk
            if len(value) > max_bytes:
                raise InvalidInput(f"{name} must be at most {max_bytes} bytes", param=name)
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise InvalidInput(f"{name} must be UTF-8 text", param=name) from None


async def drain(stream: AsyncIterator[bytes], max_bytes: int) -> bool:
    """Read and drop the rest of `stream`, up to about `max_bytes`; True if it all came.

    A server that answers an upload before reading it leaves the client writing into a
    closed connection, and most clients then report a broken connection, not the answer.
    """
    drained = 0
    async for chunk in stream:
        drained += len(chunk)
        if drained > max_bytes:
            return False
    return True
