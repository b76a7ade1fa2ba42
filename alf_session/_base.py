"""The storage contract, shared by :mod:`alf_session.storage` and its backends.

Kept apart from :mod:`alf_session.storage` so that the backend modules
(``_redis``, ``_file``, ``_objects``, ``_encrypted``) can subclass
:class:`TokenStorage` while :mod:`alf_session.storage` re-exports them.
"""

from __future__ import annotations

import math
import os
from typing import Protocol, runtime_checkable

DEFAULT_PREFIX = "alf_session:"


def new_owner() -> str:
    """A random lock owner: 128 bits from the OS's CSPRNG, in hex.

    What ``secrets.token_hex(16)`` returns, without importing :mod:`secrets`
    (1.6 ms, a sixth of the package's import time) for one line.
    """
    return os.urandom(16).hex()


@runtime_checkable
class KeyValueStore(Protocol):
    """Any object with ``get`` and ``set``: what ``token_storage`` accepts.

    .. versionadded:: 0.1
    """

    def get(self, key: str, /) -> object:
        """The value stored under ``key`` (``bytes`` or ``str``), or ``None``."""
        ...

    def set(self, key: str, value: str, /) -> object:
        """Store ``value`` under ``key``."""
        ...


class TokenStorage:
    """Base class of the storages alf-session can share tokens through.

    Subclasses implement :meth:`load`, :meth:`save` and :meth:`delete`, and,
    to give processes a single flight, :meth:`acquire_lock` and
    :meth:`release_lock` with ``can_lock = True``.

    Args:
        prefix: Namespace put in front of every key.

    Raises:
        ConfigurationError: ``prefix`` is not a ``str``.

    .. versionadded:: 0.1
    """

    #: Whether :meth:`acquire_lock` can lock across processes.
    can_lock = False
    #: Whether calls may block on I/O; the manager bounds those in time.
    blocking = True

    def __init__(self, *, prefix: str = DEFAULT_PREFIX) -> None:
        if not isinstance(prefix, str):
            from .errors import ConfigurationError

            # A bytes prefix would be spelt "b'...'" inside every key.
            raise ConfigurationError(
                f"a storage prefix must be a str such as 'my-service:', not {type(prefix).__name__}"
            )
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


def refuse_async(obj: object, wrapper: str) -> None:
    """Raise ConfigurationError if ``obj`` is an asynchronous client.

    Its ``get`` would return a coroutine that is never awaited: every read a
    miss (or garbage), and a RuntimeWarning, instead of a clear error.
    """
    import inspect

    get, set_ = getattr(obj, "get", None), getattr(obj, "set", None)
    # redis.asyncio's commands are plain functions that return coroutines.
    if (
        inspect.iscoroutinefunction(get)
        or inspect.iscoroutinefunction(set_)
        or ".asyncio" in type(obj).__module__
    ):
        from .errors import ConfigurationError

        raise ConfigurationError(
            f"{wrapper} got the asynchronous {type(obj).__name__}; requests is not: "
            "pass the synchronous client (redis.Redis rather than redis.asyncio.Redis)"
        )


def lock_key(key: str) -> str:
    """The key of the fetch lock of ``key``: same hash tag, so same cluster slot."""
    return f"{key}:lock"


def text(raw: object) -> str | None:
    """A stored value as ``str``: ``bytes`` decoded, empty meaning nothing.

    Bytes that are not UTF-8, and a value of another type, are
    :data:`GARBAGE` (the one rule for garbage, below): never raised, so that
    garbage under a key is overwritten rather than taken for an outage.
    """
    if raw is None:
        return None
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return GARBAGE
    elif not isinstance(raw, str):
        return GARBAGE
    return raw or None


def decode_errors() -> tuple[type[Exception], ...]:
    """Errors a client raises on a value it cannot decode.

    A ``decode_responses`` redis client on bytes that are not UTF-8, a Django
    cache on a bad pickle: garbage under the key, not an outage. It is read
    as a value the manager warns about and overwrites, rather than as a
    storage fault (which would leave the garbage in place). A function, used
    as ``except decode_errors():``, so that pickle is imported only then.
    """
    import pickle

    return (UnicodeError, ValueError, pickle.UnpicklingError)


#: The one rule for garbage: :meth:`TokenStorage.load` returns the string that
#: was saved, ``None`` when nothing is, and ``GARBAGE`` for anything else under
#: the key (bytes that aren't UTF-8, a value of another type, a ciphertext
#: that doesn't decrypt or belongs to another key, a file that can't be
#: trusted). It is not JSON, never a token: the manager counts it as a
#: storage error, warns once a minute, and overwrites it with its next save.
#: Never raise for it: a raise is an outage, and the garbage would stay.
GARBAGE = "\ufffd"


def floor_seconds(ttl: float) -> int:
    """Whole seconds for a value's TTL: rounded down, so it never outlives the token."""
    return max(1, int(ttl))


def ceil_seconds(ttl: float) -> int:
    """Whole seconds for a lock's TTL: rounded up, so it never ends early."""
    return max(1, math.ceil(ttl))
