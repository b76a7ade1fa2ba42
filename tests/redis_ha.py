"""Private Redis Cluster and Sentinel deployments that tests can fail over.

Not a test module. Each deployment is made of real ``redis-server``
processes on free loopback ports, in a temporary directory, without
persistence, and is torn down by :meth:`close`:

* :class:`ClusterDeployment`: three masters and one replica each, built with
  ``redis-cli --cluster create`` as an operator would;
* :class:`SentinelDeployment`: a master, a replica and three sentinels
  (quorum 2), the way Sentinel is documented to run.

``kill_master`` kills a master process outright (SIGKILL: no goodbye to
anyone) and ``wait_for_failover`` waits until its replica has been promoted.
Timeouts are short (a node is judged down after 500 ms) so that a failover
takes a second or two instead of the production default of tens of seconds.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["ClusterDeployment", "SentinelDeployment"]

_NODE_TIMEOUT_MS = 500


def _wait(predicate: Any, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:  # a server still starting
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not happen within {seconds:g}s (last error: {last!r})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port(upper: int = 55535) -> int:
    # A cluster node's bus listens on port + 10000, which must exist too.
    while True:
        port = free_port()
        if port <= upper:
            return port


class _Node:
    """One redis-server process (or a sentinel, with ``--sentinel``)."""

    def __init__(self, binary: str, workdir: Path, args: list[str], *, sentinel: bool = False):
        self.binary = binary
        self.port = _port()
        self.workdir = workdir / str(self.port)
        self.workdir.mkdir(parents=True)
        self.args = args
        self.sentinel = sentinel
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        common = [
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
        ]  # fmt: skip
        if self.sentinel:
            config = self.workdir / "sentinel.conf"
            config.write_text("\n".join(self.args) + "\n")
            command = [self.binary, str(config), "--sentinel", *common]
        else:
            command = [self.binary, *common, "--save", "", "--appendonly", "no", *self.args]
        self.process = subprocess.Popen(
            command, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait(lambda: self.client().ping(), f"redis on port {self.port} answering", 10)

    def client(self, **options: Any) -> Any:
        import redis

        options.setdefault("socket_timeout", 2)
        options.setdefault("socket_connect_timeout", 2)
        return redis.Redis(host="127.0.0.1", port=self.port, **options)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class _Deployment:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.nodes: list[_Node] = []

    def close(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ClusterDeployment(_Deployment):
    """Three masters with one replica each, made by ``redis-cli --cluster create``."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (apt-get install redis-tools)")
        args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(_NODE_TIMEOUT_MS),
            # A replica may be promoted however long it was cut off: the test
            # kills masters, not networks.
            "--cluster-replica-validity-factor", "0",
        ]  # fmt: skip
        try:
            for _ in range(6):
                node = _Node(self.binary, workdir, args)
                self.nodes.append(node)
                node.start()
            nodes = [f"127.0.0.1:{node.port}" for node in self.nodes]
            create = [
                cli,
                "--cluster",
                "create",
                *nodes,
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ]
            subprocess.run(
                create,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
            )
            _wait(self._ready, "the cluster becoming ready", 30)
        except BaseException:
            self.close()
            raise

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", node.port) for node in self.nodes]

    def _ready(self) -> bool:
        for node in self.nodes:
            if not node.alive:
                continue
            with node.client() as client:
                info = client.execute_command("CLUSTER", "INFO")
                if isinstance(info, bytes):
                    info = info.decode()
                if "cluster_state:ok" not in str(info):
                    return False
                replicas = sum(
                    1 for line in self._nodes_lines(client) if "slave" in line.split()[2]
                )
                if replicas != 3:
                    return False
        return True

    @staticmethod
    def _nodes_lines(client: Any) -> list[str]:
        raw = client.execute_command("CLUSTER", "NODES")
        if isinstance(raw, dict):  # some redis-py versions parse it
            return [
                f"{node_id} {address} {info.get('flags', '')}"
                for address, info in raw.items()
                for node_id in [info.get("node_id", "")]
            ]
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return [line for line in text.splitlines() if line.strip()]

    def master_of(self, key: str) -> _Node:
        """The live node that serves ``key``'s slot as master."""
        for node in self.nodes:
            if not node.alive:
                continue
            with node.client() as client:
                slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
                for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = int(master[1])
                        return next(n for n in self.nodes if n.port == port)
        raise RuntimeError("no live node answers")

    def kill_master(self, key: str) -> _Node:
        master = self.master_of(key)
        master.kill()
        return master

    def wait_for_failover(self, key: str, old: _Node, seconds: float = 30.0) -> _Node:
        """Wait until a live replica serves ``key``'s slot, and the cluster is ok again."""

        def promoted() -> bool:
            node = self.master_of(key)
            if node is old or not node.alive:
                return False
            with node.client() as client:
                info = client.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                return "cluster_state:ok" in text

        _wait(promoted, "a replica taking over from the killed master", seconds)
        return self.master_of(key)


class SentinelDeployment(_Deployment):
    """A master, one replica and three sentinels watching them (quorum 2)."""

    service = "alfmaster"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        try:
            self.master = _Node(self.binary, workdir, [])
            self.nodes.append(self.master)
            self.master.start()
            self.replica = _Node(
                self.binary, workdir, ["--replicaof", "127.0.0.1", str(self.master.port)]
            )
            self.nodes.append(self.replica)
            self.replica.start()
            _wait(self._replica_in_sync, "the replica syncing with the master")
            config = [
                f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 2",
                f"sentinel down-after-milliseconds {self.service} {_NODE_TIMEOUT_MS}",
                f"sentinel failover-timeout {self.service} 5000",
                f"sentinel parallel-syncs {self.service} 1",
            ]
            self.sentinels = [_Node(self.binary, workdir, config, sentinel=True) for _ in range(3)]
            for sentinel in self.sentinels:
                self.nodes.append(sentinel)
                sentinel.start()
            _wait(self._sentinels_ready, "the sentinels finding the replica and each other", 30)
        except BaseException:
            self.close()
            raise

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", node.port) for node in self.sentinels]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def _replica_in_sync(self) -> bool:
        with self.replica.client() as client:
            return bool(client.info("replication").get("master_link_status") == "up")

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                master = client.execute_command("SENTINEL", "MASTER", self.service)
                fields = _pairs(master)
                if int(fields.get("num-slaves", 0)) < 1:
                    return False
                if int(fields.get("num-other-sentinels", 0)) < 2:
                    return False
        return True

    def master_port(self) -> int:
        """The master's port as a live sentinel reports it."""
        for sentinel in self.sentinels:
            if not sentinel.alive:
                continue
            with sentinel.client() as client:
                _, port = client.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
                )
                return int(port)
        raise RuntimeError("no sentinel answers")

    def kill_master(self) -> _Node:
        port = self.master_port()
        node = next(n for n in self.nodes if n.port == port)
        node.kill()
        return node

    def wait_for_failover(self, old: _Node, seconds: float = 30.0) -> _Node:
        """Wait until every sentinel names the promoted replica, which accepts writes."""

        def promoted() -> bool:
            ports = set()
            for sentinel in self.sentinels:
                with sentinel.client() as client:
                    _, port = client.execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
                    )
                    ports.add(int(port))
            if len(ports) != 1 or old.port in ports:
                return False
            node = next(n for n in self.nodes if n.port in ports)
            with node.client() as client:
                return bool(client.info("replication").get("role") == "master")

        _wait(promoted, "the sentinels promoting the replica", seconds)
        return next(n for n in self.nodes if n.port == self.master_port())


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(reply: Any) -> dict[str, Any]:
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    items = [_text(x) for x in reply]
    return dict(zip(items[::2], items[1::2], strict=False))


if __name__ == "__main__":  # a quick look by hand: python -m tests.redis_ha
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        with ClusterDeployment(Path(tmp) / "cluster") as cluster:
            print(f"cluster up in {time.monotonic() - started:.1f}s")
            old = cluster.kill_master("alf:{x}")
            started = time.monotonic()
            cluster.wait_for_failover("alf:{x}", old)
            print(f"cluster failover in {time.monotonic() - started:.1f}s")
        started = time.monotonic()
        with SentinelDeployment(Path(tmp) / "sentinel") as sentinels:
            print(f"sentinel set up in {time.monotonic() - started:.1f}s; {sentinels.url}")
            old = sentinels.kill_master()
            started = time.monotonic()
            sentinels.wait_for_failover(old)
            print(f"sentinel failover in {time.monotonic() - started:.1f}s")
    print("pid", os.getpid())
