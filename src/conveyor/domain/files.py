"""Files, as OpenAI's Files API has them: the file object, purposes, and expiry rules."""

from __future__ import annotations

from typing import Literal

import msgspec

from conveyor.domain.ids import new_task_id
from conveyor.errors import InvalidInput

FILE_ID_PREFIX = "file-"
# what a client may upload with; `batch_output` is kept for the server's own files
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
OUTPUT_PURPOSE = "batch_output"
PURPOSES = (*UPLOAD_PURPOSES, OUTPUT_PURPOSE)

EXPIRES_ANCHOR = "created_at"
MIN_EXPIRES_S = 3_600  # one hour
MAX_EXPIRES_S = 2_592_000  # thirty days
BATCH_EXPIRES_S = 30 * 86_400  # batch input files expire after 30 days unless told otherwise
MAX_FILENAME = 512
DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024
BATCH_FORMAT_MESSAGE = "Invalid file format for Batch API. Must be .jsonl"


class ExpiresAfter(msgspec.Struct, frozen=True):
    """An expiry policy: `seconds` after `anchor` (only `created_at` exists)."""

    anchor: str
    seconds: int


class FileObject(msgspec.Struct, frozen=True, kw_only=True):
    """OpenAI's file object, field for field and in its order."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


def new_file_id() -> str:
    """A time-ordered file id, `file-` and 32 hex digits: id order is creation order."""
    return FILE_ID_PREFIX + new_task_id()


def check_purpose(purpose: str, *, upload: bool = True) -> str:
    """`purpose` if a client may upload with it (or, with upload=False, if it exists)."""
    allowed = UPLOAD_PURPOSES if upload else PURPOSES
    if purpose in allowed:
        return purpose
    if purpose == OUTPUT_PURPOSE:
        raise InvalidInput(
            "purpose 'batch_output' is reserved for the files the server writes;"
            f" upload with one of {', '.join(UPLOAD_PURPOSES)}",
            param="purpose",
        )
    raise InvalidInput(
        f"Invalid value for 'purpose': {purpose!r:.80} is not one of {', '.join(allowed)}.",
        param="purpose",
    )


def check_filename(filename: str) -> str:
    """`filename` if it is 1 to MAX_FILENAME characters."""
    if not filename or len(filename) > MAX_FILENAME:
        raise InvalidInput(
            f"the file's name must be 1-{MAX_FILENAME} characters, got {len(filename)}",
            param="file",
        )
    return filename


def check_upload(filename: str, purpose: str) -> None:
    """Refuse an upload by its name and purpose, before any of its bytes are read."""
    check_purpose(purpose)
    check_filename(filename)
    if purpose == "batch" and not filename.lower().endswith(".jsonl"):
        raise InvalidInput(BATCH_FORMAT_MESSAGE, param="file")


def check_expires_after(policy: ExpiresAfter) -> ExpiresAfter:
    """`policy` if its anchor is `created_at` and its seconds within one hour and 30 days."""
    if policy.anchor != EXPIRES_ANCHOR:
        raise InvalidInput(
            f"expires_after[anchor] must be {EXPIRES_ANCHOR!r}, got {policy.anchor!r:.80}",
            param="expires_after.anchor",
        )
    if not MIN_EXPIRES_S <= policy.seconds <= MAX_EXPIRES_S:
        raise InvalidInput(
            f"expires_after[seconds] must be {MIN_EXPIRES_S}-{MAX_EXPIRES_S}"
            f" (one hour to 30 days), got {policy.seconds}",
            param="expires_after.seconds",
        )
    return policy


def expires_at(created_at: int, purpose: str, policy: ExpiresAfter | None) -> int | None:
    """When a new file expires: by its policy, else 30 days for batch input, else never."""
    if policy is not None:
        return created_at + check_expires_after(policy).seconds
    if purpose == "batch":
        return created_at + BATCH_EXPIRES_S
    return None


def new_file(
    file_id: str,
    *,
    size: int,
    created_at: int,
    filename: str,
    purpose: str,
    policy: ExpiresAfter | None = None,
) -> FileObject:
    """The object of a file just stored."""
    return FileObject(
        id=file_id,
        bytes=size,
        created_at=created_at,
        filename=filename,
        purpose=purpose,
        expires_at=expires_at(created_at, purpose, policy),
    )


def is_expired(file: FileObject, now: float) -> bool:
    """True once the file's expiry time has come."""
    return file.expires_at is not None and file.expires_at <= now
