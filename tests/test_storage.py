"""The shared tier, against every kind of storage a user may pass.

One test, parametrized over the backends (Redis, Redis Cluster, three
pymemcache clients, two Django caches, two user classes, files, memory,
encryption): managers that share a storage share one token, invalidation
never deletes a newer token, garbage is overwritten. Real servers only.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from alf_session import (
    ClientCredentials,
    ConfigurationError,
    EncryptedStorage,
    FileStorage,
    MemoryStorage,
    RedisStorage,
    TokenManager,
    TokenSession,
    as_storage,
    storage_from_url,
)
from alf_session._guard import own_bound
from alf_session._servers import APIServer, TokenServer
from alf_session.storage import DjangoCacheStorage, MemcacheStorage, ObjectStorage

from .helpers import storage_settled

if TYPE_CHECKING:
    from tests.storage_fixtures import MemcachedServer, RedisServer

pytest_plugins = ["tests.storage_fixtures"]

Credentials = Callable[..., ClientCredentials]


# -- user classes: the "any object with get and set" of DESIGN.md -----------


class PlainStore:
    """get and set, nothing else: no TTL, no lock, no delete."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {}

    def get(self, key: str) -> object:
        return self.data.get(key)

    def set(self, key: str, value: str) -> None:
        self.data[key] = value


class RedisLikeStore:
    """A redis-like class: set(ex=, nx=) and delete, bytes out, TTL honoured."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, float | None]] = {}
        self.ttls: dict[str, int | None] = {}
        self.lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self.lock:
            item = self.data.get(key)
            if item is None or (item[1] is not None and item[1] <= time.monotonic()):
                return None
            return item[0]

    def set(self, key: str, value: str, ex: int | None = None, nx: bool = False) -> bool | None:
        with self.lock:
            if nx and self.data.get(key) is not None:
                item = self.data[key]
                if item[1] is None or item[1] > time.monotonic():
                    return None
            self.ttls[key] = ex
            self.data[key] = (value.encode(), None if ex is None else time.monotonic() + ex)
            return True

    def delete(self, key: str) -> int:
        with self.lock:
            return 1 if self.data.pop(key, None) else 0


# -- backends ----------------------------------------------------------------


class Backend:
    """How to make a fresh handle on one shared store, and to read or write raw bytes in it.

    Every handle it made, and every client given in ``closing``, is closed
    at the end of the test.
    """

    def __init__(
        self,
        make: Callable[[], Any],
        put_raw: Callable[[str, bytes], None] | None = None,
        get_raw: Callable[[str], bytes | None] | None = None,
        closing: tuple[Any, ...] = (),
    ) -> None:
        self._make = make
        self.put_raw = put_raw
        self.get_raw = get_raw
        self.made: list[Any] = list(closing)

    def make(self) -> Any:
        handle = self._make()
        self.made.append(handle)
        return handle

    def close(self) -> None:
        for handle in self.made:
            close_client(handle)


def close_client(handle: Any) -> None:
    """Close a client, or the client inside a storage wrapper."""
    for name in ("storage", "client", "obj"):
        inner = getattr(handle, name, None)
        if inner is not None and not isinstance(handle, (PlainStore, RedisLikeStore)):
            close_client(inner)
            return
    close = getattr(handle, "close", None)
    if callable(close):
        close()


BACKENDS = [
    "memory",
    "file",
    "redis",
    "redis-decoded",
    "redis-cluster",
    "memcache-client",
    "memcache-pooled",
    "memcache-hash",
    "django-locmem",
    "django-redis",
    "user-plain",
    "user-redis-like",
    "encrypted-redis",
]


def _redis_backend(server: RedisServer, **options: Any) -> Backend:
    raw = server.client()

    def get_raw(key: str) -> bytes | None:
        value = raw.get(key)
        return value if value is None else bytes(value)

    return Backend(lambda: server.client(**options), raw.set, get_raw, closing=(raw,))


def _memcache_backend(server: MemcachedServer, kind: str) -> Backend:
    from pymemcache.client.base import Client, PooledClient
    from pymemcache.client.hash import HashClient

    def make() -> Any:
        if kind == "pooled":
            return PooledClient(server.address, timeout=5, connect_timeout=5)
        if kind == "hash":
            return HashClient([server.address], timeout=5, connect_timeout=5)
        return Client(server.address, timeout=5, connect_timeout=5)

    raw = Client(server.address, timeout=5)
    return Backend(make, lambda k, v: raw.set(k, v, noreply=False), raw.get, closing=(raw,))


#: Those the test can write raw bytes to, and read them back from.
RAW_BACKENDS = [b for b in BACKENDS if b not in ("memory", "django-locmem")]
#: Those with an atomic add and a TTL, hence a cross-process lock.
LOCKING_BACKENDS = [b for b in BACKENDS if b != "user-plain"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = _backend(request, request.param, tmp_path)
    yield made
    made.close()


@pytest.fixture(params=RAW_BACKENDS)
def raw_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = _backend(request, request.param, tmp_path)
    assert made.put_raw is not None and made.get_raw is not None
    yield made
    made.close()


@pytest.fixture(params=LOCKING_BACKENDS)
def locking_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = _backend(request, request.param, tmp_path)
    yield made
    made.close()


def _backend(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Backend:
    if kind == "memory":
        shared = MemoryStorage()
        return Backend(lambda: shared)
    if kind == "file":
        directory = tmp_path / "tokens"

        def file_raw(key: str) -> bytes | None:
            path = Path(FileStorage(directory)._path(key, ".token"))
            return path.read_bytes() if path.exists() else None

        def file_put(key: str, value: bytes) -> None:
            Path(FileStorage(directory)._path(key, ".token")).write_bytes(value)

        return Backend(lambda: FileStorage(directory), file_put, file_raw)
    if kind.startswith("redis") or kind == "encrypted-redis":
        name = "redis_cluster" if kind == "redis-cluster" else "redis_server"
        server: RedisServer = request.getfixturevalue(name)
        with server.client() as admin:
            admin.flushall()
        if kind == "redis-cluster":
            from redis.cluster import RedisCluster

            raw = server.client()
            return Backend(
                lambda: RedisCluster(host="127.0.0.1", port=server.port, socket_timeout=5),
                raw.set,
                raw.get,
                closing=(raw,),
            )
        if kind == "encrypted-redis":
            from cryptography.fernet import Fernet

            key = Fernet.generate_key()
            raw = server.client()
            return Backend(
                lambda: EncryptedStorage(server.client(), key), raw.set, raw.get, closing=(raw,)
            )
        return _redis_backend(server, decode_responses=kind == "redis-decoded")
    if kind.startswith("memcache"):
        memcached: MemcachedServer = request.getfixturevalue("memcached_server")
        from pymemcache.client.base import Client

        admin = Client(memcached.address)
        admin.flush_all(noreply=False)
        admin.close()
        return _memcache_backend(memcached, kind.rpartition("-")[2])
    if kind == "django-locmem":
        # Django caches made directly need no settings: none are configured,
        # which leaves them to any other test that needs to.
        from django.core.cache.backends.locmem import LocMemCache

        location = f"alf-{time.monotonic_ns()}"  # LocMemCaches of one name share their data
        return Backend(lambda: LocMemCache(location, {}))
    if kind == "django-redis":
        from django.core.cache.backends.redis import RedisCache

        server = request.getfixturevalue("redis_server")
        raw = server.client()
        raw.flushall()
        # Django's keys are KEY_PREFIX:VERSION:key; its values are pickles.
        return Backend(
            lambda: RedisCache(server.url, {}),
            lambda k, v: raw.set(f":1:{k}", v),
            lambda k: raw.get(f":1:{k}"),
            closing=(raw,),
        )
    if kind == "user-plain":
        plain = PlainStore()

        def plain_raw(key: str) -> bytes | None:
            value = plain.data.get(key)
            return value.encode() if isinstance(value, str) else value  # type: ignore[return-value]

        return Backend(lambda: plain, plain.set, plain_raw)  # type: ignore[arg-type]
    if kind == "user-redis-like":
        like = RedisLikeStore()
        return Backend(lambda: like, lambda k, v: like.set(k, v.decode("latin-1")), like.get)
    raise AssertionError(kind)


# -- the shared-token test, on every backend ----------------------------------


def test_managers_on_one_storage_share_one_token(
    backend: Backend, credentials: Credentials, idp: TokenServer
) -> None:
    a = TokenManager(credentials(), backend.make())
    b = TokenManager(credentials(), backend.make())

    token = a.get_token()
    assert b.get_token() == token
    assert idp.count == 1
    assert (b.stats.fetches, b.stats.storage_hits) == (0, 1)

    # B renews; A then invalidates the old token it holds: the newer one stays.
    newer = b.force_refresh()
    assert newer != token
    a.invalidate(token)
    c = TokenManager(credentials(), backend.make())
    assert c.get_token() == newer
    assert idp.count == 2

    # Invalidating the current token removes it for everyone.
    c.invalidate(newer)
    d = TokenManager(credentials(), backend.make())
    fresh = d.get_token()
    assert fresh not in (token, newer)
    assert idp.count == 3
    assert a.stats.storage_errors + b.stats.storage_errors + d.stats.storage_errors == 0


def test_garbage_under_the_key_is_overwritten(
    raw_backend: Backend,
    credentials: Credentials,
    idp: TokenServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = raw_backend
    assert backend.put_raw is not None
    a = TokenManager(credentials(), backend.make())
    assert a._key is not None
    backend.put_raw(a._key, b"\xff\xfe{not json")

    token = a.get_token()  # no exception
    assert idp.count == 1
    assert "unreadable value" in caplog.text
    b = TokenManager(credentials(), backend.make())
    assert b.get_token() == token  # the garbage was overwritten by the token
    assert idp.count == 1


def test_garbage_is_warned_about_once_a_minute_not_per_read(
    credentials: Credentials, idp: TokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    storage = MemoryStorage()
    manager = TokenManager(credentials(), storage)
    assert manager._key is not None
    storage.save(manager._key, "{not json", None)
    for _ in range(5):
        assert manager._load() is None
    warnings = [r for r in caplog.records if "unreadable value" in r.getMessage()]
    assert len(warnings) == 1
    assert manager.stats.storage_errors == 5  # each one still counted


def test_stored_bytes_hold_no_secret(
    raw_backend: Backend, credentials: Credentials, idp: TokenServer
) -> None:
    backend = raw_backend
    assert backend.get_raw is not None
    manager = TokenManager(credentials(), backend.make())
    token = manager.get_token()
    storage_settled(manager)
    assert manager._key is not None
    raw = backend.get_raw(manager._key)
    assert raw
    assert idp.client_secret.encode() not in raw
    assert idp.client_secret not in manager._key
    assert idp.client_id not in manager._key  # a hash, not the identity itself
    encrypted = isinstance(as_storage(backend.make()), EncryptedStorage)
    assert (token.access_token.encode() in raw) is not encrypted


def test_lock_is_exclusive_and_only_its_owner_releases_it(locking_backend: Backend) -> None:
    first = as_storage(locking_backend.make())
    second = as_storage(locking_backend.make())
    assert first.can_lock and second.can_lock
    key = first.key_for("lock-test")
    owner = first.acquire_lock(key, 30)
    assert owner is not None
    assert second.acquire_lock(key, 30) is None
    second.release_lock(key, "not-the-owner")
    assert second.acquire_lock(key, 30) is None
    first.release_lock(key, owner)
    again = second.acquire_lock(key, 30)
    assert again is not None
    second.release_lock(key, again)


def test_credentials_of_another_scope_or_audience_get_their_own_token(
    backend: Backend, credentials: Credentials, idp: TokenServer
) -> None:
    variants = [
        credentials(),
        credentials(scope="orders:read"),
        credentials(scope="orders:write"),
        credentials(audience="https://api.example"),
        credentials(scope="orders:read", audience="https://api.example"),
    ]
    managers = [TokenManager(provider, backend.make()) for provider in variants]
    tokens = [manager.get_token() for manager in managers]
    assert len({t.access_token for t in tokens}) == len(variants)
    assert len({m._key for m in managers}) == len(variants)
    assert idp.count == len(variants)
    # And each is shared with its own kind only.
    again = [TokenManager(p, backend.make()).get_token() for p in variants]
    assert again == tokens
    assert idp.count == len(variants)


# -- what each object is wrapped as ------------------------------------------


def test_import_alf_session_imports_no_optional_package() -> None:
    code = (
        "import sys, alf_session; "
        "print(sorted(m for m in ('redis', 'valkey', 'pymemcache', 'django', 'filelock', "
        "'cryptography') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_as_storage_picks_a_wrapper_for_each_kind_of_object(
    redis_server: RedisServer, memcached_server: MemcachedServer
) -> None:
    import redis
    from django.core.cache import CacheHandler
    from django.core.cache.backends.locmem import LocMemCache
    from django.utils.connection import ConnectionProxy
    from pymemcache.client.base import Client, PooledClient
    from pymemcache.client.hash import HashClient

    # What ``django.core.cache.cache`` is, without configuring global settings.
    handler = CacheHandler(
        {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    )
    cache = ConnectionProxy(handler, "default")

    assert isinstance(as_storage(redis.Redis(port=redis_server.port)), RedisStorage)
    assert isinstance(as_storage(redis.StrictRedis(port=redis_server.port)), RedisStorage)
    for client in (
        Client(memcached_server.address),
        PooledClient(memcached_server.address),
        HashClient([memcached_server.address]),
    ):
        wrapped = as_storage(client)
        assert isinstance(wrapped, MemcacheStorage)
        assert wrapped.can_lock
    assert isinstance(as_storage(LocMemCache("x", {})), DjangoCacheStorage)
    assert isinstance(as_storage(cache), DjangoCacheStorage)  # the per-thread proxy
    assert type(as_storage(PlainStore())) is ObjectStorage
    memory = MemoryStorage()
    assert as_storage(memory) is memory
    assert isinstance(as_storage("memory://"), MemoryStorage)


def test_as_storage_refuses_what_it_cannot_use() -> None:
    import redis.asyncio

    with pytest.raises(ConfigurationError, match=r"get\(key\) and set"):
        as_storage({"a": "dict has get but no set"})
    with pytest.raises(ConfigurationError, match="asynchronous"):
        as_storage(redis.asyncio.Redis(port=1))

    class AsyncStore:
        async def get(self, key: str) -> None: ...
        async def set(self, key: str, value: str) -> None: ...

    with pytest.raises(ConfigurationError, match="asynchronous"):
        as_storage(AsyncStore())


def test_user_objects_are_probed_once_for_ttl_and_lock() -> None:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    class WithTtl:
        def get(self, key: str) -> str | None:
            return None

        def set(self, key: str, value: str, ttl: float | None = None) -> None:
            calls.append(("set", (key, value), {"ttl": ttl}))

        def add(self, key: str, value: str, ttl: float | None = None) -> bool:
            calls.append(("add", (key, value), {"ttl": ttl}))
            return True

    class KwargsOnly:
        def get(self, key: str) -> str | None:
            return None

        def set(self, key: str, value: str, **options: Any) -> None:
            calls.append(("set", (key, value), options))

    class AddWithoutTtl(PlainStore):
        def add(self, key: str, value: str) -> bool:
            return True

    with_ttl = as_storage(WithTtl())
    assert with_ttl.can_lock  # add with a TTL
    with_ttl.save("k", "v", 99.9)
    assert calls[-1] == ("set", ("k", "v"), {"ttl": 99})  # whole seconds, rounded down
    assert with_ttl.acquire_lock("k", 0.2) is not None
    assert calls[-1][0] == "add" and calls[-1][2] == {"ttl": 1}  # rounded up, at least 1

    kwargs_only = as_storage(KwargsOnly())
    assert not kwargs_only.can_lock
    kwargs_only.save("k", "v", 50)
    assert calls[-1] == ("set", ("k", "v"), {})  # no TTL keyword to guess

    # A lock without an expiry would outlive a holder that died: not used.
    assert not as_storage(AddWithoutTtl()).can_lock
    assert not as_storage(PlainStore()).can_lock

    like = RedisLikeStore()
    wrapped = as_storage(like)
    assert wrapped.can_lock  # set(nx=True, ex=...)
    wrapped.save("k", "v", 120.7)
    assert like.ttls["k"] == 120
    assert wrapped.load("k") == "v"  # bytes decoded


# -- TTL ---------------------------------------------------------------------


def test_file_storage_honours_ttl_and_keeps_files_private(tmp_path: Path) -> None:
    directory = tmp_path / "tokens"
    storage = FileStorage(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    key = storage.key_for("abc")
    storage.save(key, '{"v": 1}', 60)
    assert storage.load(key) == '{"v": 1}'
    files = list(directory.iterdir())
    assert [p.suffix for p in files if not p.name.endswith((".lock", ".write"))] == [".token"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    envelope = json.loads(Path(storage._path(key, ".token")).read_text())
    assert 0 < envelope["expires_at"] - time.time() <= 60

    storage.save(key, '{"v": 2}', 0)  # already expired: never read back
    assert storage.load(key) is None
    storage.save(key, '{"v": 3}', None)
    assert storage.load(key) == '{"v": 3}'
    assert not [p for p in directory.iterdir() if p.name.startswith(".tmp-")]


def test_file_storage_compare_and_delete_keeps_a_newer_value(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    key = storage.key_for("abc")
    storage.save(key, "new", None)
    storage.delete(key, "old")
    assert storage.load(key) == "new"
    storage.delete(key, "new")
    assert storage.load(key) is None
    storage.delete(key)  # nothing there: no error


def test_file_storage_refuses_a_file_as_directory(tmp_path: Path) -> None:
    path = tmp_path / "a-file"
    path.write_text("")
    with pytest.raises(ConfigurationError, match="not a directory"):
        FileStorage(path)


def test_file_lock_held_past_its_ttl_is_given_up(tmp_path: Path) -> None:
    first, second = FileStorage(tmp_path), FileStorage(tmp_path)
    key = first.key_for("abc")
    assert first.acquire_lock(key, 0) is not None  # its ttl is over at once
    owner = second.acquire_lock(key, 30)
    assert owner is not None
    second.release_lock(key, owner)


def test_file_storage_without_filelock_uses_fcntl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("fcntl")
    monkeypatch.setitem(sys.modules, "filelock", None)  # import filelock now fails
    first, second = FileStorage(tmp_path), FileStorage(tmp_path)
    assert first.can_lock
    key = first.key_for("abc")
    owner = first.acquire_lock(key, 30)
    assert owner is not None
    assert second.acquire_lock(key, 30) is None
    first.release_lock(key, owner)
    first.save(key, "v", 30)
    assert second.load(key) == "v"


def test_redis_ttl_is_positive_and_at_most_the_lifetime(
    redis_client: Any, credentials: Credentials, idp: TokenServer
) -> None:
    idp.expires_in = 600
    manager = TokenManager(credentials(), RedisStorage(redis_client))
    manager.get_token()
    storage_settled(manager)
    assert manager._key is not None
    ttl_ms = redis_client.pttl(manager._key)
    assert 0 < ttl_ms <= 600_000


def test_memcache_ttl_is_capped_at_30_days(memcached_server: MemcachedServer) -> None:
    from pymemcache.client.base import Client

    client = Client(memcached_server.address, timeout=5)
    storage = MemcacheStorage(client)
    # More than 30 days would be read by memcached as a date in 1970: gone at once.
    storage.save("alf-test:long", "v", 90 * 24 * 3600.0)
    assert storage.load("alf-test:long") == "v"
    client.close()


# -- encryption ----------------------------------------------------------------


def test_encrypted_storage_needs_the_key_to_read(
    redis_client: Any, credentials: Credentials, idp: TokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    from cryptography.fernet import Fernet

    key, other = Fernet.generate_key(), Fernet.generate_key()
    a = TokenManager(credentials(), EncryptedStorage(redis_client, key))
    token = a.get_token()
    storage_settled(a)
    assert a._key is not None
    raw = redis_client.get(a._key)
    assert token.access_token.encode() not in raw
    assert idp.client_secret.encode() not in raw

    # Key rotation: a list whose second key is the old one still reads it.
    b = TokenManager(credentials(), EncryptedStorage(redis_client, [other, key]))
    assert b.get_token() == token
    assert idp.count == 1

    # Without the key the value is garbage: fetched again and overwritten.
    c = TokenManager(credentials(), EncryptedStorage(redis_client, other))
    assert c.get_token() != token
    assert idp.count == 2
    assert "unreadable value" in caplog.text


def test_encryption_key_errors_never_quote_the_key() -> None:
    with pytest.raises(ConfigurationError, match="generate_key") as info:
        EncryptedStorage(MemoryStorage(), "not-a-fernet-key-but-a-secret")
    assert "not-a-fernet-key" not in str(info.value)


# -- storage_from_url ------------------------------------------------------------


def test_storage_from_url(tmp_path: Path, redis_server: RedisServer) -> None:
    storage = storage_from_url(redis_server.url)
    assert isinstance(storage, RedisStorage)
    options = storage.client.connection_pool.connection_kwargs
    # Two tries of a connect and a read, and the backoff between: 2 s in all.
    assert options["socket_timeout"] == options["socket_connect_timeout"] == pytest.approx(0.49)
    assert own_bound(storage) == pytest.approx(2.0)
    storage.save("alf-test:url", "v", 10)
    assert storage.load("alf-test:url") == "v"

    tls = storage_from_url("rediss://:pw@cache.example:6380/2", timeout=1.5)
    assert isinstance(tls, RedisStorage)
    pool = tls.client.connection_pool
    assert pool.connection_class.__name__ == "SSLConnection"
    assert own_bound(tls) == pytest.approx(1.5)
    assert "pw" not in repr(tls)

    overridden = storage_from_url(redis_server.url + "?socket_timeout=7")
    assert overridden.client.connection_pool.connection_kwargs["socket_timeout"] == 7

    directory = tmp_path / "a dir"
    files = storage_from_url(directory.as_uri())
    assert isinstance(files, FileStorage) and files.directory == str(directory)
    assert directory.is_dir()

    assert storage_from_url("memory://") is storage_from_url("memory://")
    assert isinstance(storage_from_url("memory://"), MemoryStorage)

    from cryptography.fernet import Fernet

    assert isinstance(
        storage_from_url("memory://", encryption_key=Fernet.generate_key()), EncryptedStorage
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mongodb://user:hunter2@db.example/x", "unknown storage URL scheme mongodb:"),
        ("/var/tokens", r"unknown storage URL scheme \(none\)"),
        ("file://otherhost/tokens", "must be on this host"),
        ("file://", "needs a directory"),
        ("redis://:hunter2@localhost:port/0", "bad redis storage URL"),
        ("rediss://:hunter2@localhost/0?socket_timeout=x", "bad redis storage URL"),
    ],
)
def test_storage_from_url_errors_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        storage_from_url(url)
    assert "hunter2" not in str(info.value)


def test_token_storage_accepts_a_url(tmp_path: Path, idp: TokenServer, idp_api: APIServer) -> None:
    options = {"token_storage": (tmp_path / "t").as_uri()}
    with TokenSession(idp.token_url, idp.client_id, idp.client_secret, **options) as one:
        assert one.get(idp_api.base_url + "/x").status_code == 200
    with TokenSession(idp.token_url, idp.client_id, idp.client_secret, **options) as two:
        assert two.get(idp_api.base_url + "/x").status_code == 200
    assert idp.count == 1


# -- a slow storage --------------------------------------------------------------


def test_a_slow_storage_never_holds_a_request_beyond_storage_timeout(
    idp: TokenServer, idp_api: APIServer, credentials: Credentials
) -> None:
    release = threading.Event()

    class SlowStore(PlainStore):
        def get(self, key: str) -> object:
            release.wait(10)
            return super().get(key)

    manager = TokenManager(credentials(), SlowStore(), storage_timeout=0.3)
    try:
        with TokenSession(token_manager=manager) as session:
            started = time.monotonic()
            response = session.get(idp_api.base_url + "/orders")
            elapsed = time.monotonic() - started
        assert response.status_code == 200
        assert elapsed < 0.3 + 1.0
        assert manager.stats.storage_errors >= 1
        assert idp.count == 1
    finally:
        release.set()


def test_storage_failures_never_fail_a_request(
    idp: TokenServer, idp_api: APIServer, credentials: Credentials
) -> None:
    class Broken(PlainStore):
        def get(self, key: str) -> object:
            raise OSError("connection refused")

        def set(self, key: str, value: str) -> None:
            raise OSError("connection refused")

    manager = TokenManager(credentials(), Broken())
    with TokenSession(token_manager=manager) as session:
        assert session.get(idp_api.base_url + "/orders").status_code == 200
    assert manager.stats.storage_errors >= 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_memcache_client_is_not_shared_with_a_forked_child(
    memcached_server: MemcachedServer,
) -> None:
    from pymemcache.client.base import Client

    storage = MemcacheStorage(Client(memcached_server.address, timeout=5))
    storage.save("alf-test:fork", "parent", 60)
    assert storage.load("alf-test:fork") == "parent"
    sock = storage.obj.sock
    assert sock is not None
    storage._after_fork()  # what the child runs
    assert storage.obj.sock is None  # it reconnects on its own socket
    assert storage.load("alf-test:fork") == "parent"
    storage.obj.close()
