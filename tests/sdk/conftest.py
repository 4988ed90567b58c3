"""A real `conveyor serve` process on a free port for the SDK and CLI tests, per session."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.sdk import AsyncClient, Client

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
    """SIGTERM; SIGKILL to its own process group if it does not end in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of `conveyor serve` on SQLite in a fresh data directory."""
    data_dir = tmp_path_factory.mktemp("sdk-data")
    log = data_dir / "server.log"
    port = free_port()
    command = [CONVEYOR, "serve", "--port", str(port), "--data-dir", str(data_dir)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment(),
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"conveyor serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/livez", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"conveyor serve did not answer /livez:\n{log.read_text()}")
            time.sleep(0.05)
        yield url
    finally:
        stop_process(process)


@pytest.fixture
def queue() -> str:
    """A queue name no other test uses."""
    return f"sdk-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(server: str) -> Iterator[Client]:
    """A blocking client of the test server."""
    with Client(server) as sdk:
        yield sdk


@pytest.fixture
async def async_client(server: str) -> AsyncIterator[AsyncClient]:
    """An async client of the test server."""
    async with AsyncClient(server) as sdk:
        yield sdk
