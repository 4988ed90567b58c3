"""A real `conveyor serve` process for tests that talk HTTP (tests/http, tests/sdk)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

STARTUP_S = 30.0
SHUTDOWN_S = 10.0
CONVEYOR = str(Path(sys.executable).with_name("conveyor"))


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without a developer's CONVEYOR_* settings, plus `extra`."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
    return clean | extra


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = SHUTDOWN_S) -> None:
    """SIGTERM; SIGKILL to its own process group (start_new_session) if it hangs."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_until_live(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"conveyor serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/livez", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"conveyor serve did not answer /livez within {STARTUP_S:g} s:\n{log.read_text()}")


@contextmanager
def running_server(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`conveyor serve` on SQLite in `data_dir` (log in server.log there); its base URL.

    The server is stopped afterwards, and a traceback in its log fails the test run.
    """
    with server_process(data_dir, *args, env=env) as (url, _):
        yield url


@contextmanager
def server_process(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """As `running_server`, with the process too, for tests that kill it themselves."""
    log = data_dir / "server.log"
    port = free_port()
    command = [CONVEYOR, "serve", "--port", str(port), "--data-dir", str(data_dir), *args]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment(**(env or {})),
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_live(process, url, log)
        yield url, process
    finally:
        stop_process(process)
    assert "Traceback" not in log.read_text(), log.read_text()
