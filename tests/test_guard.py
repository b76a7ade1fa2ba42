"""The storage guard: bounded calls without a thread per call, outages that stall nothing.

Real servers throughout: a private redis-server (killed, stopped and restarted
here), the loopback token server and API. The assertions are counts: threads
started, storage calls made on request threads, token requests, warnings.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from alf_session import (
    ClientCredentials,
    FileStorage,
    MemoryStorage,
    RedisStorage,
    TokenManager,
    TokenSession,
)
from alf_session._guard import _backend_for, own_bound
from alf_session._servers import APIServer, TokenServer
from alf_session.storage import ObjectStorage

if TYPE_CHECKING:
    from tests.storage_fixtures import MemcachedServer, RedisServer

pytest_plugins = ["tests.storage_fixtures"]

Credentials = Callable[..., ClientCredentials]
WORKER_THREAD = "alf-session-storage"


@pytest.fixture
def thread_starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of this library's threads started during the test, in order.

    (The loopback servers start a thread per connection; those are not ours.)
    """
    started: list[str] = []
    original = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if self.name.startswith("alf-session"):
            started.append(self.name)
        original(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    return started


class CountingRedisStorage(RedisStorage):
    """A RedisStorage that records which thread made each call."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.calls: list[tuple[str, str]] = []  # (method, thread name)
        self._calls_lock = threading.Lock()

    def _note(self, method: str) -> None:
        with self._calls_lock:
            self.calls.append((method, threading.current_thread().name))

    def on_request_threads(self) -> list[str]:
        with self._calls_lock:
            return [method for method, thread in self.calls if thread != WORKER_THREAD]

    def load(self, key: str) -> str | None:
        self._note("load")
        return super().load(key)

    def save(self, key: str, value: str, ttl: float | None) -> None:
        self._note("save")
        super().save(key, value, ttl)

    def delete(self, key: str, expected: str | None = None) -> None:
        self._note("delete")
        super().delete(key, expected)

    def acquire_lock(self, key: str, ttl: float) -> str | None:
        self._note("acquire_lock")
        return super().acquire_lock(key, ttl)

    def release_lock(self, key: str, owner: str) -> None:
        self._note("release_lock")
        super().release_lock(key, owner)


def bounded_client(server: RedisServer) -> Any:
    """A redis client whose own timeouts bound a call within 2 s (1 retry, no backoff)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return server.client(
        socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 1)
    )


def wait_until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="alf_session")
    yield caplog


def storage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "token storage" in r.getMessage()
    ]


# -- how calls are bounded ----------------------------------------------------------


def test_own_bound_reads_the_clients_timeouts(
    redis_server: RedisServer, memcached_server: MemcachedServer, tmp_path: Path
) -> None:
    from pymemcache.client.base import Client

    bounded = bounded_client(redis_server)
    assert own_bound(RedisStorage(bounded)) == pytest.approx(2.0)  # 2 tries x (0.5 + 0.5)
    # redis-py's defaults: 5 s timeouts and ten retries, far beyond storage_timeout.
    default = redis_server.client()
    bound = own_bound(RedisStorage(default))
    assert bound is not None and bound > 60
    assert own_bound(RedisStorage(redis_server.client(socket_timeout=None))) is None
    assert own_bound(MemoryStorage()) == 0.0
    assert own_bound(FileStorage(tmp_path)) == 0.0
    memcache = Client(memcached_server.address, timeout=0.5, connect_timeout=0.25)
    assert own_bound(ObjectStorage(memcache)) == pytest.approx(0.75)
    assert own_bound(ObjectStorage(Client(memcached_server.address))) is None

    class Store:
        def get(self, key: str) -> object:
            return None

        def set(self, key: str, value: str) -> None:
            pass

    assert own_bound(ObjectStorage(Store())) is None  # nothing known: bounded from outside
    for client in (bounded, default):
        client.close()


def test_storage_calls_start_no_thread_per_call(
    redis_server: RedisServer, idp: TokenServer, credentials: Credentials, thread_starts: list[str]
) -> None:
    bounded, unbounded = bounded_client(redis_server), redis_server.client(socket_timeout=None)
    for client, inline in ((bounded, True), (unbounded, False)):
        storage = CountingRedisStorage(client)
        managers = [TokenManager(credentials(), storage, key=f"{inline}-{i}") for i in range(100)]
        assert all(m._guard is not None and m._guard.inline is inline for m in managers)
        for manager in managers:
            manager.get_token()  # cold: read, lock, read, fetch, store, release
        for manager in managers:
            manager.invalidate()
            manager.get_token()
        assert _backend_for(storage).drain(5)
        # Per credential: read, lock, read, store, release; delete; and again.
        assert len(storage.calls) == 100 * 11
        if inline:  # reads and the lock in the caller's thread, writes on the worker
            assert set(storage.on_request_threads()) == {"load", "acquire_lock", "delete"}
        else:  # everything on the worker
            assert storage.on_request_threads() == []
    assert idp.count == 400
    # One worker per backend, for hundreds of calls; no refresh was due.
    assert thread_starts == [WORKER_THREAD, WORKER_THREAD]
    bounded.close()
    unbounded.close()


def test_every_wrapper_of_one_client_shares_one_backend(redis_server: RedisServer) -> None:
    client = redis_server.client()
    a, b = RedisStorage(client), RedisStorage(client)
    assert _backend_for(a) is _backend_for(b)
    assert _backend_for(a) is not _backend_for(RedisStorage(redis_server.client()))
    client.close()


# -- outages ----------------------------------------------------------------


def test_a_storage_known_to_fail_is_never_called_on_a_request_thread(
    spare_redis: RedisServer,
    idp: TokenServer,
    idp_api: APIServer,
    credentials: Credentials,
    logs: pytest.LogCaptureFixture,
    thread_starts: list[str],
) -> None:
    client = bounded_client(spare_redis)
    storage = CountingRedisStorage(client)
    managers = [
        TokenManager(credentials(), storage, key=f"tenant-{i}", storage_retry_interval=0.1)
        for i in range(20)
    ]
    spare_redis.kill()
    url = idp_api.base_url + "/orders"
    for manager in managers:
        with TokenSession(token_manager=manager) as session:
            assert session.get(url).status_code == 200
            idp.revoke()  # a 401, an invalidation and a fetch, with Redis down
            assert session.get(url).status_code == 200
    # One call found the outage; after it, no request thread touched the storage.
    assert storage.on_request_threads() == ["load"]
    assert sum(m.stats.storage_errors for m in managers) == 1
    assert idp.count == 40
    assert len(storage_warnings(logs)) == 1  # one outage, one warning, 20 credentials
    # Meanwhile the worker probes it, off the request path.
    wait_until(lambda: any(thread == WORKER_THREAD for _, thread in storage.calls))

    spare_redis.start()  # same port, empty
    backend = _backend_for(storage)
    wait_until(lambda: not backend.failing)
    mine = [r.getMessage() for r in logs.records if repr(storage) in r.getMessage()]
    assert [m for m in mine if "sharing tokens" in m] == [
        f"token storage {storage!r} answers again; sharing tokens through it"
    ]
    fresh = TokenManager(credentials(), storage, key="tenant-0")
    token = fresh.get_token()
    assert fresh.stats.fetches == 1
    assert TokenManager(credentials(), storage, key="tenant-0").get_token() == token
    assert idp.count == 41
    assert len(storage_warnings(logs)) == 1
    assert thread_starts.count(WORKER_THREAD) == 1
    client.close()


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
def test_a_hung_storage_is_waited_out_once_per_outage(
    spare_redis: RedisServer,
    idp: TokenServer,
    idp_api: APIServer,
    credentials: Credentials,
    logs: pytest.LogCaptureFixture,
) -> None:
    # No timeouts in the client: the worker bounds each call from outside.
    client = spare_redis.client(socket_timeout=None)
    storage = CountingRedisStorage(client)
    managers = [
        TokenManager(credentials(), storage, key=f"t-{i}", storage_timeout=0.3) for i in range(10)
    ]
    assert client.ping()
    assert spare_redis.process is not None
    os.kill(spare_redis.process.pid, signal.SIGSTOP)
    try:
        for manager in managers:
            with TokenSession(token_manager=manager) as session:
                assert session.get(idp_api.base_url + "/orders").status_code == 200
        # The first call timed out; every later one skipped the storage at once.
        assert sum(m.stats.storage_errors for m in managers) == 1
        assert storage.on_request_threads() == []
        assert [call for call, _ in storage.calls] == ["load"]  # stuck on the worker
        assert idp.count == 10
        assert len(storage_warnings(logs)) == 1
    finally:
        os.kill(spare_redis.process.pid, signal.SIGCONT)
    backend = _backend_for(storage)
    wait_until(lambda: not backend.failing)
    client.close()


def test_a_401_leaves_the_storage_writes_to_the_worker(
    redis_server: RedisServer, idp: TokenServer, idp_api: APIServer, credentials: Credentials
) -> None:
    client = bounded_client(redis_server)
    storage = CountingRedisStorage(client)
    manager = TokenManager(credentials(), storage)
    with TokenSession(token_manager=manager) as session:
        assert session.get(idp_api.base_url + "/orders").status_code == 200
        idp.revoke()
        assert _backend_for(storage).drain(5)  # the first token's save and release
        del storage.calls[:]
        assert session.get(idp_api.base_url + "/orders").status_code == 200
    assert manager.stats.retries_on_401 == 1
    assert _backend_for(storage).drain(5)
    on_worker = sorted(c for c, thread in storage.calls if thread == WORKER_THREAD)
    # The refused token's compare-and-delete (a load then a delete), the new
    # token's save and the lock's release ran on the worker; the request
    # thread only read the storage and took the lock.
    assert on_worker == ["delete", "load", "release_lock", "save"]
    assert sorted(storage.on_request_threads()) == ["acquire_lock", "load", "load"]
    client.close()


# -- nothing queued is lost -----------------------------------------------------


@pytest.mark.parametrize("how", ["exit", "multiprocessing"])
def test_a_token_fetched_just_before_exit_is_stored(
    how: str, tmp_path: Path, idp: TokenServer
) -> None:
    script = textwrap.dedent(
        f"""
        import multiprocessing, sys
        from alf_session import ClientCredentials, FileStorage, TokenManager

        def fetch():
            provider = ClientCredentials({idp.token_url!r}, {idp.client_id!r},
                                         {idp.client_secret!r})
            TokenManager(provider, FileStorage({str(tmp_path)!r})).get_token()

        if __name__ == "__main__":
            if {how!r} == "exit":
                fetch()
            else:
                child = multiprocessing.get_context("fork").Process(target=fetch)
                child.start()
                child.join()
                sys.exit(child.exitcode)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    provider = ClientCredentials(idp.token_url, idp.client_id, idp.client_secret)
    manager = TokenManager(provider, FileStorage(tmp_path))
    manager.get_token()
    assert manager.stats.storage_hits == 1
    assert idp.count == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_gets_its_own_worker(
    redis_server: RedisServer, idp: TokenServer, credentials: Credentials
) -> None:
    client = bounded_client(redis_server)
    parent = TokenManager(credentials(), RedisStorage(client), key="parent")
    parent.get_token()  # the parent's worker is running
    backend = parent._guard.backend  # type: ignore[union-attr]
    assert backend.worker is not None
    pid = os.fork()
    if pid == 0:  # the child: its own worker stores its token
        code = 1
        try:
            child = TokenManager(credentials(), RedisStorage(client), key="child")
            child.get_token()
            code = 0 if child._guard.backend.drain(5) else 2  # type: ignore[union-attr]
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    late = TokenManager(credentials(), RedisStorage(client), key="child")
    late.get_token()
    assert late.stats.storage_hits == 1
    assert idp.count == 2
    client.close()


def test_a_still_valid_token_serves_while_another_process_fetches(
    redis_server: RedisServer, idp: TokenServer, credentials: Credentials
) -> None:
    from .helpers import FakeClock

    clock = FakeClock()
    idp.expires_in = 100
    storage = RedisStorage(bounded_client(redis_server))
    manager = TokenManager(credentials(), storage, clock=clock, lock_wait=30)
    first = manager.get_token()
    assert manager._key is not None
    assert _backend_for(storage).drain(5)  # the store, and this process's lock released
    clock.advance(80)  # past the leeway (30 s), not expired: renewal is due
    owner = storage.acquire_lock(manager._key, 30)  # another process is fetching
    assert owner is not None
    # No wait for that fetch: the current token serves meanwhile.
    assert manager.get_token() == first
    assert idp.count == 1
    elsewhere = credentials()
    elsewhere.clock = clock  # the other process's fetch ends
    other = elsewhere.fetch_token()
    storage.save(manager._key, json.dumps(other.to_dict()), 3600)
    storage.release_lock(manager._key, owner)
    # A background refresh takes it from the storage.
    wait_until(lambda: manager.get_token() == other)
    assert manager.stats.fetches == 1
    assert idp.count == 2
