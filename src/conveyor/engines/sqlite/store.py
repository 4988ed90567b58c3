"""Connections to one SQLite file: the engine's, and the checkpointer's."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import TypeVar

from conveyor.engines.sqlite import batch_counts, queries
from conveyor.engines.sqlite.queries import STATUS_CODES, STATUSES
from conveyor.engines.sqlite.writer import CountKey
from conveyor.errors import EngineUnavailable, InvalidInput

T = TypeVar("T")
log = logging.getLogger(__name__)

SYNCHRONOUS = ("off", "normal", "full", "extra")


def check_synchronous(value: str) -> str:
    """The `synchronous` pragma value, or InvalidInput naming the choices."""
    if value.lower() not in SYNCHRONOUS:
        raise InvalidInput(
            f"synchronous must be one of {', '.join(SYNCHRONOUS)}, got {value!r}",
            param="synchronous",
        )
    return value.lower()


class FileLock:
    """An exclusive lock beside the database, so one process at a time serves the file.

    The engine keeps exact mirrors of the file's counts in memory; a second process
    writing the same file would make both wrong. The OS drops the lock when the holder
    dies, even by SIGKILL.
    """

    def __init__(self, path: Path) -> None:
        self._path = path.with_name(path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EngineUnavailable(
                f"{self._path.with_suffix('')} is in use by another Conveyor process; one"
                " process serves an SQLite file (use Redis or PostgreSQL to run several)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _connect(path: Path) -> sqlite3.Connection:
    # autocommit mode: transactions are begun and ended explicitly
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def connect_writer(path: Path, synchronous: str) -> sqlite3.Connection:
    """The one connection that writes: WAL, checkpoints left to the checkpointer."""
    conn = _connect(path)
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        conn.close()
        raise EngineUnavailable(f"{path}: SQLite could not switch to WAL mode (got {mode})")
    # NORMAL: a commit survives the process being killed; FULL also survives power loss
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    conn.execute("PRAGMA cache_size = -65536")
    conn.execute("PRAGMA temp_store = MEMORY")
    migrate(conn)
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Create the schema, or refuse a file written by a newer Conveyor."""
    _add_columns(conn)
    had_tasks = _has_table(conn, "tasks")
    had_batch_counts = _has_table(conn, "batch_counts")
    conn.executescript(queries.SCHEMA)
    if had_tasks and not had_batch_counts:  # a file from before batch_counts existed
        conn.execute("BEGIN IMMEDIATE")
        batch_counts.fill(conn)
        conn.execute("COMMIT")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(queries.SCHEMA_VERSION),),
        )
    elif int(row[0]) > queries.SCHEMA_VERSION:
        raise EngineUnavailable(
            f"the store was written by a newer Conveyor (schema {row[0]}); upgrade Conveyor"
        )
    elif int(row[0]) < queries.SCHEMA_VERSION:  # the script above added what it lacked
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'",
            (str(queries.SCHEMA_VERSION),),
        )


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return found.fetchone() is not None


def _add_columns(conn: sqlite3.Connection) -> None:
    """Add the columns an older file's tables lack (before indexes on them are created)."""
    for (table, column), declaration in queries.ADDED_COLUMNS.items():
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if present and column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


def load_counts(conn: sqlite3.Connection) -> dict[CountKey, int]:
    """Committed task counts per (queue, level, status)."""
    return {
        (queue, level, STATUSES[status]): n
        for queue, level, status, n in conn.execute(queries.SELECT_COUNTS)
        if n
    }


def flush_counts(conn: sqlite3.Connection, changes: dict[CountKey, int]) -> None:
    """Add a transaction's count changes to the counts table."""
    if not changes:
        return
    conn.executemany(
        queries.UPSERT_COUNT,
        [(queue, level, STATUS_CODES[status], n) for (queue, level, status), n in changes.items()],
    )
    if any(n < 0 for n in changes.values()):
        conn.execute(queries.DELETE_ZERO_COUNTS)


RESTART_AFTER_FRAMES = 4096  # 16 MB of 4 KB pages
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024  # a WAL that restarts is trimmed to this
FORCE_AFTER_RESTARTS = 4  # a WAL this many RESTART thresholds long: the writer restarts it
PAGE_BYTES = 4096  # SQLite's default page size, which the engine keeps
FORCE_WAIT_S = 5.0  # the longest the writer waits for a forced RESTART


class Checkpointer:
    """Copies the WAL back into the database in its own thread, off the commit path.

    A PASSIVE checkpoint never blocks the writer, but under a steady stream of commits it
    never catches up either, and the WAL then grows without bound (and every read slows
    down, consulting an ever larger WAL index). So when a PASSIVE pass leaves the WAL
    longer than RESTART_AFTER_FRAMES, a RESTART follows: with most frames already copied
    it holds the writer back only for the tail, then the WAL starts over from its
    beginning (and `journal_size_limit` trims the file).
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._wal = path.with_name(path.name + "-wal")
        self._wanted = threading.Event()
        self._restarts = threading.Condition()  # guards the two below
        self._restart_asked = False
        self._restarts_done = 0
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name="conveyor-sqlite-checkpoint", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def stop(self) -> None:
        self._stopping = True
        self._wanted.set()
        self._thread.join()

    def _run(self) -> None:
        conn = _connect(self._path)
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._stopping:
                    break
                frames = self._checkpoint(conn, "PASSIVE")
                with self._restarts:
                    asked, self._restart_asked = self._restart_asked, False
                if frames > RESTART_AFTER_FRAMES or asked:
                    self._checkpoint(conn, "RESTART")
                    with self._restarts:
                        self._restarts_done += 1
                        self._restarts.notify_all()
            self._checkpoint(conn, "TRUNCATE")
        finally:
            conn.close()

    def overdue(self) -> bool:
        """Whether the WAL has outgrown what this thread keeps up with. A writer committing
        without pause leaves a RESTART (which needs a moment with no writer) no gap to
        take, and a busy CPU may not run this thread at all; the writer must then make the
        gap (`force`). A WAL restarted is cut back to JOURNAL_SIZE_LIMIT, so a file
        longer than that (and than FORCE_AFTER_RESTARTS restart thresholds) has not been
        restarted for that long. A stat of the file, called between transactions."""
        limit = max(JOURNAL_SIZE_LIMIT, FORCE_AFTER_RESTARTS * RESTART_AFTER_FRAMES * PAGE_BYTES)
        try:
            return self._wal.stat().st_size > limit
        except FileNotFoundError:
            return False

    def force(self) -> None:
        """Have this thread RESTART the WAL now, and wait for it (up to FORCE_WAIT_S) on
        the caller's thread: the writer's, between two transactions, so the RESTART finds
        no writer to wait for. It holds the writer back for the WAL's tail, which bounds
        the WAL under any write load."""
        with self._restarts:
            target = self._restarts_done + 1
            self._restart_asked = True
            self._wanted.set()
            self._restarts.wait_for(lambda: self._restarts_done >= target, FORCE_WAIT_S)

    def _checkpoint(self, conn: sqlite3.Connection, mode: str) -> int:
        """Run one checkpoint; the WAL's length in frames as it found it (0 on failure)."""
        try:
            _busy, frames, _copied = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.Error as exc:
            log.warning("SQLite checkpoint (%s) failed, will retry: %s", mode, exc)
            return 0
        return int(frames)
