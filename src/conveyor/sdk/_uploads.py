"""Files to and from the wire, a chunk at a time: an upload's multipart body, a download's sink.

No network I/O: `Client` and `AsyncClient` iterate a `Multipart` body as they send it and
write what they receive into a `Download`, so neither an upload nor a download is ever
held whole in memory, and the rules about both live here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from conveyor.errors import ConveyorError, InvalidInput

CHUNK_BYTES = 1024 * 1024


def _quoted(value: str) -> str:
    """`value` as a quoted-string of a Content-Disposition header."""
    flat = value.replace("\r", " ").replace("\n", " ")
    return '"' + flat.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class Multipart:
    """A multipart/form-data body of text fields, then one file read from disk or memory.

    The fields come first: the server stores the file as it arrives and needs its purpose
    before (see `conveyor.http.files`). The length is known up front, so the body goes out
    with a Content-Length rather than chunked.
    """

    fields: dict[str, str]
    filename: str
    source: Path | bytes
    size: int  # of the file, measured once: what Content-Length promises
    boundary: str = field(default_factory=lambda: "conveyor-" + secrets.token_hex(16))

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def head(self) -> bytes:
        parts = [
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in self.fields.items()
        ]
        parts.append(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file";'
            f" filename={_quoted(self.filename)}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        return "".join(parts).encode()

    @property
    def tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode()

    def length(self) -> int:
        """The body's size in bytes, for Content-Length."""
        return len(self.head) + self.size + len(self.tail)

    def headers(self) -> dict[str, str]:
        """The headers the body goes with."""
        return {"Content-Type": self.content_type, "Content-Length": str(self.length())}

    def chunks(self, chunk_bytes: int = CHUNK_BYTES) -> Generator[bytes, None, None]:
        """The body, chunk by chunk; a file on disk is read as it is sent."""
        yield self.head
        if isinstance(self.source, bytes):
            for start in range(0, len(self.source), chunk_bytes):
                yield self.source[start : start + chunk_bytes]
        else:
            yield from _read(self.source, self.size, chunk_bytes)
        yield self.tail

    async def async_chunks(self, chunk_bytes: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        """As `chunks`, with each read from disk done off the event loop."""
        chunks = self.chunks(chunk_bytes)
        try:
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                yield chunk
        finally:
            chunks.close()


def _read(path: Path, size: int, chunk_bytes: int) -> Iterator[bytes]:
    """Exactly `size` bytes of `path`: the length already promised in Content-Length."""
    left = size
    with path.open("rb") as file:
        while left > 0:
            chunk = file.read(min(chunk_bytes, left))
            if not chunk:
                raise ConveyorError(f"{path} became shorter while it was being uploaded")
            left -= len(chunk)
            yield chunk


def upload_body(
    source: str | os.PathLike[str] | bytes, purpose: str, filename: str | None
) -> Multipart:
    """The body that uploads `source` (a path, or the file's bytes) with `purpose`."""
    fields = {"purpose": purpose}
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        return Multipart(fields, filename or "input.jsonl", data, len(data))
    path = Path(source)
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file", param="file")
    return Multipart(fields, filename or path.name, path, path.stat().st_size)


class Download:
    """Where a downloaded body goes: a temporary file beside `path`, renamed onto it at the end.

    Use as `with Download(path) as sink: sink.write(chunk)`. A download that fails half way
    leaves neither a partial file nor an old `path` overwritten.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: IO[bytes] | None = None

    def __enter__(self) -> Download:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = tempfile.NamedTemporaryFile(  # closed in __exit__
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".part", delete=False
        )
        return self

    def write(self, chunk: bytes) -> None:
        """Append a chunk of the body."""
        assert self._file is not None, "use Download as a context manager"
        self._file.write(chunk)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        file, self._file = self._file, None
        if file is None:
            return
        file.close()
        if exc_type is None:
            os.replace(file.name, self.path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(file.name)
