"""A Redis Cluster of three masters on loopback ports, started and stopped by the tests.

Each node is a `redis-server --cluster-enabled yes` process in a directory of its own
(no persistence); `redis-cli --cluster create` assigns the slots. Tests need the two
binaries: without them they skip, and under CI=true they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests._server import free_port

STARTUP_S = 30.0
BINARIES = ("redis-server", "redis-cli")


def require_binaries() -> None:
    """Skip unless redis-server and redis-cli are installed; under CI=true, fail instead."""
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if not missing:
        return
    message = f"Redis Cluster tests need {' and '.join(missing)} on PATH"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must run every engine", pytrace=False)
    pytest.skip(message)


class Cluster:
    """The running nodes: their ports and processes."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        self.directory = directory
        self.ports = [free_port() for _ in range(size)]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def seeds(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def url(self, prefix: str) -> str:
        """The engine URL of the cluster with key prefix `prefix`."""
        return f"redis+cluster://{self.seeds}/?prefix={prefix}"

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)

    def start_node(self, port: int) -> None:
        home = self.directory / str(port)
        home.mkdir(exist_ok=True)
        command = [
            "redis-server",
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-port", str(free_port()),
            "--cluster-config-file", str(home / "nodes.conf"),
            "--cluster-node-timeout", "5000",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(home),
            "--logfile", str(home / "redis.log"),
        ]  # fmt: skip
        self.processes[port] = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                with self.client(port) as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if self.processes[port].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not start") from None
                time.sleep(0.05)

    def start(self) -> None:
        """Start every node, create the cluster, and wait until every node says it is ok."""
        for port in self.ports:
            self.start_node(port)
        subprocess.run(
            [
                "redis-cli", "--cluster", "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=STARTUP_S,
        )  # fmt: skip
        self.wait_until_ok()

    def wait_until_ok(self, ports: list[int] | None = None) -> None:
        """Until `cluster_state:ok` and a full slot map on every node of `ports` (default all)."""
        deadline = time.monotonic() + STARTUP_S
        for port in ports or self.ports:
            with self.client(port) as client:
                while True:
                    info = client.execute_command("CLUSTER", "INFO").decode()
                    if "cluster_state:ok" in info and "cluster_slots_ok:16384" in info:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"node {port} never reached cluster_state:ok:\n{info}")
                    time.sleep(0.05)

    def kill(self, port: int) -> None:
        process = self.processes.pop(port)
        process.kill()
        process.wait()

    def stop(self) -> None:
        for port in list(self.processes):
            self.kill(port)

    def node_of(self, key: str) -> int:
        """The port of the master holding `key`'s slot (asked of the cluster)."""
        with self.client(self.ports[0]) as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise AssertionError(f"no master serves slot {slot}")

    def node_id(self, port: int) -> str:
        with self.client(port) as client:
            return str(client.execute_command("CLUSTER", "MYID").decode())

    def keys(self, pattern: str) -> dict[int, list[bytes]]:
        """The keys matching `pattern` on each node, by port."""
        found: dict[int, list[bytes]] = {}
        for port in self.processes:
            with self.client(port) as client:
                found[port] = list(client.scan_iter(match=pattern, count=1000))
        return found

    def delete(self, prefixes: list[str]) -> None:
        """Delete every key under `prefixes`, node by node (one key per DEL: any slot)."""
        for prefix in prefixes:
            for port, keys in self.keys(f"{prefix}:*").items():
                with self.client(port) as client:
                    pipe = client.pipeline(transaction=False)
                    for key in keys:
                        pipe.delete(key)
                    pipe.execute()

    def move_slot(self, slot: int, target: int, *, finish: bool = True) -> None:
        """Migrate `slot` with its keys to the master on port `target` (CLUSTER SETSLOT and
        MIGRATE, as `redis-cli --cluster reshard` does). With `finish=False` the slot is
        left migrating, its keys already on the target: the source answers ASK."""
        source = self.node_of_slot(slot)
        source_id, target_id = self.node_id(source), self.node_id(target)
        with self.client(source) as src, self.client(target) as dst:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
        if finish:
            self.finish_move(slot, target)

    def finish_move(self, slot: int, target: int) -> None:
        target_id = self.node_id(target)
        for port in [target, *(p for p in self.processes if p != target)]:
            with self.client(port) as client:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        self.wait_until_ok()

    def node_of_slot(self, slot: int) -> int:
        with self.client(self.ports[0]) as client:
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise AssertionError(f"no master serves slot {slot}")


@contextmanager
def running_cluster(directory: Path, size: int = 3) -> Iterator[Cluster]:
    """A fresh cluster of `size` masters in `directory`, stopped afterwards."""
    require_binaries()
    cluster = Cluster(directory, size)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
