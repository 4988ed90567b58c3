"""Routes of OpenAI's Files API: upload (streamed), list, retrieve, content, delete.

An upload is read as it arrives (see multipart.py) and its file part streams straight into
the blob store, so no upload is ever held whole in memory or spooled by Starlette. Fields
must come before the file, as the official SDKs and `curl -F` in written order send them:
a file part before `purpose` is refused with 400 (buffering it to learn its purpose later
would cost a second copy of every upload), and so is a field after the file (the file is
stored by then; it is deleted again).
"""

from __future__ import annotations

import contextlib
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from conveyor.domain.files import ExpiresAfter, FileObject
from conveyor.errors import ConveyorError, InvalidInput
from conveyor.http.multipart import MultipartReader, drain
from conveyor.http.responses import json
from conveyor.service.files import FileService

FIELDS = ("purpose", "expires_after[anchor]", "expires_after[seconds]")
# what the multipart framing of one file may add to its bytes, at most, before we say
# from Content-Length alone that the file is too large
FRAMING_BYTES = 64 * 1024
# after refusing an upload, read (and drop) this much more of it so the client sees the
# answer rather than a connection reset; past it, the connection is closed
DRAIN_BYTES = 1024 * 1024 * 1024


def files(request: Request) -> FileService:
    """The file service of the caller's project."""
    principal = request.scope.get("state", {}).get("principal")
    service: FileService = request.app.state.files("" if principal is None else principal.project)
    return service


async def create_file(request: Request) -> Response:
    """Upload a file (multipart/form-data: purpose, then file)."""
    stream = request.stream()
    try:
        reader = MultipartReader(stream, request.headers.get("content-type", ""))
        file = await _upload(request, files(request), reader)
    except ClientDisconnect:
        return Response(status_code=400)  # nobody is left to read an answer
    except ConveyorError:
        with contextlib.suppress(ClientDisconnect):
            await drain(stream, DRAIN_BYTES)
        raise
    return json(file)


async def _upload(request: Request, service: FileService, reader: MultipartReader) -> FileObject:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > service.max_bytes + FRAMING_BYTES:
        raise InvalidInput(
            f"File is too large. Files may be at most {service.max_bytes} bytes.", param="file"
        )
    fields: dict[str, str] = {}
    stored: FileObject | None = None
    try:
        while (part := await reader.next_part()) is not None:
            if part.name == "file":
                if stored is not None:
                    raise InvalidInput("send one file per upload", param="file")
                if part.filename is None:
                    raise InvalidInput(
                        "file must be a file part (one with a filename)", param="file"
                    )
                if "purpose" not in fields:
                    raise InvalidInput(
                        "send purpose before file in the multipart body", param="purpose"
                    )
                stored = await service.create(
                    part.filename, fields["purpose"], reader.data(), _expires_after(fields)
                )
            elif part.name in FIELDS:
                if stored is not None:
                    raise InvalidInput(f"send {part.name} before file", param=part.name)
                if part.name in fields:
                    raise InvalidInput(f"{part.name} was sent twice", param=part.name)
                fields[part.name] = await reader.text(part.name)
            else:
                raise InvalidInput(f"unknown field {part.name!r:.80}", param=part.name[:80])
    except BaseException:
        if stored is not None:
            with contextlib.suppress(ConveyorError):
                await service.delete(stored.id)
        raise
    if stored is None:
        missing = "purpose" if "purpose" not in fields else "file"
        raise InvalidInput(f"Missing required parameter: '{missing}'.", param=missing)
    return stored


def _expires_after(fields: dict[str, str]) -> ExpiresAfter | None:
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor is None or seconds is None:
        missing = "anchor" if anchor is None else "seconds"
        raise InvalidInput(
            f"expires_after needs both anchor and seconds; {missing} is missing",
            param=f"expires_after.{missing}",
        )
    if not (seconds.isascii() and seconds.strip().isdigit()) or len(seconds) > 12:
        raise InvalidInput(
            f"expires_after[seconds] must be a whole number, got {seconds!r:.40}",
            param="expires_after.seconds",
        )
    return ExpiresAfter(anchor, int(seconds))


async def list_files(request: Request) -> Response:
    """List the project's files, newest first unless order=asc."""
    params = request.query_params
    limit = _int_param(params.get("limit"), "limit", 10_000)
    page = await files(request).list(
        after=params.get("after") or None,
        limit=limit,
        order=params.get("order", "desc"),
        purpose=params.get("purpose") or None,
    )
    body: dict[str, Any] = {
        "object": "list",
        "data": page.data,
        "first_id": page.data[0].id if page.data else None,
        "last_id": page.data[-1].id if page.data else None,
        "has_more": page.has_more,
    }
    return json(body)


def _int_param(raw: str | None, name: str, default: int) -> int:
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise InvalidInput(f"{name} must be a whole number, got {raw!r:.40}", param=name)
    return int(raw)


async def get_file(request: Request) -> Response:
    """Retrieve a file object."""
    return json(await files(request).get(request.path_params["file_id"]))


async def get_content(request: Request) -> Response:
    """Download a file's contents."""
    file, chunks = await files(request).open(request.path_params["file_id"])
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={"content-length": str(file.bytes)},
    )


async def delete_file(request: Request) -> Response:
    """Delete a file and its contents."""
    file = await files(request).delete(request.path_params["file_id"])
    return json({"id": file.id, "object": "file", "deleted": True})


ROUTES = [
    Route("/v1/files", create_file, methods=["POST"]),
    Route("/v1/files", list_files, methods=["GET"]),
    Route("/v1/files/{file_id}/content", get_content, methods=["GET"]),
    Route("/v1/files/{file_id}", get_file, methods=["GET"]),
    Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
]
