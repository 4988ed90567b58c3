"""API keys and projects: isolation between projects, worker keys, admin keys."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests._server import CONVEYOR, environment, running_server

KEYS = {
    "CONVEYOR_API_KEYS": "acme-key=acme,globex-key=globex",
    "CONVEYOR_WORKER_KEYS": "acme-worker=acme",
    "CONVEYOR_ADMIN_KEYS": "root-key",
}


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(tmp_path_factory.mktemp("keyed"), env=KEYS) as url:
        yield url


def _as(url: str, key: str | None, **headers: str) -> httpx.Client:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.Client(base_url=url, headers=headers, timeout=10)


def test_requests_without_a_valid_key_are_refused(keyed_server: str) -> None:
    for key in (None, "wrong"):
        with _as(keyed_server, key) as http:
            answer = http.get("/v1/queues")
            assert answer.status_code == 401
            assert answer.json()["error"]["code"] == "invalid_api_key"
    with _as(keyed_server, None) as http:  # health and the schema stay open
        assert http.get("/livez").status_code == 200
        assert http.get("/openapi.json").status_code == 200


def test_projects_do_not_see_each_other(keyed_server: str) -> None:
    with _as(keyed_server, "acme-key") as acme, _as(keyed_server, "globex-key") as globex:
        put = acme.post("/v1/tasks", json={"queue": "jobs", "data": {"secret": 1}})
        assert put.status_code == 202
        task_id = put.json()["task_id"]
        assert put.json()["queue"] == "jobs"  # the project's own name, not the stored one
        assert acme.get(f"/v1/tasks/{task_id}").status_code == 200
        # another project: the task and the queue do not exist
        assert globex.get(f"/v1/tasks/{task_id}").status_code == 404
        assert globex.post(f"/v1/tasks/{task_id}/cancel").status_code == 404
        assert globex.get(f"/v1/tasks/{task_id}/events").status_code == 404
        assert globex.get("/v1/queues/jobs").status_code == 404
        assert [q["name"] for q in globex.get("/v1/queues").json()["data"]] == []
        assert globex.post("/v1/tasks/take", json={"queues": ["jobs"]}).json()["tasks"] == []
        # the same queue name in another project is another queue
        globex.post("/v1/tasks", json={"queue": "jobs", "data": 2})
        assert [q["name"] for q in acme.get("/v1/queues").json()["data"]] == ["jobs"]
        listed = acme.get("/v1/tasks", params={"queue": "jobs"}).json()["data"]
        assert [t["task_id"] for t in listed] == [task_id]


def test_worker_keys_may_only_work(keyed_server: str) -> None:
    with _as(keyed_server, "acme-key") as acme, _as(keyed_server, "acme-worker") as worker:
        acme.post("/v1/tasks", json={"queue": "work", "data": 1})
        assert worker.post("/v1/tasks", json={"queue": "work"}).status_code == 403
        assert worker.get("/v1/queues").status_code == 403
        (task,) = worker.post("/v1/tasks/take", json={"queues": ["work"]}).json()["tasks"]
        assert task["queue"] == "work"
        done = worker.post(
            f"/v1/tasks/{task['task_id']}/complete", json={"lease_id": task["lease_id"]}
        )
        assert done.status_code == 200
        assert acme.get(f"/v1/tasks/{task['task_id']}").json()["status"] == "succeeded"


def test_admin_keys_act_for_a_named_project_and_read_metrics(keyed_server: str) -> None:
    with _as(keyed_server, "acme-key") as acme:
        task_id = acme.post("/v1/tasks", json={"queue": "audit", "data": 1}).json()["task_id"]
        assert acme.get("/metrics").status_code == 403
    with _as(keyed_server, "root-key", **{"X-Conveyor-Project": "acme"}) as admin:
        assert admin.get(f"/v1/tasks/{task_id}").json()["queue"] == "audit"
        assert admin.get("/metrics").status_code == 200
    with _as(keyed_server, "root-key", **{"X-Conveyor-Project": "not a project"}) as admin:
        assert admin.get("/v1/queues").status_code == 400


def test_malformed_keys_stop_the_server_from_starting(tmp_path: Path) -> None:
    run = subprocess.run(
        [CONVEYOR, "serve", "--data-dir", str(tmp_path)],
        env=environment(CONVEYOR_API_KEYS="no-project-here"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert "key=project" in run.stderr
