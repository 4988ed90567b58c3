"""The client commands of `conveyor`, run as a user would: in a subprocess, `--json` parsed."""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from conveyor import Client, TaskStatus
from tests._server import CONVEYOR, environment, stop_process

COMMAND_TIMEOUT_S = 30.0


def cli(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `conveyor ARGS` with `env` on top of a clean environment."""
    return subprocess.run(
        [CONVEYOR, *args],
        env=environment(**env),
        capture_output=True,
        text=True,
        input=stdin,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def conveyor(server: str, *args: str, code: int = 0, stdin: str | None = None) -> str:
    """Run `conveyor ARGS` against `server` (found by CONVEYOR_URL); its stdout."""
    done = cli(*args, stdin=stdin, CONVEYOR_URL=server)
    assert done.returncode == code, done.stderr or done.stdout
    return done.stdout


def as_json(server: str, *args: str) -> Any:
    return json.loads(conveyor(server, *args, "--json"))


def at_once(*commands: tuple[str, ...]) -> list[str]:
    """Run independent commands side by side (each pays the interpreter's start-up)."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: conveyor(*args), commands))


def test_queue_commands(server: str, queue: str, client: Client) -> None:
    registered = as_json(server, "queue", "register", queue, "--lease", "15", "--max-attempts", "4")
    assert (registered["name"], registered["process_timeout"]) == (queue, 15)
    assert registered["max_attempts"] == 4

    client.put(queue, 1, level=2)
    listed, stats_table = at_once(
        (server, "queue", "list", "--json"),
        (server, "queue", "stats", queue),  # the table for people
    )
    assert queue in {q["name"] for q in json.loads(listed)}
    assert "queued" in stats_table
    (level,) = as_json(server, "queue", "stats", queue)["levels"]
    assert (level["level"], level["counts"]) == (2, {"queued": 1})

    assert as_json(server, "queue", "pause", queue)["paused"] is True
    assert as_json(server, "queue", "resume", queue)["paused"] is False
    deleted = as_json(server, "queue", "obliterate", queue, "--yes")
    assert deleted["tasks_deleted"] == 1


def test_task_commands(server: str, queue: str) -> None:
    put = as_json(
        server, "task", "put", queue, '{"prompt": "hi"}', "--level", "1", "--custom-id", "c7"
    )
    assert (put["queue"], put["level"], put["data"]) == (queue, 1, {"prompt": "hi"})
    task_id = put["task_id"]

    got, table = at_once(
        (server, "task", "get", task_id, "--json"),
        (server, "task", "list", queue),  # the table for people
    )
    got_task = json.loads(got)
    assert (got_task["task_id"], got_task["custom_id"], got_task["status"]) == (
        task_id,
        "c7",
        "queued",
    )
    assert task_id in table

    assert as_json(server, "task", "cancel", task_id)["status"] == "cancelled"
    assert as_json(server, "task", "list", queue, "--status", "queued")["data"] == []


def test_task_put_reads_data_from_stdin(server: str, queue: str) -> None:
    out = conveyor(server, "task", "put", queue, "-", "--json", stdin="[1, 2, 3]")
    assert json.loads(out)["data"] == [1, 2, 3]


def test_errors_exit_non_zero_with_the_reason(server: str, queue: str) -> None:
    commands = {
        # (exit code, what stderr says): the command
        (1, "NotFound"): ("task", "get", "no-such-task", "--server", server),
        (1, "cannot reach the server"): ("queue", "list", "--server", "http://127.0.0.1:9"),
        (2, "DATA must be JSON"): ("task", "put", queue, "not json", "--server", server),
        (2, "cannot import"): ("worker", "nomodule_here:handler", "-q", queue, "--server", server),
        (2, "MODULE:NAME"): ("worker", "json", "--queues", queue, "--server", server),
    }
    with ThreadPoolExecutor(len(commands)) as pool:
        done = list(pool.map(lambda args: cli(*args), commands.values()))
    for (code, message), result in zip(commands, done, strict=True):
        assert result.returncode == code, (result.args, result.stderr)
        assert message in result.stderr, (result.args, result.stderr)


HANDLERS = """
import time

from conveyor.sdk import progress

def slow(task):
    progress({"got": task.data})
    time.sleep(float(task.data.get("sleep", 0)))
    return {"handled": task.data}
"""


def _wait_for(check: Any, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_worker_command_answers_blocking_puts_and_stops_gracefully_on_sigterm(
    server: str, queue: str, client: Client, tmp_path: Path
) -> None:
    (tmp_path / "cli_handlers.py").write_text(textwrap.dedent(HANDLERS))
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [CONVEYOR, "worker", "cli_handlers:slow", "--queues", queue, "--concurrency", "2"],
            cwd=tmp_path,
            env=environment(CONVEYOR_URL=server),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        answer = as_json(
            server, "task", "put", queue, '{"n": 1}', "--mode", "blocking", "--timeout", "20"
        )
        assert answer == {"status_code": 200, "body": {"handled": {"n": 1}}}
        streamed = conveyor(
            server, "task", "put", queue, '{"n": 2}', "--mode", "streaming", "--json"
        )
        messages = [json.loads(line) for line in streamed.splitlines()]
        assert [m["event"] for m in messages] == ["progress", "result"]
        assert messages[0]["data"] == {"got": {"n": 2}}
        assert messages[1]["data"]["result"]["body"] == {"handled": {"n": 2}}
        people = conveyor(server, "task", "put", queue, '{"n": 3}', "--mode", "streaming")
        assert people.splitlines() == [
            'progress: {"got":{"n":3}}',
            'succeeded: {"handled":{"n":3}}',
        ]

        slow = client.put(queue, {"sleep": 1})
        _wait_for(lambda: client.get_task(slow.task_id).status is TaskStatus.RUNNING)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0, log.read_text()
        done = client.get_task(slow.task_id)
        assert done.status is TaskStatus.SUCCEEDED  # the running task was finished
        assert done.result is not None
        assert done.result.body == {"handled": {"sleep": 1}}
    finally:
        stop_process(worker)
    assert "stopped" in log.read_text()


def test_worker_command_exits_when_drained(
    server: str, queue: str, client: Client, tmp_path: Path
) -> None:
    (tmp_path / "cli_handlers.py").write_text(textwrap.dedent(HANDLERS))
    ids = [client.put(queue, {"n": n}).task_id for n in range(5)]
    done = subprocess.run(
        [
            CONVEYOR,
            "worker",
            "cli_handlers:slow",
            "-q",
            f"{queue}:0",
            "--strategy",
            "fair",
            "--exit-when-drained",
            "--server",
            server,
        ],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert all(client.get_task(i).status is TaskStatus.SUCCEEDED for i in ids)
