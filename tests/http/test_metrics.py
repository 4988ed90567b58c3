"""/metrics in Prometheus' text format: task counters, depth, latency, waiters."""

from __future__ import annotations

import httpx


def _value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, or 0 when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(part in line for part in wanted.split(",")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_tasks_and_show_depth(client: httpx.AsyncClient, queue: str) -> None:
    for _ in range(3):
        assert (
            await client.post("/v1/tasks", json={"queue": queue, "level": 2})
        ).status_code == 202
    taken = (await client.post("/v1/tasks/take", json={"queues": [queue], "size": 2})).json()[
        "tasks"
    ]
    first, second = taken
    await client.post(
        f"/v1/tasks/{first['task_id']}/complete", json={"lease_id": first["lease_id"]}
    )
    await client.post(
        "/v1/tasks/complete",
        json={"items": [{"task_id": second["task_id"], "lease_id": second["lease_id"]}]},
    )

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert _value(text, "conveyor_tasks_put_total", queue=queue) == 3
    assert _value(text, "conveyor_tasks_taken_total", queue=queue) == 2
    assert _value(text, "conveyor_tasks_completed_total", queue=queue) == 2
    assert _value(text, "conveyor_queue_tasks", queue=queue, level="2", state="queued") == 1
    assert _value(text, "conveyor_queue_tasks", queue=queue, level="2", state="succeeded") == 2
    # latency is labelled by route template, never by task id
    assert 'route="/v1/tasks/{task_id}/complete"' in text
    assert first["task_id"] not in text
    assert "conveyor_open_waiters" in text
