"""Two `conveyor serve --engine postgresql://…` processes over one schema: a client of one
gets what a worker does through the other, as soon as it happens."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests._server import running_server
from tests.conftest import postgres_url


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Servers A and B on one PostgreSQL schema."""
    url = postgres_url()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        running_server(tmp_path / "a", "--engine", url) as a,
        running_server(tmp_path / "b", "--engine", url) as b,
    ):
        yield a, b


def test_both_servers_are_ready_on_the_shared_schema(servers: tuple[str, str]) -> None:
    for server in servers:
        assert httpx.get(f"{server}/readyz").status_code == 200


def test_a_blocking_put_on_one_server_returns_what_a_worker_completes_on_the_other(
    servers: tuple[str, str],
) -> None:
    a, b = servers
    answers: list[httpx.Response] = []
    put = {"queue": "q", "data": {"ask": 1}, "response_mode": "blocking", "timeout": 20}
    caller = threading.Thread(
        target=lambda: answers.append(httpx.post(f"{a}/v1/tasks", json=put, timeout=30))
    )
    caller.start()
    taken = httpx.post(f"{b}/v1/tasks/take", json={"queues": ["q"], "wait": 20}, timeout=30)
    (task,) = taken.json()["tasks"]
    assert task["data"] == {"ask": 1}
    result: dict[str, Any] = {"status_code": 200, "body": {"answer": 42}}
    completed_at = time.monotonic()
    done = httpx.post(
        f"{b}/v1/tasks/{task['task_id']}/complete",
        json={"lease_id": task["lease_id"], "result": result},
    )
    assert done.status_code == 200, done.text
    caller.join(30)
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"answer": 42}
    assert time.monotonic() - completed_at < 1.5  # woken by the notice, not by a recheck


def test_a_long_poll_take_on_one_server_wakes_for_a_put_on_the_other(
    servers: tuple[str, str],
) -> None:
    a, b = servers
    taken: list[httpx.Response] = []
    taker = threading.Thread(
        target=lambda: taken.append(
            httpx.post(f"{a}/v1/tasks/take", json={"queues": ["p"], "wait": 20}, timeout=30)
        )
    )
    taker.start()
    time.sleep(0.3)  # the take is waiting
    put_at = time.monotonic()
    assert httpx.post(f"{b}/v1/tasks", json={"queue": "p", "data": 7}).status_code == 202
    taker.join(30)
    assert time.monotonic() - put_at < 1.5
    (answer,) = taken
    assert [t["data"] for t in answer.json()["tasks"]] == [7]
