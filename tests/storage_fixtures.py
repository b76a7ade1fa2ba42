"""Fixtures of the storage tests: private redis-server and memcached, real auth servers.

Loaded as a plugin by the ``tests/test_storage*.py`` modules
(``pytest_plugins = ["tests.storage_fixtures"]``), so each server starts once per
test session, on a free port, and is torn down at its end.

``redis_server``      a private ``redis-server`` (no persistence), session-wide
``redis_client``      a client of it, the database flushed for each test
``redis_cluster``     a private one-node Redis Cluster, session-wide
``memcached_server``  a private ``memcached`` (no UDP), session-wide
``spare_redis``       a private ``redis-server`` for one test, to kill and restart
``idp``               a :class:`TokenServer` on the real clock, for one test
``idp_api``           an :class:`APIServer` trusting ``idp``
``credentials``       makes a :class:`ClientCredentials` that ``idp`` accepts

Test modules don't import this module (pytest could not rewrite its asserts
then); they name it in ``pytest_plugins`` and import its types under
``TYPE_CHECKING`` only.

A missing binary skips the tests that need it, except with ``CI=true``,
where it fails them: CI must run every storage test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from alf_session import ClientCredentials
from alf_session._servers import APIServer, TokenServer

CLIENT_ID = "storage-tests"
CLIENT_SECRET = "s3cret-never-stored-5f0c1e77"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def need_binary(name: str) -> str:
    """The path of ``name``; skip (fail under ``CI=true``) without it."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (apt-get install {name})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true requires every storage test to run")
        pytest.skip(reason)
    return path


def _wait_for_port(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    process.kill()
    raise RuntimeError(f"{name} did not listen on port {port} within 10s")


class Server:
    """One private server process on a fixed port: start, kill, start again."""

    name = "server"

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, self.process, self.name)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    stop = kill


class RedisServer(Server):
    name = "redis-server"

    def __init__(self, binary: str, workdir: Path, *, cluster: bool = False) -> None:
        super().__init__(binary, workdir)
        self.cluster = cluster
        while cluster and self.port > 55535:
            # The cluster bus listens on port + 10000, which must exist too.
            self.port = free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
        ]  # fmt: skip
        if self.cluster:
            command += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        return command

    def client(self, **options: Any) -> Any:
        import redis

        options.setdefault("socket_timeout", 5)
        return redis.Redis(host="127.0.0.1", port=self.port, **options)

    def start(self) -> None:
        super().start()
        if self.cluster:
            admin = self.client()
            admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            deadline = time.monotonic() + 10
            while b"cluster_state:ok" not in admin.execute_command("CLUSTER", "INFO"):
                if time.monotonic() > deadline:
                    raise RuntimeError("one-node Redis Cluster did not become ready")
                time.sleep(0.05)
            admin.close()


class MemcachedServer(Server):
    name = "memcached"

    def command(self) -> list[str]:
        command = [self.binary, "-p", str(self.port), "-l", "127.0.0.1", "-U", "0"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command += ["-u", "root"]  # memcached refuses to run as root otherwise
        return command

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def _started(server: Server) -> Iterator[Any]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = need_binary("redis-server")
    yield from _started(RedisServer(binary, tmp_path_factory.mktemp("redis")))


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = need_binary("redis-server")
    yield from _started(RedisServer(binary, tmp_path_factory.mktemp("cluster"), cluster=True))


@pytest.fixture
def spare_redis(tmp_path: Path) -> Iterator[RedisServer]:
    binary = need_binary("redis-server")
    yield from _started(RedisServer(binary, tmp_path))


@pytest.fixture(scope="session")
def memcached_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemcachedServer]:
    binary = need_binary("memcached")
    yield from _started(MemcachedServer(binary, tmp_path_factory.mktemp("memcached")))


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[Any]:
    client = redis_server.client()
    client.flushall()
    client.config_resetstat()
    yield client
    client.close()


@pytest.fixture
def idp() -> Iterator[TokenServer]:
    with TokenServer(CLIENT_ID, CLIENT_SECRET, expires_in=3600) as server:
        yield server


@pytest.fixture
def idp_api(idp: TokenServer) -> Iterator[APIServer]:
    with APIServer(idp) as server:
        yield server


@pytest.fixture
def credentials(idp: TokenServer) -> Callable[..., ClientCredentials]:
    """Makes the credential ``idp`` accepts (``scope``, ``audience``… as options)."""

    def make(**options: Any) -> ClientCredentials:
        return ClientCredentials(idp.token_url, CLIENT_ID, CLIENT_SECRET, **options)

    return make
