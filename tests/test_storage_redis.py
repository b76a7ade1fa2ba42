"""RedisStorage against a private redis-server: hot path, locks, cluster slots, faults."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from alf_session import (
    ClientCredentials,
    RedisStorage,
    TokenManager,
    TokenSession,
    storage_from_url,
)
from alf_session._base import lock_key
from alf_session._servers import APIServer, TokenServer

from .helpers import storage_settled

if TYPE_CHECKING:
    from tests.storage_fixtures import RedisServer

pytest_plugins = ["tests.storage_fixtures"]

Credentials = Callable[..., ClientCredentials]


def redis_calls(client: Any) -> dict[str, int]:
    """Commands the server ran since the last CONFIG RESETSTAT, but INFO and CONFIG."""
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): entry["calls"]
        for name, entry in stats.items()
        if not name.startswith(("cmdstat_info", "cmdstat_config"))
    }


def test_a_valid_token_costs_no_redis_command(
    redis_server: RedisServer,
    redis_client: Any,
    idp: TokenServer,
    idp_api: APIServer,
    credentials: Credentials,
) -> None:
    client = redis_server.client()
    manager = TokenManager(credentials(), RedisStorage(client))
    url = idp_api.base_url + "/orders"
    with TokenSession(token_manager=manager) as session:
        assert session.get(url).status_code == 200  # cold: reads, locks, stores
        storage_settled(manager)  # the store and the release are off the request path
        cold = redis_calls(redis_client)
        redis_client.config_resetstat()
        for _ in range(199):
            assert session.get(url).status_code == 200
    assert redis_calls(redis_client) == {}
    # Cold: GET, SET NX PX (lock), GET (again, holding the lock), SET PX, EVALSHA
    # (release; the first one also SCRIPT LOADs), and the connection's HELLO.
    assert cold["set"] == 2, cold
    assert sum(cold.values()) <= 10, cold
    assert idp.count == 1
    assert idp_api.calls == 200
    client.close()


def test_stored_token_ttl_ends_with_the_token(
    redis_client: Any, idp: TokenServer, credentials: Credentials
) -> None:
    idp.expires_in = 300
    manager = TokenManager(credentials(), RedisStorage(redis_client))
    token = manager.get_token()
    storage_settled(manager)
    assert manager._key is not None
    ttl_ms = redis_client.pttl(manager._key)
    assert 0 < ttl_ms <= 300_000
    assert token.expires_at is not None
    assert time.time() + ttl_ms / 1000 <= token.expires_at + 0.01
    stored = json.loads(redis_client.get(manager._key))
    assert stored["access_token"] == token.access_token


def test_lock_is_set_nx_px_with_a_random_owner(redis_client: Any) -> None:
    storage = RedisStorage(redis_client)
    key = storage.key_for("abc")
    owner = storage.acquire_lock(key, 2.5)
    assert owner is not None and len(owner) == 32
    assert redis_client.get(lock_key(key)) == owner.encode()
    assert 0 < redis_client.pttl(lock_key(key)) <= 2500
    assert storage.acquire_lock(key, 2.5) is None
    storage.release_lock(key, "someone-else")
    assert redis_client.exists(lock_key(key))
    storage.release_lock(key, owner)
    assert not redis_client.exists(lock_key(key))


def test_compare_and_delete_is_done_by_the_server(redis_client: Any) -> None:
    storage = RedisStorage(redis_client)
    key = storage.key_for("abc")
    storage.save(key, "newer", None)
    storage.delete(key, "older")
    assert storage.load(key) == "newer"
    storage.delete(key, "newer")
    assert storage.load(key) is None
    # One script, run atomically by the server (the commands it runs are counted too).
    redis_client.config_resetstat()
    storage.delete(key, "x")
    assert set(redis_calls(redis_client)) <= {"evalsha", "script|load", "get", "del"}


def test_token_and_lock_share_a_cluster_slot(
    redis_cluster: RedisServer, credentials: Credentials
) -> None:
    from redis.cluster import RedisCluster

    client = RedisCluster(host="127.0.0.1", port=redis_cluster.port, socket_timeout=5)
    manager = TokenManager(credentials(), RedisStorage(client, prefix="svc:"))
    key = manager._key
    assert key is not None and key.startswith("svc:{")
    assert client.keyslot(key) == client.keyslot(lock_key(key))
    manager.get_token()
    storage_settled(manager)
    assert client.exists(key)
    client.close()


def test_the_lock_of_a_dead_holder_expires(
    redis_client: Any, idp: TokenServer, credentials: Credentials
) -> None:
    storage = RedisStorage(redis_client)
    manager = TokenManager(credentials(), storage, lock_wait=10)
    assert manager._key is not None
    assert storage.acquire_lock(manager._key, 0.5) is not None  # its holder "dies" holding it
    started = time.monotonic()
    manager.get_token()
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 5
    assert idp.count == 1


def test_a_waiter_gives_up_after_lock_wait(
    redis_client: Any, idp: TokenServer, credentials: Credentials, caplog: pytest.LogCaptureFixture
) -> None:
    storage = RedisStorage(redis_client)
    manager = TokenManager(credentials(), storage, lock_wait=0.3)
    assert manager._key is not None
    assert storage.acquire_lock(manager._key, 60) is not None  # alive, but never stores
    started = time.monotonic()
    manager.get_token()
    assert time.monotonic() - started < 3
    assert idp.count == 1
    assert "fetching here" in caplog.text


def test_a_waiter_takes_the_token_the_lock_holder_stores(
    redis_client: Any, idp: TokenServer, credentials: Credentials
) -> None:
    storage = RedisStorage(redis_client)
    waiter = TokenManager(credentials(), storage, lock_wait=30)
    key = waiter._key
    assert key is not None
    owner = storage.acquire_lock(key, 30)  # another process is fetching
    assert owner is not None
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(waiter.get_token()))
    thread.start()
    token = credentials().fetch_token()  # the other process's fetch
    storage.save(key, json.dumps(token.to_dict()), 3600)
    storage.release_lock(key, owner)
    thread.join(10)
    assert result == [token]
    assert waiter.stats.fetches == 0
    assert idp.count == 1


def test_redis_dying_mid_stream_fails_no_request(
    spare_redis: RedisServer,
    idp: TokenServer,
    idp_api: APIServer,
    credentials: Credentials,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="alf_session")
    storage = storage_from_url(spare_redis.url, timeout=0.5)
    manager = TokenManager(credentials(), storage, storage_timeout=1.0, storage_retry_interval=0.0)
    url = idp_api.base_url + "/orders"
    statuses = []
    with TokenSession(token_manager=manager) as session:
        for i in range(90):
            if i == 30:
                spare_redis.kill()
            if i == 60:
                spare_redis.start()  # same port, empty
                # The storage's worker finds it answering (it probes every
                # storage_retry_interval, 50 ms at least); requests never wait for that.
                deadline = time.monotonic() + 10
                while not (manager._guard is not None and manager._guard.usable):
                    assert time.monotonic() < deadline, "the restarted Redis was never used again"
                    time.sleep(0.01)
            if i % 10 == 5:
                idp.revoke()  # the next request gets a 401, a new token, storage calls
            statuses.append(session.get(url).status_code)
    assert statuses == [200] * 90
    assert idp.count == 10  # the first token and one per revocation
    failures = [
        r for r in caplog.records if r.levelno == logging.WARNING and "failed" in r.getMessage()
    ]
    assert 1 <= len(failures) <= 2, [r.getMessage() for r in failures]
    # Each outage is found by one failed call: while it lasts, calls are
    # skipped (no request waits on a storage known to fail) and probed off
    # the request path.
    assert manager.stats.storage_errors >= 1
    assert "answers again" in caplog.text

    # The token fetched after the restart was stored there: a new manager uses it.
    current = manager.get_token()
    storage_settled(manager)
    fresh = TokenManager(credentials(), storage_from_url(spare_redis.url))
    assert fresh.get_token() == current
    assert fresh.stats.fetches == 0
    assert idp.count == 10
    storage.client.close()  # type: ignore[attr-defined]
    fresh.storage.client.close()  # type: ignore[union-attr]


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
def test_a_hung_redis_holds_no_request_beyond_storage_timeout(
    spare_redis: RedisServer, idp: TokenServer, idp_api: APIServer, credentials: Credentials
) -> None:
    # A client without timeouts of its own: only the manager's bound applies.
    client = spare_redis.client(socket_timeout=None)
    manager = TokenManager(credentials(), RedisStorage(client), storage_timeout=0.3)
    assert client.ping()
    assert spare_redis.process is not None
    os.kill(spare_redis.process.pid, signal.SIGSTOP)
    try:
        with TokenSession(token_manager=manager) as session:
            started = time.monotonic()
            response = session.get(idp_api.base_url + "/orders")
            elapsed = time.monotonic() - started
        assert response.status_code == 200
        assert elapsed < 0.3 + 1.0
        assert manager.stats.storage_errors >= 1
    finally:
        os.kill(spare_redis.process.pid, signal.SIGCONT)
    client.close()
