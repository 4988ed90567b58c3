"""`conveyor serve --engine redis+cluster://…`: a task put, taken and completed over HTTP,
with queues on several nodes of the session's Redis Cluster."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests._cluster import Cluster
from tests._server import running_server
from tests.conftest import redis_cluster


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Cluster, str]]:
    """A server on the cluster under a prefix of its own (its keys deleted afterwards)."""
    cluster = redis_cluster()
    prefix = f"tserve{secrets.token_hex(6)}"
    try:
        with running_server(tmp_path, "--engine", cluster.url(prefix)) as url:
            yield url, cluster, prefix
    finally:
        cluster.delete([prefix])


def test_put_take_and_complete_over_http(server: tuple[str, Cluster, str]) -> None:
    url, cluster, prefix = server
    queues = [f"q{i}" for i in range(6)]
    with httpx.Client(base_url=url, timeout=15.0) as http:
        assert http.get("/readyz").status_code == 200
        put = {
            q: http.post("/v1/tasks", json={"queue": q, "data": {"q": q}}).json()["task_id"]
            for q in queues
        }
        taken = http.post("/v1/tasks/take", json={"queues": queues, "size": 10}).json()["tasks"]
        assert sorted(t["task_id"] for t in taken) == sorted(put.values())
        for task in taken:
            done = http.post(
                f"/v1/tasks/{task['task_id']}/complete",
                json={"lease_id": task["lease_id"], "result": {"body": task["data"]}},
            )
            assert done.status_code == 200, done.text
        for queue, task_id in put.items():
            seen = http.get(f"/v1/tasks/{task_id}").json()
            assert seen["status"] == "succeeded"
            assert seen["result"]["body"] == {"q": queue}
    holders = [port for port, keys in cluster.keys(f"{prefix}:*").items() if keys]
    assert len(holders) >= 2, holders
