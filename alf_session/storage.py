"""Storage: the tier shared by every process (and host) that uses one credential.

A :class:`~alf_session.TokenManager` keeps its token in memory and, when given
a storage, shares it there. ``token_storage`` may be a :class:`TokenStorage`
or **any object with ``get`` and ``set``** (a redis client, a pymemcache
client, a Django cache, your own class): :func:`as_storage` wraps it once.

What a storage holds under one key is one string, the token as JSON (made and
read by the manager). The client secret is never stored; keys are hashes of
the credential's identity.

Contract for implementers (subclass :class:`TokenStorage`):

* ``load``/``save``/``delete`` may raise anything when the backend is down:
  the manager catches it, counts it, warns once per interval and carries on
  with its memory and the token endpoint.
* ``acquire_lock`` returns an owner string when it took the lock and ``None``
  when someone else holds it; ``release_lock`` releases only the lock that
  owner took. A storage that cannot lock leaves ``can_lock`` False and gets
  in-process single flight only.
* Methods are called from many threads and, after ``fork()``, from children.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from . import _fork

__all__ = ["KeyValueStore", "MemoryStorage", "TokenStorage", "as_storage"]

DEFAULT_PREFIX = "alf_session:"


@runtime_checkable
class KeyValueStore(Protocol):
    """Any object with ``get`` and ``set``: what ``token_storage`` accepts."""

    def get(self, key: str, /) -> object:
        """The value stored under ``key`` (``bytes`` or ``str``), or ``None``."""
        ...

    def set(self, key: str, value: str, /) -> object:
        """Store ``value`` under ``key``."""
        ...


class TokenStorage:
    """Base class of the storages alf-session can share tokens through.

    Args:
        prefix: Namespace put in front of every key.

    .. versionadded:: 0.1
    """

    #: Whether :meth:`acquire_lock` can lock across processes.
    can_lock = False
    #: Whether calls may block on I/O; the manager bounds those in time.
    blocking = True

    def __init__(self, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix

    def key_for(self, name: str) -> str:
        """The key to store the token named ``name`` (a hex digest) under.

        The name is wrapped in ``{}``, a Redis Cluster hash tag, so that the
        token and its lock live in one slot.
        """
        return f"{self.prefix}{{{name}}}"

    def load(self, key: str) -> str | None:
        """The value under ``key``, or ``None``."""
        raise NotImplementedError

    def save(self, key: str, value: str, ttl: float | None) -> None:
        """Store ``value`` under ``key``, expiring after ``ttl`` seconds if given."""
        raise NotImplementedError

    def delete(self, key: str, expected: str | None = None) -> None:
        """Delete ``key``; with ``expected``, only while it still holds that value."""
        raise NotImplementedError

    def acquire_lock(self, key: str, ttl: float) -> str | None:
        """Try once to take the fetch lock of ``key`` for ``ttl`` seconds.

        Returns:
            An owner string to release it with, or ``None`` if it is held.
        """
        return None

    def release_lock(self, key: str, owner: str) -> None:
        """Release the lock of ``key`` if ``owner`` still holds it."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prefix={self.prefix!r})"


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
            owner = secrets.token_hex(16)
            self._locks[key] = (owner, now + ttl)
            return owner

    def release_lock(self, key: str, owner: str) -> None:
        with self._mutex:
            held = self._locks.get(key)
            if held is not None and held[0] == owner:
                del self._locks[key]


def as_storage(obj: object) -> TokenStorage:
    """Wrap ``obj`` as a :class:`TokenStorage`, once, at construction.

    A :class:`TokenStorage` is returned as it is. Any other object needs
    ``get`` and ``set``.

    Raises:
        ConfigurationError: ``obj`` has no ``get`` and ``set``.
    """
    from .errors import ConfigurationError

    if isinstance(obj, TokenStorage):
        return obj
    if not (callable(getattr(obj, "get", None)) and callable(getattr(obj, "set", None))):
        raise ConfigurationError(
            f"token_storage must have get(key) and set(key, value) methods "
            f"(a redis client, a Django cache, …); {type(obj).__name__} has not"
        )
    return _wrap_object(obj)


def _wrap_object(obj: object) -> TokenStorage:
    raise NotImplementedError  # replaced below by the storage backends module
