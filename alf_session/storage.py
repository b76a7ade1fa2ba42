"""Storage: the tier shared by every process (and host) that uses one credential.

A :class:`~alf_session.TokenManager` keeps its token in memory and, when given
a storage, shares it there. ``token_storage`` may be a :class:`TokenStorage`
or **any object with ``get`` and ``set``**: :func:`as_storage` wraps it once.

What each object becomes:

* a :class:`TokenStorage` (:class:`MemoryStorage`, :class:`RedisStorage`,
  :class:`FileStorage`, :class:`EncryptedStorage`, your subclass): itself;
* ``redis.Redis``, ``redis.cluster.RedisCluster``, ``valkey.Valkey``:
  :class:`RedisStorage`;
* a pymemcache ``Client``, ``PooledClient`` or ``HashClient``:
  :class:`MemcacheStorage` (TTL by ``expire=``, lock by ``add``);
* a Django cache: :class:`DjangoCacheStorage` (``timeout=``, ``add``);
* any other object with ``get`` and ``set``: :class:`ObjectStorage`, which
  probes ``set`` for ``ex``/``expire``/``timeout``/``ttl`` and ``nx``, and
  uses ``add`` as a lock;
* a URL string: :func:`storage_from_url`.

What a storage holds under one key is one string, the token as JSON (made and
read by the manager). The client secret is never stored; keys are hashes of
the credential's identity (token endpoint, client id, grant, scope, audience).
redis, pymemcache, Django, filelock and cryptography are imported only by the
storage that uses them.

Contract for implementers (subclass :class:`TokenStorage`):

* ``load``/``save``/``delete`` may raise anything when the backend is down:
  the manager catches it, counts it, warns once per interval and carries on
  with its memory and the token endpoint.
* ``delete(key, expected)`` deletes only while ``key`` still holds
  ``expected`` (atomically where the backend can), so that invalidating an
  old token never deletes a newer one.
* ``acquire_lock`` returns an owner string when it took the lock and ``None``
  when someone else holds it; ``release_lock`` releases only the lock that
  owner took. The lock must expire by itself after ``ttl`` seconds, so that
  a holder that died blocks nobody for longer. A storage that cannot lock
  leaves ``can_lock`` False and gets in-process single flight only.
* Methods are called from many threads and, after ``fork()``, from children.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from . import _fork
from ._base import DEFAULT_PREFIX, KeyValueStore, TokenStorage, new_owner
from ._encrypted import EncryptedStorage
from ._file import FileStorage
from ._objects import DjangoCacheStorage, MemcacheStorage, ObjectStorage
from ._redis import RedisStorage, redis_from_url, sentinel_from_url

__all__ = [
    "DEFAULT_PREFIX",
    "DjangoCacheStorage",
    "EncryptedStorage",
    "FileStorage",
    "KeyValueStore",
    "MemcacheStorage",
    "MemoryStorage",
    "ObjectStorage",
    "RedisStorage",
    "TokenStorage",
    "as_storage",
    "storage_from_url",
]


class MemoryStorage(TokenStorage):
    """A storage in this process's memory, shared by the managers given it.

    Useful to let several sessions with the same credential share one token,
    and in tests. Thread-safe; after ``fork()`` the child has its own copy.

    .. versionadded:: 0.1
    """

    can_lock = True
    blocking = False

    def __init__(
        self, *, prefix: str = DEFAULT_PREFIX, clock: Callable[[], float] | None = None
    ) -> None:
        super().__init__(prefix=prefix)
        self._clock = clock or time.monotonic
        self._data: dict[str, tuple[str, float | None]] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._mutex = threading.Lock()
        _fork.register(self)

    def _after_fork(self) -> None:
        self._mutex = threading.Lock()
        self._locks.clear()

    def _now(self) -> float:
        return self._clock()

    def load(self, key: str) -> str | None:
        with self._mutex:
            item = self._data.get(key)
            if item is None:
                return None
            value, deadline = item
            if deadline is not None and deadline <= self._now():
                del self._data[key]
                return None
            return value

    def save(self, key: str, value: str, ttl: float | None) -> None:
        with self._mutex:
            self._data[key] = (value, None if ttl is None else self._now() + ttl)

    def delete(self, key: str, expected: str | None = None) -> None:
        with self._mutex:
            item = self._data.get(key)
            if item is not None and (expected is None or item[0] == expected):
                del self._data[key]

    def acquire_lock(self, key: str, ttl: float) -> str | None:
        with self._mutex:
            now = self._now()
            held = self._locks.get(key)
            if held is not None and held[1] > now:
                return None
            owner = new_owner()
            self._locks[key] = (owner, now + ttl)
            return owner

    def release_lock(self, key: str, owner: str) -> None:
        with self._mutex:
            held = self._locks.get(key)
            if held is not None and held[0] == owner:
                del self._locks[key]


def as_storage(obj: object, *, prefix: str = DEFAULT_PREFIX) -> TokenStorage:
    """Wrap ``obj`` as a :class:`TokenStorage`, once, at construction.

    A :class:`TokenStorage` is returned as it is, a string is read by
    :func:`storage_from_url`, and any other object needs ``get`` and ``set``
    (see the table in this module's documentation for what each becomes).

    Args:
        obj: The storage, client, cache or URL.
        prefix: Namespace put in front of every key (not for a
            :class:`TokenStorage`, which has its own).

    Raises:
        ConfigurationError: ``obj`` has no ``get`` and ``set``, or is an
            asyncio client.

    .. versionadded:: 0.1
    """
    from .errors import ConfigurationError

    if isinstance(obj, TokenStorage):
        return obj
    if isinstance(obj, str):
        return storage_from_url(obj, prefix=prefix)
    get, set_ = getattr(obj, "get", None), getattr(obj, "set", None)
    if not (callable(get) and callable(set_)):
        raise ConfigurationError(
            f"token_storage must have get(key) and set(key, value) methods "
            f"(a redis client, a Django cache, …); {type(obj).__name__} has not"
        )
    import inspect

    # redis.asyncio's commands are plain functions that return coroutines.
    if (
        inspect.iscoroutinefunction(get)
        or inspect.iscoroutinefunction(set_)
        or ".asyncio" in type(obj).__module__
    ):
        raise ConfigurationError(
            f"token_storage {type(obj).__name__} is asynchronous; requests is not: "
            "pass the synchronous client (redis.Redis rather than redis.asyncio.Redis)"
        )
    family = _family(obj)
    if family in ("redis", "valkey") and callable(getattr(obj, "register_script", None)):
        return RedisStorage(obj, prefix=prefix)
    if family == "pymemcache":
        return MemcacheStorage(obj, prefix=prefix)
    if family == "django":
        return DjangoCacheStorage(obj, prefix=prefix)
    return ObjectStorage(obj, prefix=prefix)


def _family(obj: object) -> str:
    """The top-level package of ``obj``'s class or of one of its bases."""
    for cls in type(obj).__mro__:
        top = cls.__module__.partition(".")[0]
        if top in ("redis", "valkey", "pymemcache", "django"):
            return top
    return ""


_memory: dict[str, MemoryStorage] = {}
_memory_lock = threading.Lock()


def storage_from_url(
    url: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    encryption_key: Any = None,
    timeout: float = 2.0,
) -> TokenStorage:
    """A storage from a URL, as in a setting or an environment variable.

    * ``redis://[[user]:password@]host[:port][/db]``, ``rediss://…`` (TLS):
      :class:`RedisStorage`;
    * ``redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/service[/db]``
      (``rediss+sentinel://`` for TLS): :class:`RedisStorage` on the master
      that those Redis Sentinels name ``service``, followed through failovers
      (``?sentinel_password=`` if the sentinels want one);
    * ``file:///path/to/directory``: :class:`FileStorage`;
    * ``memory://``: this process's :class:`MemoryStorage`.

    Redis clients made here have socket timeouts of ``timeout`` seconds and
    a short retry policy, unless the URL's query sets its own
    (``?socket_timeout=5``). Every ``memory://`` of one process (and prefix)
    is the same storage, as every ``redis://`` URL naming one server is.

    Args:
        url: The URL.
        prefix: Namespace put in front of every key.
        encryption_key: A Fernet key (or keys) to wrap the storage in an
            :class:`EncryptedStorage`.
        timeout: Socket timeouts of a Redis client, in seconds.

    Raises:
        ConfigurationError: an unknown scheme, a bad URL (a redis option
            redis-py does not know, options after ``file://`` or
            ``memory://``), a ``timeout`` that is not a positive number of
            seconds, or a missing package.

    .. versionadded:: 0.1
    """
    from urllib.parse import unquote, urlsplit

    from .errors import ConfigurationError

    if not isinstance(url, str):
        raise ConfigurationError(f"a storage URL must be a str, not {type(url).__name__}")
    if not isinstance(prefix, str):
        raise ConfigurationError(
            f"a storage prefix must be a str such as 'my-service:', not {type(prefix).__name__}"
        )
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 < timeout < float("inf")
    ):
        raise ConfigurationError(
            f"storage timeout must be a positive number of seconds, not {timeout!r}"
        )
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        raise ConfigurationError("bad storage URL (it could not be parsed)") from None
    scheme = parts.scheme.lower()
    storage: TokenStorage
    if scheme in ("redis", "rediss"):
        storage = RedisStorage(redis_from_url(url.strip(), timeout=timeout), prefix=prefix)
    elif scheme in ("redis+sentinel", "rediss+sentinel"):
        storage = RedisStorage(sentinel_from_url(url.strip(), timeout=timeout), prefix=prefix)
    elif scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(
                f"file:// storage must be on this host (file:///path), not on {parts.netloc!r}"
            )
        path = unquote(parts.path)
        if not path:
            raise ConfigurationError("file:// storage needs a directory: file:///path/to/dir")
        if parts.query or parts.fragment:
            raise ConfigurationError(
                "file:// storage takes no ?options or #fragment (a '?' or '#' in the "
                "directory's name is spelt %3F or %23)"
            )
        storage = FileStorage(os.path.expanduser(path), prefix=prefix)
    elif scheme == "memory":
        if parts.netloc or parts.path.strip("/") or parts.query:
            raise ConfigurationError(
                "memory:// storage takes no host, path or options: it is this process's memory"
            )
        with _memory_lock:
            storage = _memory.get(prefix) or _memory.setdefault(
                prefix, MemoryStorage(prefix=prefix)
            )
    else:
        # Only the scheme is quoted: the rest may hold a password.
        raise ConfigurationError(
            f"unknown storage URL scheme {scheme + ':' if scheme else '(none)'}; "
            "use redis://, rediss://, redis+sentinel://, file:/// or memory://"
        )
    if encryption_key is not None:
        storage = EncryptedStorage(storage, encryption_key)
    return storage
