"""Server-Sent Events of a streamed put or a followed task, read line by line, no I/O.

The server writes each message as `id:` (for worker events), `event:` and one `data:` line
of JSON, then a blank line. The stream ends with an `event: result` message; an
`event: error` message ({"error": {...}, "status_code": N}) becomes the Conveyor error
the status stands for.
"""

from __future__ import annotations

from typing import Any

import msgspec

from conveyor.sdk._errors import error_from
from conveyor.sdk._models import StreamEnd, StreamEvent

RESULT = "result"
ERROR = "error"

_decode_end = msgspec.json.Decoder(StreamEnd).decode


class StreamReader:
    """Feed it the stream's lines; it hands back each complete message."""

    __slots__ = ("_data", "_event", "_id", "_what")

    def __init__(self, what: str) -> None:
        self._what = what
        self._event = "message"
        self._data: list[str] = []
        self._id: int | None = None

    def feed(self, line: str) -> StreamEvent | None:
        """The message a blank line completes, else None; raises an `error` message."""
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment: keep-alive
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and value.isdigit():
            self._id = int(value)
        return None

    def _dispatch(self) -> StreamEvent | None:
        if not self._data:
            self._event = "message"
            return None
        text = "\n".join(self._data)
        try:
            data: Any = msgspec.json.decode(text)
        except msgspec.DecodeError:
            data = text
        message = StreamEvent(event=self._event, data=data, id=self._id)
        self._event, self._data, self._id = "message", [], None
        if message.event == ERROR:
            status = data.get("status_code", 500) if isinstance(data, dict) else 500
            raise error_from(status, msgspec.json.encode(data), self._what)
        return message


def end_of(message: StreamEvent) -> StreamEnd | None:
    """The task's end if `message` is the final one, else None."""
    if message.event != RESULT:
        return None
    return _decode_end(msgspec.json.encode(message.data))
