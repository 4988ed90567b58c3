"""Server settings: each has a `conveyor serve` flag and a CONVEYOR_* environment variable."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import msgspec

from conveyor.domain.queues import validate_queue_name
from conveyor.errors import InvalidInput

DEFAULT_DATA_DIR = "./conveyor-data"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """How one server process runs."""

    host: str = "127.0.0.1"
    port: int = 8080
    engine: str = ""  # empty: SQLite under data_dir
    data_dir: str = DEFAULT_DATA_DIR
    # uvicorn measured ahead of granian on everything but bare puts (docs/benchmarks.md)
    server: str = "uvicorn"  # or "granian"
    max_blocking_wait_s: float = 600.0
    default_blocking_wait_s: float = 300.0
    strict_queues: bool = False
    insecure: bool = False
    callback_secret: str = ""  # empty: a random one per process (receivers cannot verify)
    api_keys: str = ""  # key=project,…
    worker_keys: str = ""  # key=project,…
    admin_keys: str = ""  # key,…
    allow_private_callbacks: bool = False
    blob_dir: str = ""  # empty: <data_dir>/files; a directory or a file:// URL
    max_file_bytes: int = 512 * 1024 * 1024
    batch_queue: str = "batch"  # where a batch's tasks go unless it names a queue
    max_batch_requests: int = 50_000  # requests one batch input file may hold

    @property
    def engine_url(self) -> str:
        """The engine URL, SQLite under `data_dir` unless one was given."""
        if self.engine:
            return self.engine
        return f"sqlite:///{Path(self.data_dir).resolve() / 'conveyor.db'}"

    @property
    def blob_url(self) -> str:
        """Where file contents live: `blob_dir`, else `files` under `data_dir`."""
        if self.blob_dir:
            return self.blob_dir
        return str(Path(self.data_dir).resolve() / "files")

    def validated(self) -> Settings:
        """Return self, or raise InvalidInput saying which setting to fix."""
        if not 0 < self.port < 65536:
            raise InvalidInput(f"port must be 1-65535, got {self.port}", param="port")
        if self.server not in ("uvicorn", "granian"):
            raise InvalidInput(
                f"server must be uvicorn or granian, got {self.server!r}", param="server"
            )
        if not 0 < self.default_blocking_wait_s <= self.max_blocking_wait_s:
            raise InvalidInput(
                "the default blocking wait must be positive and at most the maximum",
                param="default_blocking_wait_s",
            )
        if self.max_file_bytes < 1:
            raise InvalidInput(
                f"max_file_bytes must be at least 1, got {self.max_file_bytes}",
                param="max_file_bytes",
            )
        if self.max_batch_requests < 1:
            raise InvalidInput(
                f"max_batch_requests must be at least 1, got {self.max_batch_requests}",
                param="max_batch_requests",
            )
        validate_queue_name(self.batch_queue)
        keyed = bool(self.api_keys or self.worker_keys or self.admin_keys)
        if not keyed and not self.insecure and not _is_loopback(self.host):
            raise InvalidInput(
                f"refusing to serve {self.host} without API keys; bind 127.0.0.1, or pass"
                " --insecure (CONVEYOR_INSECURE=true) if something in front of Conveyor"
                " authenticates",
                param="host",
            )
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_TRUE = {"1", "true", "yes", "on"}


def from_environment(environ: dict[str, str] | None = None) -> Settings:
    """Settings from CONVEYOR_* variables, defaults for the rest."""
    env = os.environ if environ is None else environ
    fields: dict[str, object] = {}
    for field in Settings.__struct_fields__:
        raw = env.get(f"CONVEYOR_{field.upper()}")
        if raw is None:
            continue
        default = getattr(Settings(), field)
        try:
            if isinstance(default, bool):
                fields[field] = raw.strip().lower() in _TRUE
            elif isinstance(default, int):
                fields[field] = int(raw)
            elif isinstance(default, float):
                fields[field] = float(raw)
            else:
                fields[field] = raw
        except ValueError:
            raise InvalidInput(
                f"CONVEYOR_{field.upper()} must be a {type(default).__name__}, got {raw!r}",
                param=field,
            ) from None
    return Settings(**fields)  # type: ignore[arg-type]


def to_environment(settings: Settings) -> dict[str, str]:
    """The CONVEYOR_* variables that reproduce `settings` in a server worker process."""
    return {
        f"CONVEYOR_{field.upper()}": str(getattr(settings, field)).lower()
        if isinstance(getattr(settings, field), bool)
        else str(getattr(settings, field))
        for field in Settings.__struct_fields__
    }
