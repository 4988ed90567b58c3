"""Blob storage for file contents (batch input and output); `create_blob_store` picks one."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from conveyor.blobs.local import LocalBlobStore
from conveyor.blobs.store import BlobStore
from conveyor.errors import InvalidInput

__all__ = ["BlobStore", "LocalBlobStore", "create_blob_store"]


def create_blob_store(url_or_path: str) -> BlobStore:
    """A blob store for a directory path or a `file://` URL (nothing is touched yet)."""
    parts = urlsplit(url_or_path)
    if parts.scheme == "file":
        path = unquote(parts.netloc + parts.path)
    elif not parts.scheme or (len(parts.scheme) == 1 and url_or_path[1:2] == ":"):
        path = url_or_path  # a plain path (a one-letter scheme is a drive letter)
    else:
        raise InvalidInput(
            f"unsupported blob store {url_or_path!r}: give a directory path or a file:// URL"
            " (S3-compatible stores are not supported yet)",
            param="blob_dir",
        )
    if not path:
        raise InvalidInput("give the blob store's directory", param="blob_dir")
    return LocalBlobStore(Path(path))
