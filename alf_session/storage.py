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
  the manager catches it, counts it, warns once per outage and carries on
  with its memory and the token endpoint (see :mod:`alf_session._guard`).
* ``load`` returns the string saved, ``None`` when there is none, and
  ``alf_session._base.GARBAGE`` for anything else under the key (the one rule
  for garbage): the manager counts it, warns once a minute and overwrites it.
  It never raises for garbage: a raise is an outage, and the garbage would stay.
* ``blocking = False`` says a call never waits (memory): no thread ever
  bounds it. The manager runs a blocking storage's calls in the caller's
  thread when the client's own timeouts bound them within
  ``storage_timeout``, else on one long-lived worker thread per backend.
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

from typing import Any

from ._adapt import as_storage, open_url
from ._base import DEFAULT_PREFIX, KeyValueStore, TokenStorage
from ._encrypted import EncryptedStorage
from ._file import FileStorage
from ._memory import MemoryStorage
from ._objects import DjangoCacheStorage, MemcacheStorage, ObjectStorage
from ._redis import RedisStorage

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

    A ``redis://`` client made here ends every call within ``timeout``
    seconds: one retry, and socket timeouts that fit two tries in it, unless
    the URL's query sets its own (``?socket_timeout=5``); its calls then run
    in the caller's thread (a ``storage_timeout`` of at least ``timeout``).
    A ``redis+sentinel://`` client has socket timeouts of ``timeout`` and
    asks the sentinels with the same. Every ``memory://`` of one process (and
    prefix) is the same storage, as every ``redis://`` URL naming one server
    is.

    Args:
        url: The URL.
        prefix: Namespace put in front of every key.
        encryption_key: A Fernet key (or keys) to wrap the storage in an
            :class:`EncryptedStorage`.
        timeout: Longest one call to a ``redis://`` storage takes, retry
            included, in seconds (socket timeouts of a ``redis+sentinel://``
            one).

    Raises:
        ConfigurationError: an unknown scheme, a bad URL (a redis option
            redis-py does not know, options after ``file://`` or
            ``memory://``), a ``timeout`` that is not a positive number of
            seconds, or a missing package.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       ``redis+sentinel://``; ``timeout`` bounds a whole ``redis://`` call.
    """
    storage = open_url(url, prefix=prefix, timeout=timeout)
    if encryption_key is not None:
        storage = EncryptedStorage(storage, encryption_key)
    return storage
