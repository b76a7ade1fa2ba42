"""Storage that others can touch: planted files, copied ciphertexts, wrong types, bad options.

Each test plays a hostile local user or a careless neighbour against a real
directory, a real redis-server or a real memcached, and checks that the
manager never trusts what it finds, never hangs on it, and never lets it
turn sharing off. "Another user" is played by ``os.chown`` to uid 65534
(nobody), which needs root: those tests are skipped otherwise.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
import warnings
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
    as_storage,
    storage_from_url,
)
from alf_session._base import GARBAGE, lock_key
from alf_session._servers import TokenServer
from alf_session.storage import MemcacheStorage, ObjectStorage

from .helpers import storage_settled

if TYPE_CHECKING:
    from tests.storage_fixtures import MemcachedServer, RedisServer

pytest_plugins = ["tests.storage_fixtures"]

Credentials = Callable[..., ClientCredentials]

NOBODY = 65534
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX owners and modes")
needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another user needs root"
)


PLANTED = "planted-by-an-attacker"


def forged() -> str:
    """A token file a hostile user would plant: valid, unexpired, theirs."""
    token = {"access_token": PLANTED, "token_type": "Bearer", "expires_at": time.time() + 3600}
    return json.dumps({"value": json.dumps(token), "expires_at": time.time() + 3600})


def token_path(storage: FileStorage, manager: TokenManager, suffix: str = ".token") -> Path:
    assert manager._key is not None
    return Path(storage._path(manager._key, suffix))


def assert_not_planted(manager: TokenManager, idp: TokenServer) -> None:
    """The manager fetched its own token instead of taking the planted one."""
    token = manager.get_token()
    storage_settled(manager)  # the fetched token is stored off the request path
    assert token.access_token != PLANTED
    assert idp.count == 1
    assert manager.stats.storage_errors >= 1  # counted as garbage, not hidden


# -- FileStorage: the directory --------------------------------------------------


@posix_only
@pytest.mark.parametrize("mode", [0o777, 0o770, 0o720, 0o702, 0o1777, 0o730])
def test_file_storage_refuses_a_directory_others_can_write(tmp_path: Path, mode: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(ConfigurationError, match="others can write it") as info:
        FileStorage(shared)
    assert "chmod 700" in str(info.value)
    with pytest.raises(ConfigurationError, match="others can write it"):
        storage_from_url(shared.as_uri())
    shared.chmod(0o700)
    FileStorage(shared)  # what the message said to do works


@posix_only
@pytest.mark.parametrize("mode", [0o755, 0o700, 0o500])
def test_file_storage_accepts_a_private_directory(tmp_path: Path, mode: int) -> None:
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(mode)
    assert FileStorage(private).directory == str(private)


@posix_only
@needs_root
@pytest.mark.parametrize("mode", [0o700, 0o755, 0o777])
def test_file_storage_refuses_a_directory_of_another_user(tmp_path: Path, mode: int) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=mode)
    theirs.chmod(mode)
    os.chown(theirs, NOBODY, NOBODY)
    for spelling in (theirs, str(theirs), str(theirs) + "/", str(theirs) + "/."):
        with pytest.raises(ConfigurationError, match=f"owned by uid {NOBODY}"):
            FileStorage(spelling)
    with pytest.raises(ConfigurationError, match=f"owned by uid {NOBODY}"):
        storage_from_url(theirs.as_uri())


@posix_only
@needs_root
def test_file_storage_refuses_a_symlink_planted_for_the_directory(tmp_path: Path) -> None:
    # A link to another user's directory: its target is refused.
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)
    to_theirs = tmp_path / "tokens"
    to_theirs.symlink_to(theirs)
    with pytest.raises(ConfigurationError, match=f"owned by uid {NOBODY}"):
        FileStorage(to_theirs)

    # A link another user planted, even to a directory of ours: refused.
    ours = tmp_path / "ours"
    ours.mkdir(mode=0o700)
    planted = tmp_path / "planted"
    planted.symlink_to(ours)
    os.lchown(planted, NOBODY, NOBODY)
    with pytest.raises(ConfigurationError, match="symlink owned by uid"):
        FileStorage(planted)

    # A link of our own to our private directory is configuration, and works.
    mine = tmp_path / "mine"
    mine.symlink_to(ours)
    FileStorage(mine).save("k", "v", None)
    assert FileStorage(ours).load("k") == "v"


@posix_only
def test_file_storage_keeps_the_directory_it_opened_when_the_path_is_swapped(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "tokens"
    storage = FileStorage(directory)
    storage.save("k", "ours", None)
    # Someone renames the directory away and puts another, with a planted file, in its place.
    directory.rename(tmp_path / "moved")
    directory.mkdir(mode=0o700)
    Path(storage._path("k", ".token")).write_text(forged())
    assert storage.load("k") == "ours"
    storage.save("k", "newer", None)
    assert FileStorage(tmp_path / "moved").load("k") == "newer"
    assert PLANTED in Path(storage._path("k", ".token")).read_text()


@posix_only
@pytest.mark.parametrize("swap", ["symlink-to-ours", "symlink-to-root", "file", "other-dir"])
def test_a_directory_swapped_between_check_and_open_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    directory = tmp_path / "tokens"
    directory.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"  # a private directory of ours, say ~/.ssh
    elsewhere.mkdir(mode=0o700)
    real_lstat = os.lstat
    swapped: list[bool] = []

    def lstat_then_swap(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        result = real_lstat(path, *args, **kwargs)
        if os.fspath(path) == str(directory) and not swapped:
            # The race a user who can write the parent wins: the check saw the
            # directory, the open would find something else in its place.
            swapped.append(True)
            directory.rename(tmp_path / "moved")
            if swap == "symlink-to-ours":
                directory.symlink_to(elsewhere)
            elif swap == "symlink-to-root":
                directory.symlink_to("/")
            elif swap == "file":
                directory.write_text(forged())
            else:
                directory.mkdir(mode=0o700)
        return result

    monkeypatch.setattr(os, "lstat", lstat_then_swap)
    with pytest.raises(ConfigurationError, match="was replaced while it was being opened"):
        FileStorage(directory)
    assert swapped
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    ("directory", "message"),
    [
        (None, "not NoneType"),
        (42, "not int"),
        ("", "non-empty str"),
        ("tok\0ens", "without NUL"),
        (b"tokens", "non-empty str"),
    ],
)
def test_file_storage_refuses_a_directory_that_is_no_path(directory: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        FileStorage(directory)


def test_file_storage_refuses_a_file_or_a_file_inside_a_file(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(ConfigurationError, match="not a directory"):
        FileStorage(a_file)
    with pytest.raises(ConfigurationError, match="cannot use"):
        FileStorage(a_file / "tokens")
    with pytest.raises(ConfigurationError, match="not a directory"):
        storage_from_url(a_file.as_uri())


# -- FileStorage: the token file ---------------------------------------------------


@posix_only
@pytest.mark.parametrize("target", ["forged-file", "dangling", "dev-zero", "itself"])
def test_a_symlink_planted_for_the_token_file_is_never_followed(
    tmp_path: Path, credentials: Credentials, idp: TokenServer, target: str
) -> None:
    storage = FileStorage(tmp_path / "tokens")
    manager = TokenManager(credentials(), storage)
    path = token_path(storage, manager)
    outside = tmp_path / "outside"
    if target == "forged-file":
        outside.write_text(forged())
        outside.chmod(0o600)
        path.symlink_to(outside)
    elif target == "dangling":
        path.symlink_to(outside)
    elif target == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        path.symlink_to(path.name)

    assert_not_planted(manager, idp)
    # The save replaced the link itself; its target was neither read nor written.
    assert not path.is_symlink() and stat.S_ISREG(path.lstat().st_mode)
    if target == "forged-file":
        assert PLANTED in outside.read_text()
    if target == "dangling":
        assert not outside.exists()
    again = TokenManager(credentials(), FileStorage(tmp_path / "tokens"))
    assert again.get_token() == manager.get_token()
    assert idp.count == 1


@posix_only
def test_an_untrusted_token_file_is_warned_about_once_a_minute_saying_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = FileStorage(tmp_path / "tokens")
    path = Path(storage._path("k", ".token"))
    path.symlink_to(tmp_path / "elsewhere")
    for _ in range(5):  # a process polling the lock reads this often
        assert storage.load("k") == GARBAGE
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "symbolic links" in warnings[0].getMessage()  # ELOOP: says why
    assert "next save replaces it" in warnings[0].getMessage()


@posix_only
@needs_root
@pytest.mark.parametrize("owner", [(NOBODY, NOBODY), (NOBODY, 0), (1, 1)])
def test_a_token_file_of_another_user_is_ignored_and_replaced(
    tmp_path: Path, credentials: Credentials, idp: TokenServer, owner: tuple[int, int]
) -> None:
    storage = FileStorage(tmp_path / "tokens")
    manager = TokenManager(credentials(), storage)
    path = token_path(storage, manager)
    path.write_text(forged())
    path.chmod(0o600)
    os.chown(path, *owner)

    assert_not_planted(manager, idp)
    assert path.stat().st_uid == os.geteuid()  # replaced by a file of ours


@posix_only
@pytest.mark.parametrize("mode", [0o666, 0o622, 0o620, 0o602])
def test_a_token_file_others_can_write_is_ignored_and_replaced(
    tmp_path: Path, credentials: Credentials, idp: TokenServer, mode: int
) -> None:
    storage = FileStorage(tmp_path / "tokens")
    manager = TokenManager(credentials(), storage)
    path = token_path(storage, manager)
    path.write_text(forged())
    path.chmod(mode)

    assert_not_planted(manager, idp)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@posix_only
@pytest.mark.timeout(20)
@pytest.mark.parametrize("suffix", [".token", ".lock", ".write"])
def test_a_fifo_planted_for_a_storage_file_never_hangs(
    tmp_path: Path, credentials: Credentials, idp: TokenServer, suffix: str
) -> None:
    storage = FileStorage(tmp_path / "tokens")
    manager = TokenManager(credentials(), storage, storage_timeout=5)
    path = token_path(storage, manager, suffix)
    os.mkfifo(path, 0o600)

    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(manager.get_token()), daemon=True)
    worker.start()
    worker.join(10)
    assert result, "get_token() hung on a FIFO"
    storage_settled(manager)
    assert idp.count == 1
    assert not stat.S_ISFIFO(path.lstat().st_mode)  # replaced by a regular file
    # The storage works again for everyone, without a fault.
    other = TokenManager(credentials(), FileStorage(tmp_path / "tokens"))
    assert other.get_token() == result[0]
    assert other.stats.storage_errors == 0
    assert idp.count == 1


@posix_only
@pytest.mark.parametrize("size", [(1 << 20) + 1, 1 << 31, 1 << 40])
def test_a_huge_token_file_is_not_read(
    tmp_path: Path, credentials: Credentials, idp: TokenServer, size: int
) -> None:
    storage = FileStorage(tmp_path / "tokens")
    manager = TokenManager(credentials(), storage)
    path = token_path(storage, manager)
    with open(path, "wb") as file:
        file.write(forged().encode())
        file.truncate(size)  # sparse: costs no disk
    path.chmod(0o600)

    assert manager._key is not None
    assert storage.load(manager._key) == GARBAGE
    assert_not_planted(manager, idp)
    assert path.stat().st_size < 4096


@posix_only
def test_a_directory_in_place_of_the_token_file_is_garbage(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "tokens")
    path = Path(storage._path("k", ".token"))
    path.mkdir()
    assert storage.load("k") == GARBAGE
    storage.save("k", "v", None)  # an empty one is replaced
    assert storage.load("k") == "v"
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("")
    with pytest.raises(OSError):  # a full one is a fault: the manager rests, then retries
        storage.save("k", "v", None)
    assert storage.load("k") == GARBAGE


# -- FileStorage: lock files -------------------------------------------------------


@posix_only
@pytest.mark.parametrize("suffix", [".lock", ".write"])
@pytest.mark.parametrize("target", ["victim", "dangling"])
def test_a_symlink_planted_for_a_lock_file_is_never_followed(
    tmp_path: Path, suffix: str, target: str
) -> None:
    storage = FileStorage(tmp_path / "tokens")
    key = storage.key_for("abc")
    lock = Path(storage._path(key, suffix))
    victim = tmp_path / "victim"
    if target == "victim":
        victim.write_text("precious")
    lock.symlink_to(victim)

    if suffix == ".lock":
        owner = storage.acquire_lock(key, 30)
        assert owner is not None
        assert FileStorage(tmp_path / "tokens").acquire_lock(key, 30) is None  # still exclusive
        storage.release_lock(key, owner)
    else:
        storage.save(key, "v", None)
        assert storage.load(key) == "v"

    assert not lock.is_symlink() and stat.S_ISREG(lock.lstat().st_mode)
    if target == "victim":
        assert victim.read_text() == "precious"  # 0.1 truncated it (O_TRUNC through the link)
    else:
        assert not victim.exists()  # 0.1 created it, wherever the link pointed


@posix_only
@needs_root
@pytest.mark.parametrize("suffix", [".lock", ".write"])
def test_a_lock_file_of_another_user_is_replaced(tmp_path: Path, suffix: str) -> None:
    storage = FileStorage(tmp_path / "tokens")
    key = storage.key_for("abc")
    lock = Path(storage._path(key, suffix))
    lock.write_text("")
    os.chown(lock, NOBODY, NOBODY)

    if suffix == ".lock":
        owner = storage.acquire_lock(key, 30)
        assert owner is not None
        storage.release_lock(key, owner)
    else:
        storage.save(key, "v", None)
    assert lock.stat().st_uid == os.geteuid()


# -- EncryptedStorage: values bound to their key -------------------------------------


def _encrypted_backends(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Callable[[], Any], Callable[[str], Any], Callable[[str, Any], None]]]:
    """(make inner storage, read raw, write raw) for one kind of inner storage."""
    kind = request.param
    if kind == "memory":
        memory = MemoryStorage()
        yield (lambda: memory), (lambda k: memory.load(k)), (lambda k, v: memory.save(k, v, None))
    elif kind == "file":
        directory = tmp_path / "tokens"

        def file_raw(key: str) -> Any:
            return FileStorage(directory).load(key)

        def file_put(key: str, value: Any) -> None:
            FileStorage(directory).save(key, value, None)

        yield (lambda: FileStorage(directory)), file_raw, file_put
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        raw = server.client()
        raw.flushall()
        yield (lambda: server.client()), raw.get, raw.set
        raw.close()


@pytest.fixture(params=["memory", "file", "redis"])
def encrypted_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Callable[[], Any], Callable[[str], Any], Callable[[str, Any], None]]]:
    yield from _encrypted_backends(request, tmp_path)


@pytest.mark.parametrize(
    "other",
    [
        {"scope": "orders:write"},
        {"audience": "https://other.example"},
        {"scope": "admin", "audience": "https://other.example"},
    ],
)
def test_a_ciphertext_copied_under_another_credential_is_garbage(
    encrypted_backend: tuple[Callable[[], Any], Callable[[str], Any], Callable[[str, Any], None]],
    credentials: Credentials,
    idp: TokenServer,
    caplog: pytest.LogCaptureFixture,
    other: dict[str, str],
) -> None:
    from cryptography.fernet import Fernet

    make, get_raw, put_raw = encrypted_backend
    key = Fernet.generate_key()
    low = TokenManager(credentials(scope="orders:read"), EncryptedStorage(make(), key))
    high = TokenManager(credentials(**other), EncryptedStorage(make(), key))
    assert low._key is not None and high._key is not None and low._key != high._key
    low_token = low.get_token()
    storage_settled(low)
    assert idp.count == 1

    # Someone who can write the shared store, but has no key, copies the
    # ciphertext of one credential under the key of another.
    put_raw(high._key, get_raw(low._key))
    high_token = high.get_token()  # no exception
    storage_settled(high)
    assert high_token != low_token
    assert idp.count == 2
    assert high.stats.storage_errors >= 1  # counted as garbage
    assert "unreadable value" in caplog.text
    # And it was overwritten with the right credential's token.
    again = TokenManager(credentials(**other), EncryptedStorage(make(), key))
    assert again.get_token() == high_token
    assert idp.count == 2
    # Invalidating through the copied value never deletes the other credential's token.
    put_raw(high._key, get_raw(low._key))
    high.invalidate(low_token)
    assert low.storage is not None and low.storage.load(low._key) is not None


def test_a_ciphertext_copied_under_another_prefix_is_garbage(redis_client: Any) -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key()
    one = EncryptedStorage(RedisStorage(redis_client, prefix="team-a:"), key)
    two = EncryptedStorage(RedisStorage(redis_client, prefix="team-b:"), key)
    a, b = one.key_for("same-name"), two.key_for("same-name")
    one.save(a, '{"v": 1}', None)
    redis_client.set(b, redis_client.get(a))
    assert one.load(a) == '{"v": 1}'
    assert two.load(b) == GARBAGE  # the manager warns and overwrites it
    two.delete(b, '{"v": 1}')  # not its value: kept
    assert redis_client.get(b) is not None


def test_a_value_written_by_0_1_is_read_as_garbage_then_overwritten(
    redis_client: Any, credentials: Credentials, idp: TokenServer
) -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key()
    manager = TokenManager(credentials(), EncryptedStorage(redis_client, key))
    assert manager._key is not None
    unbound = {"access_token": "from-0.1", "token_type": "Bearer", "expires_at": time.time() + 99}
    redis_client.set(manager._key, Fernet(key).encrypt(json.dumps(unbound).encode()))

    assert manager.get_token().access_token != "from-0.1"
    assert idp.count == 1
    assert manager.stats.storage_errors >= 1
    again = TokenManager(credentials(), EncryptedStorage(redis_client, key))
    assert again.get_token() == manager.get_token()
    assert again.stats.storage_errors == 0
    assert idp.count == 1


# -- Redis: a value of another type under our key ------------------------------------


def _plant(client: Any, key: str, kind: str) -> None:
    client.delete(key)
    if kind == "hash":
        client.hset(key, "access_token", "x")
    elif kind == "list":
        client.rpush(key, "a", "b")
    elif kind == "set":
        client.sadd(key, "a")
    elif kind == "zset":
        client.zadd(key, {"a": 1.0})
    elif kind == "stream":
        client.xadd(key, {"a": "b"})
    else:
        raise AssertionError(kind)


WRONG_TYPES = ["hash", "list", "set", "zset", "stream"]


@pytest.fixture(params=["redis", "redis-decoded", "redis-cluster"])
def redis_kind(request: pytest.FixtureRequest) -> Iterator[tuple[Callable[[], Any], Any]]:
    """(make a client, an admin client) for each kind of Redis client."""
    if request.param == "redis-cluster":
        from redis.cluster import RedisCluster

        server: RedisServer = request.getfixturevalue("redis_cluster")

        def make() -> Any:
            return RedisCluster(host="127.0.0.1", port=server.port, socket_timeout=5)

    else:
        server = request.getfixturevalue("redis_server")
        decoded = request.param == "redis-decoded"

        def make() -> Any:
            return server.client(decode_responses=decoded)

    admin = server.client()
    admin.flushall()
    made: list[Any] = []

    def tracked() -> Any:
        made.append(make())
        return made[-1]

    yield tracked, admin
    for client in made:
        client.close()
    admin.close()


@pytest.mark.parametrize("kind", WRONG_TYPES)
def test_a_redis_value_of_the_wrong_type_is_garbage_to_overwrite(
    redis_kind: tuple[Callable[[], Any], Any],
    credentials: Credentials,
    idp: TokenServer,
    kind: str,
) -> None:
    make, admin = redis_kind
    manager = TokenManager(credentials(), RedisStorage(make()))
    assert manager._key is not None
    _plant(admin, manager._key, kind)

    token = manager.get_token()
    storage_settled(manager)
    assert idp.count == 1
    assert manager.stats.storage_errors >= 1  # the garbage, counted
    assert manager._guard is not None and manager._guard.usable  # sharing was not switched off
    assert admin.type(manager._key) in (b"string", "string")
    other = TokenManager(credentials(), RedisStorage(make()))
    assert other.get_token() == token
    assert (other.stats.storage_hits, other.stats.storage_errors) == (1, 0)
    assert idp.count == 1


@pytest.mark.parametrize("kind", WRONG_TYPES)
def test_invalidating_over_a_value_of_the_wrong_type_is_no_fault(
    redis_kind: tuple[Callable[[], Any], Any],
    credentials: Credentials,
    idp: TokenServer,
    kind: str,
) -> None:
    make, admin = redis_kind
    manager = TokenManager(credentials(), RedisStorage(make()))
    token = manager.get_token()
    storage_settled(manager)
    assert manager._key is not None and manager.storage is not None
    _plant(admin, manager._key, kind)
    manager.storage.delete(manager._key, "expected")  # compare-and-delete: no error
    manager.invalidate(token)
    assert manager._guard is not None and manager._guard.usable
    errors = manager.stats.storage_errors
    assert manager.get_token() != token
    assert manager.stats.storage_errors > errors  # the garbage, counted


@pytest.mark.parametrize("kind", [*WRONG_TYPES, "string"])
def test_a_lock_key_without_expiry_is_not_a_lock(
    redis_kind: tuple[Callable[[], Any], Any], kind: str
) -> None:
    make, admin = redis_kind
    storage = RedisStorage(make())
    key = storage.key_for("abc")
    if kind == "string":
        admin.set(lock_key(key), "stale, no expiry")
    else:
        _plant(admin, lock_key(key), kind)

    owner = storage.acquire_lock(key, 30)
    assert owner is not None  # 0.1: never, the lock was taken forever
    assert storage.acquire_lock(key, 30) is None  # a real lock is respected
    assert 0 < admin.pttl(lock_key(key)) <= 30_000
    # Its holder sees its lock turned into a hash: releasing is no fault.
    _plant(admin, lock_key(key), "hash")
    storage.release_lock(key, owner)


def test_django_over_redis_reads_a_wrong_type_as_garbage(
    redis_server: RedisServer, credentials: Credentials, idp: TokenServer
) -> None:
    from django.core.cache.backends.redis import RedisCache

    admin = redis_server.client()
    admin.flushall()
    manager = TokenManager(credentials(), RedisCache(redis_server.url, {}))
    assert manager._key is not None
    _plant(admin, f":1:{manager._key}", "hash")
    token = manager.get_token()
    storage_settled(manager)
    assert manager._guard is not None and manager._guard.usable
    other = TokenManager(credentials(), RedisCache(redis_server.url, {}))
    assert other.get_token() == token
    assert idp.count == 1
    admin.close()


# -- options that can never work ------------------------------------------------------


def _memcache_clients(server: MemcachedServer) -> list[Any]:
    from pymemcache.client.base import Client, PooledClient
    from pymemcache.client.hash import HashClient

    return [
        Client(server.address, timeout=5),
        PooledClient(server.address, timeout=5),
        HashClient([server.address], timeout=5),
    ]


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("my service:", "whitespace or control"),
        ("svc\t", "whitespace or control"),
        ("svc\n", "whitespace or control"),
        ("svc\r\nflush_all\r\n", "whitespace or control"),
        ("svc\0", "whitespace or control"),
        ("svc\x01", "whitespace or control"),
        ("svc\x7f", "whitespace or control"),
        ("dienst-ä:", "not ASCII"),
        ("x" * 180, "at most 179 bytes"),
        ("x" * 1000, "at most 179 bytes"),
    ],
)
def test_memcache_prefixes_that_can_never_work_are_refused(
    memcached_server: MemcachedServer, prefix: str, message: str
) -> None:
    for client in _memcache_clients(memcached_server):
        with pytest.raises(ConfigurationError, match=message) as info:
            MemcacheStorage(client, prefix=prefix)
        assert "memcached" in str(info.value)
        client.close()


@pytest.mark.parametrize("prefix", [b"svc:", None, 42, ["svc"]])
def test_a_prefix_that_is_no_str_is_refused(
    memcached_server: MemcachedServer, redis_client: Any, tmp_path: Path, prefix: Any
) -> None:
    from pymemcache.client.base import Client

    client = Client(memcached_server.address)
    for make in (
        lambda: MemcacheStorage(client, prefix=prefix),
        lambda: RedisStorage(redis_client, prefix=prefix),
        lambda: FileStorage(tmp_path, prefix=prefix),
        lambda: MemoryStorage(prefix=prefix),
        lambda: storage_from_url("memory://", prefix=prefix),
    ):
        with pytest.raises(ConfigurationError, match="prefix must be a str"):
            make()
    client.close()


def test_memcache_prefix_limits_count_the_client_key_prefix_and_unicode(
    memcached_server: MemcachedServer,
) -> None:
    from pymemcache.client.base import Client

    with pytest.raises(ConfigurationError, match="at most 79 bytes"):
        MemcacheStorage(Client(memcached_server.address, key_prefix=b"p" * 100), prefix="x" * 80)
    unicode_client = Client(memcached_server.address, allow_unicode_keys=True, timeout=5)
    storage = MemcacheStorage(unicode_client, prefix="dienst-ä:")
    key = storage.key_for("abc")
    storage.save(key, "v", 60)
    assert storage.load(key) == "v"
    with pytest.raises(ConfigurationError, match="at most 179 bytes"):
        MemcacheStorage(unicode_client, prefix="ä" * 90)  # 180 bytes in UTF-8
    # The longest prefix allowed works with the longest name, lock included.
    longest = MemcacheStorage(Client(memcached_server.address, timeout=5), prefix="x" * 179)
    key = longest.key_for("f" * 64)
    longest.save(key, "v", 60)
    assert longest.load(key) == "v"
    owner = longest.acquire_lock(key, 5)
    assert owner is not None
    longest.release_lock(key, owner)
    unicode_client.close()
    longest.obj.close()


@pytest.mark.parametrize(
    "cache_key", ["my credential", "tab\there", "x" * 300, "ünïcode", "line\nbreak"]
)
def test_memcache_keys_memcached_cannot_take_are_hashed(
    memcached_server: MemcachedServer, cache_key: str
) -> None:
    from alf_session import CallableProvider

    calls: list[int] = []

    def fetch() -> str:
        calls.append(1)
        return f"token-{len(calls)}"

    managers = [
        TokenManager(CallableProvider(fetch, cache_key=cache_key), client)
        for client in _memcache_clients(memcached_server)[:2]
    ]
    first = managers[0].get_token()
    assert managers[1].get_token() == first  # shared: 0.1 failed every call instead
    assert len(calls) == 1
    for manager in managers:
        assert manager.stats.storage_errors == 0
        assert manager._key is not None and len(manager._key) <= 250 - len(":lock")
        assert manager.storage is not None
        manager.storage.obj.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("prefix", ["my service:", "svc\n", "svc\x01", "x" * 200])
def test_django_memcached_prefixes_that_can_never_work_are_refused(
    memcached_server: MemcachedServer, prefix: str
) -> None:
    from django.core.cache.backends.locmem import LocMemCache
    from django.core.cache.backends.memcached import PyMemcacheCache

    cache = PyMemcacheCache(f"127.0.0.1:{memcached_server.port}", {})
    with pytest.raises(ConfigurationError, match="cannot take keys made with prefix"):
        as_storage(cache, prefix=prefix)
    # Django's other caches take such keys (with a warning): accepted there.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = as_storage(LocMemCache(f"alf-{prefix!r}", {}), prefix=prefix)
        local.save(local.key_for("abc"), "v", 60)
        assert local.load(local.key_for("abc")) == "v"


@pytest.mark.parametrize("cache_key", ["my credential", "x" * 300, "line\nbreak"])
def test_django_memcached_keys_it_cannot_take_are_hashed(
    memcached_server: MemcachedServer, cache_key: str
) -> None:
    from django.core.cache.backends.memcached import PyMemcacheCache

    from alf_session import CallableProvider

    calls: list[int] = []

    def fetch() -> str:
        calls.append(1)
        return f"token-{len(calls)}"

    caches = [PyMemcacheCache(f"127.0.0.1:{memcached_server.port}", {}) for _ in range(2)]
    managers = [TokenManager(CallableProvider(fetch, cache_key=cache_key), c) for c in caches]
    assert managers[1].get_token() == managers[0].get_token()
    assert len(calls) == 1
    assert [m.stats.storage_errors for m in managers] == [0, 0]
    for cache in caches:
        cache.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:6379/0?colour=blue", "unknown option 'colour'"),
        ("redis://:hunter2@127.0.0.1:6379/0?sockettimeout=5", "unknown option 'sockettimeout'"),
        ("rediss://127.0.0.1/0?ssl_cert=x&hunter2=1", "unknown option"),
        ("file:///tmp/tokens?mode=0700", "no ?options"),
        ("file:///tmp/tokens#frag", "no ?options"),
        ("memory://somehost", "no host, path or options"),
        ("memory:///some/path", "no host, path or options"),
        ("memory://?size=10", "no host, path or options"),
    ],
)
def test_storage_urls_that_can_never_work_are_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("?", r"\?")) as info:
        storage_from_url(url)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "2", None, True])
def test_storage_url_timeouts_that_can_never_work_are_refused(timeout: Any) -> None:
    with pytest.raises(ConfigurationError, match="positive number of seconds"):
        storage_from_url("redis://127.0.0.1:6379/0", timeout=timeout)


def test_file_storage_with_filelock_where_fcntl_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows has no fcntl: the filelock library locks there (msvcrt).
    pytest.importorskip("filelock")
    from alf_session import _file

    monkeypatch.setattr(_file, "_lock_class", lambda: _file._FileLockLock)
    first, second = FileStorage(tmp_path / "t"), FileStorage(tmp_path / "t")
    key = first.key_for("abc")
    owner = first.acquire_lock(key, 30)
    assert owner is not None
    assert second.acquire_lock(key, 30) is None
    first.release_lock(key, owner)
    first.save(key, "v", 30)
    assert second.load(key) == "v"


def test_asynchronous_clients_are_refused_by_every_wrapper(redis_server: RedisServer) -> None:
    import redis.asyncio
    from cryptography.fernet import Fernet

    class AsyncStore:
        async def get(self, key: str) -> None: ...
        async def set(self, key: str, value: str) -> None: ...

    client = redis.asyncio.Redis(port=redis_server.port)
    for make in (
        lambda: RedisStorage(client),
        lambda: ObjectStorage(client),
        lambda: ObjectStorage(AsyncStore()),
        lambda: MemcacheStorage(AsyncStore()),
        lambda: EncryptedStorage(client, Fernet.generate_key()),
        lambda: TokenManager(lambda: "t", client, key="k"),
    ):
        # 0.1 took them: every get() a coroutine never awaited, read as garbage.
        with pytest.raises(ConfigurationError, match="asynchronous") as info:
            make()
        assert "redis.Redis rather than redis.asyncio.Redis" in str(info.value)


@pytest.mark.parametrize("key", [None, 42, 3.5, object()])
def test_an_encryption_key_of_the_wrong_type_is_a_configuration_error(key: Any) -> None:
    with pytest.raises(ConfigurationError, match="needs a Fernet key"):
        EncryptedStorage(MemoryStorage(), key)
    if key is not None:  # storage_from_url reads None as "no encryption"
        with pytest.raises(ConfigurationError, match="needs a Fernet key"):
            storage_from_url("memory://", encryption_key=key)
