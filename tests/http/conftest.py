"""A real `conveyor serve` process for the HTTP tests, shared by the session."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.http._support import unique

STARTUP_S = 30.0
SHUTDOWN_S = 10.0


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_environment() -> dict[str, str]:
    """This process's environment without CONVEYOR_* settings a developer may have set."""
    return {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}


def wait_until_live(process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    """Return once /livez answers 200; fail with the server's log if it dies or hangs."""
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"conveyor serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/livez", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"conveyor serve did not answer /livez within {STARTUP_S:g} s:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL to the server's own process group if it does not stop."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(SHUTDOWN_S)
    except subprocess.TimeoutExpired:
        # the group was made for this server alone (start_new_session): its workers go too
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a `conveyor serve` process on SQLite in a fresh data directory."""
    data_dir = tmp_path_factory.mktemp("conveyor-data")
    log = data_dir / "server.log"
    port = free_port()
    command = [sys.executable, "-m", "conveyor.cli", "serve"]
    command += ["--port", str(port), "--data-dir", str(data_dir)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_environment(),
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_live(process, base_url, log)
        yield base_url
    finally:
        stop(process)
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture
async def client(server: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the server, closed after the test."""
    async with httpx.AsyncClient(base_url=server, timeout=15.0) as http:
        yield http


@pytest.fixture
async def queue(client: httpx.AsyncClient) -> AsyncIterator[str]:
    """A queue name no other test uses; the queue and its tasks are deleted afterwards."""
    name = unique()
    yield name
    response = await client.delete(f"/v1/queues/{name}", params={"force": "true"})
    assert response.status_code in (200, 404), response.text
