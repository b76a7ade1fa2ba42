"""Redis Cluster and Redis Sentinel, failed over for real under load.

A fleet of worker processes (``ha_worker.py``), each a TokenSession with
several threads calling the API, shares one token through a 3-master Redis
Cluster (``RedisCluster`` client) or a Sentinel-managed master
(``Sentinel(...).master_for(...)`` and ``redis+sentinel://``). Mid-run the
master holding the token is killed (SIGKILL) and every token is revoked, so
that every process needs the storage during the outage; a replica is
promoted; then every token is revoked again. Counted: failed requests (0),
token requests on the cold start (1, for the whole fleet), during the outage
(at most one per process) and after the failover (1 again: the single
flight works on the promoted master).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from alf_session import (
    ClientCredentials,
    MemoryStorage,
    RedisStorage,
    TokenManager,
    storage_from_url,
)
from alf_session._servers import APIServer, TokenServer

from .redis_ha import ClusterDeployment, SentinelDeployment

WORKER = str(Path(__file__).with_name("ha_worker.py"))
THREADS = 4


def need_binary(name: str) -> None:
    """Skip without ``name`` (fail under ``CI=true``: CI runs every storage test)."""
    if shutil.which(name) is None:
        reason = f"{name} is not installed (apt-get install redis-server redis-tools)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true requires every storage test to run")
        pytest.skip(reason)


def wait_until(predicate: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:g}s")
        time.sleep(0.02)


class Fleet:
    """Worker processes on one storage, driven over their stdin and stdout."""

    def __init__(self, idp: TokenServer, api: APIServer, specs: list[str]) -> None:
        env = dict(
            os.environ,
            ALF_TOKEN_ENDPOINT=idp.token_url,
            ALF_CLIENT_ID=idp.client_id,
            ALF_CLIENT_SECRET=idp.client_secret,
            ALF_API_URL=api.base_url + "/orders",
            PYTHONPATH=str(Path(__file__).parent.parent),
        )
        self.processes = [
            subprocess.Popen(
                [sys.executable, WORKER, spec, str(THREADS)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                text=True,
            )
            for spec in specs
        ]
        for process in self.processes:
            assert self._read(process) == "ready"

    @staticmethod
    def _read(process: subprocess.Popen[str]) -> str:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, f"worker exited with {process.poll()}"
        return line.strip()

    def tell(self, command: str) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(command + "\n")
            process.stdin.flush()

    def healthy(self) -> bool:
        self.tell("health")
        answers = [self._read(p) for p in self.processes]  # every answer, then judge
        return answers == ["health true"] * len(self.processes)

    def stop(self) -> list[dict[str, Any]]:
        self.tell("stop")
        reports = []
        for process in self.processes:
            reports.append(json.loads(self._read(process)))
            assert process.wait(60) == 0
        return reports

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()


@pytest.fixture
def fleet_servers() -> Iterator[tuple[TokenServer, APIServer]]:
    with TokenServer("ha-tests", "ha-secret-9e1f", expires_in=3600) as idp, APIServer(idp) as api:
        yield idp, api


def run_failover(
    idp: TokenServer,
    api: APIServer,
    specs: list[str],
    kill_master: Callable[[], object],
    wait_for_failover: Callable[[object], object],
) -> None:
    fleet = Fleet(idp, api, specs)
    try:
        fleet.tell("go")
        calls = api.calls
        wait_until(lambda: api.calls >= calls + 200, "the fleet warming up")
        assert idp.count == 1  # one token for the whole fleet, cold

        killed = kill_master()
        idp.revoke()  # every process needs the storage during the outage
        calls = api.calls
        wait_until(lambda: api.calls >= calls + 200, "requests going on without the master")
        wait_for_failover(killed)
        wait_until(fleet.healthy, "every process using the storage again")
        during = idp.count
        assert 2 <= during <= 1 + len(specs)  # at most one token per process in the outage

        idp.revoke()  # all together again, on the promoted master
        calls = api.calls
        wait_until(lambda: api.calls >= calls + 300, "the fleet renewing after the failover")
        reports = fleet.stop()
    finally:
        fleet.kill()
    assert [r["failures"] for r in reports] == [[]] * len(specs)
    assert all(set(r["statuses"]) == {"200"} for r in reports), reports
    assert idp.count == during + 1  # single flight across processes, on the new master
    assert sum(r["stats"]["fetches"] for r in reports) == idp.count
    assert sum(r["stats"]["retries_on_401"] for r in reports) >= 2 * len(specs)


def shared_key(idp: TokenServer) -> str:
    """The key the fleet's credential is stored under (the default prefix)."""
    provider = ClientCredentials(idp.token_url, idp.client_id, idp.client_secret)
    key = TokenManager(provider, MemoryStorage())._key
    assert key is not None
    return key


@pytest.mark.timeout(180)
def test_redis_cluster_failover_under_load_fails_no_request(
    tmp_path: Path, fleet_servers: tuple[TokenServer, APIServer]
) -> None:
    need_binary("redis-server")
    need_binary("redis-cli")
    idp, api = fleet_servers
    with ClusterDeployment(tmp_path) as cluster:
        spec = "cluster:" + ",".join(f"{h}:{p}" for h, p in cluster.startup_nodes)
        key = shared_key(idp)
        run_failover(
            idp,
            api,
            [spec] * 3,
            lambda: cluster.kill_master(key),
            lambda old: cluster.wait_for_failover(key, old),  # type: ignore[arg-type]
        )


@pytest.mark.timeout(180)
def test_redis_sentinel_failover_under_load_fails_no_request(
    tmp_path: Path, fleet_servers: tuple[TokenServer, APIServer]
) -> None:
    need_binary("redis-server")
    idp, api = fleet_servers
    with SentinelDeployment(tmp_path) as sentinels:
        hosts = ",".join(f"{h}:{p}" for h, p in sentinels.sentinel_addresses)
        client_spec = f"sentinel:{hosts}/{sentinels.service}"
        # Two processes from the URL, one with the client built by hand.
        run_failover(
            idp,
            api,
            [sentinels.url, sentinels.url, client_spec],
            sentinels.kill_master,
            lambda old: sentinels.wait_for_failover(old),  # type: ignore[arg-type]
        )


def test_redis_sentinel_url(tmp_path: Path, fleet_servers: tuple[TokenServer, APIServer]) -> None:
    need_binary("redis-server")
    idp, _ = fleet_servers
    with SentinelDeployment(tmp_path) as sentinels:
        storage = storage_from_url(sentinels.url, timeout=0.5)
        assert isinstance(storage, RedisStorage)
        assert (
            repr(storage)
            == f"RedisStorage(sentinel service {sentinels.service!r}, prefix='alf_session:')"
        )
        provider = ClientCredentials(idp.token_url, idp.client_id, idp.client_secret)
        token = TokenManager(provider, storage).get_token()
        again = TokenManager(provider, storage_from_url(sentinels.url))
        assert again.get_token() == token
        assert idp.count == 1
        master = sentinels.master.client()
        assert master.exists(again._key)
        master.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://127.0.0.1:26379", "names the master's service"),
        ("redis+sentinel://127.0.0.1:26379/", "names the master's service"),
        ("redis+sentinel://127.0.0.1:26379/svc/x", "is a number"),
        ("redis+sentinel://127.0.0.1:99999/svc", "bad sentinel port '99999'"),
        ("redis+sentinel://:s3cret@127.0.0.1:x/svc", "bad sentinel port 'x'"),
        ("redis+sentinel://127.0.0.1/svc?socket_timeout=soon", "number of seconds"),
        ("redis+sentinel://127.0.0.1/svc?colour=blue", "unknown option 'colour'"),
        ("redis+sentinel://,/svc", "host:port, separated by commas"),
    ],
)
def test_redis_sentinel_url_errors_say_what_is_wrong(url: str, message: str) -> None:
    from alf_session import ConfigurationError

    with pytest.raises(ConfigurationError, match=message) as info:
        storage_from_url(url)
    assert "s3cret" not in str(info.value)


def test_redis_sentinel_url_options_reach_the_client() -> None:
    storage = storage_from_url(
        "rediss+sentinel://app:pw@[::1]:26380,sentinel-2/orders/3"
        "?sentinel_password=sp&socket_timeout=0.25",
        timeout=1.5,
    )
    assert isinstance(storage, RedisStorage)
    pool = storage.client.connection_pool
    assert pool.service_name == "orders"
    options = pool.connection_kwargs
    assert (options["db"], options["username"], options["password"]) == (3, "app", "pw")
    assert (options["socket_timeout"], options["socket_connect_timeout"]) == (0.25, 1.5)
    sentinels = pool.sentinel_manager.sentinels
    addresses = [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in sentinels
    ]
    assert addresses == [("::1", 26380), ("sentinel-2", 26379)]
    assert sentinels[0].connection_pool.connection_kwargs["password"] == "sp"
    assert "pw" not in repr(storage) and "sp" not in repr(storage)
