"""Wrappers that turn any object with ``get`` and ``set`` into a TokenStorage.

:func:`alf_session.as_storage` picks one, once, at construction:
:class:`MemcacheStorage` for pymemcache clients, :class:`DjangoCacheStorage`
for Django caches, :class:`ObjectStorage` for anything else (its ``set`` is
probed for a TTL keyword and ``nx``, and ``add`` is used as a lock).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from . import _fork
from ._base import (
    DEFAULT_PREFIX,
    GARBAGE,
    TokenStorage,
    ceil_seconds,
    decode_errors,
    floor_seconds,
    lock_key,
    new_owner,
    refuse_async,
    text,
)
from ._redis import wrong_type

__all__ = ["DjangoCacheStorage", "MemcacheStorage", "ObjectStorage"]

# The keyword a set() takes a TTL in, in seconds, by library: redis-like
# clients (ex), memcache (expire), Django and cachelib (timeout), others (ttl).
_TTL_KEYWORDS = ("ex", "expire", "timeout", "ttl")


def _keywords(func: object) -> frozenset[str]:
    """The names ``func`` accepts as keywords (empty when it can't be told)."""
    import inspect

    try:
        signature = inspect.signature(func)  # type: ignore[arg-type]  # any callable
    except (TypeError, ValueError):  # some C functions have no signature
        return frozenset()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in signature.parameters.values() if p.kind in kinds)


def _ttl_keyword(func: object) -> str | None:
    names = _keywords(func)
    return next((name for name in _TTL_KEYWORDS if name in names), None)


def _method(obj: object, name: str) -> Callable[..., Any] | None:
    method = getattr(obj, name, None)
    return method if callable(method) else None


class ObjectStorage(TokenStorage):
    """Any object with ``get(key)`` and ``set(key, value)``, as a storage.

    At construction ``set``'s signature is probed once for a TTL keyword
    (``ex``, ``expire``, ``timeout`` or ``ttl``, in whole seconds; none is
    passed when it has none) and for ``nx``. The fetch lock is
    ``set(lock, owner, nx=True, <ttl>=…)`` or ``add(lock, owner, <ttl>=…)``
    when the object offers one with a TTL: a lock without one would outlive
    a holder that died. Values are decoded from ``bytes`` or ``str``;
    ``delete`` is used when present, else a value is overwritten by an empty
    one.

    Compare-and-delete is a ``get`` then a ``delete``: the object offers
    nothing atomic, so a token stored between the two by another process is
    lost (it is fetched again; nothing fails).

    Args:
        obj: The object. Its methods are called from several threads.
        prefix: Namespace put in front of every key.

    .. versionadded:: 0.1
    """

    def __init__(self, obj: Any, *, prefix: str = DEFAULT_PREFIX) -> None:
        refuse_async(obj, type(self).__name__)
        super().__init__(prefix=prefix)
        self.obj = obj
        self._ttl_keyword = _ttl_keyword(obj.set)
        self._delete = _method(obj, "delete")
        self._add = _method(obj, "add")
        self._add_ttl_keyword = None if self._add is None else _ttl_keyword(self._add)
        self._lock_by: str | None = None
        if self._ttl_keyword is not None and "nx" in _keywords(obj.set):
            self._lock_by = "set_nx"
        elif self._add_ttl_keyword is not None:
            self._lock_by = "add"
        self.can_lock = self._lock_by is not None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.obj).__name__}, prefix={self.prefix!r})"

    def _ttl(self, ttl: float | None, keyword: str | None) -> dict[str, Any]:
        if keyword is None or ttl is None:
            return {}
        return {keyword: floor_seconds(ttl)}

    def load(self, key: str) -> str | None:
        try:
            return text(self.obj.get(key))
        except decode_errors():  # a value the object cannot decode: garbage, overwritten
            return GARBAGE
        except Exception as exc:
            if wrong_type(exc):  # a Redis behind it holds a hash, a list…: overwritten too
                return GARBAGE
            raise

    def save(self, key: str, value: str, ttl: float | None) -> None:
        self.obj.set(key, value, **self._ttl(ttl, self._ttl_keyword))

    def delete(self, key: str, expected: str | None = None) -> None:
        if expected is not None and self.load(key) != expected:
            return
        self._remove(key)

    def _remove(self, key: str) -> None:
        if self._delete is not None:
            self._delete(key)
        else:
            # text() reads an empty value as nothing.
            self.obj.set(key, "", **self._ttl(1, self._ttl_keyword))

    def acquire_lock(self, key: str, ttl: float) -> str | None:
        owner = new_owner()
        name = lock_key(key)
        if self._lock_by == "set_nx" and self._ttl_keyword is not None:
            taken = self.obj.set(name, owner, nx=True, **{self._ttl_keyword: ceil_seconds(ttl)})
        elif self._lock_by == "add" and self._add is not None and self._add_ttl_keyword:
            taken = self._add(name, owner, **{self._add_ttl_keyword: ceil_seconds(ttl)})
        else:
            return None
        return owner if taken else None

    def release_lock(self, key: str, owner: str) -> None:
        # Without delete() the lock simply expires; the waiters don't need the
        # release: they poll the storage and take the token once it is there.
        name = lock_key(key)
        if self._delete is not None and self.load(name) == owner:
            self._delete(name)


# memcached reads an expiry above 30 days as a UNIX time (protocol.txt, "Expiration times").
_MEMCACHE_MAX_RELATIVE = 30 * 24 * 3600

# memcached keys: at most 250 bytes, no whitespace or control characters
# (protocol.txt, "Keys"); pymemcache refuses them on each call, which would
# make every storage call a fault.
_MEMCACHE_MAX_KEY = 250
# What key_for adds to the prefix at most: "{" + 64 hex digits + "}" + ":lock".
_MEMCACHE_KEY_TAIL = len("{}") + 64 + len(":lock")


def _memcache_key_fault(key: bytes) -> str | None:
    """Why memcached can't take ``key`` (bytes, without the client's key_prefix), or None."""
    bad = sorted({chr(b) for b in key if b <= 0x20 or b == 0x7F})
    if bad:
        return f"it holds whitespace or control characters ({', '.join(map(repr, bad))})"
    return None


class MemcacheStorage(ObjectStorage):
    """A pymemcache client (``Client``, ``PooledClient``, ``HashClient``) as a storage.

    TTL by ``expire=`` (at most 30 days: memcached would read more as a
    date), the lock by ``add`` (atomic on the server), and every call with
    ``noreply=False`` so that its result is the server's answer: with
    pymemcache's default ``noreply=True``, ``add`` always says it succeeded.
    Compare-and-delete is atomic by ``gets``/``cas``: the matching value is
    replaced by an empty one that expires at once.

    A plain ``Client`` owns one socket and is not thread-safe, so calls to
    it are serialized; in a forked child its socket is closed (pymemcache
    reconnects), never shared with the parent. Give the client a
    ``timeout``.

    .. versionadded:: 0.1
    """

    def __init__(self, obj: Any, *, prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__(obj, prefix=prefix)
        self._check_prefix()
        self.can_lock = self._add is not None
        name = type(obj).__name__
        # PooledClient, and HashClient(use_pooling=True), lend each thread its
        # own connection; anything else shares one socket between threads.
        self._serial: threading.Lock | None = None
        if not (name == "PooledClient" or getattr(obj, "use_pooling", False) is True):
            self._serial = threading.Lock()
        _fork.register(self)

    def _encode_key(self, key: str) -> bytes:
        """``key`` as the client will send it, or UnicodeEncodeError."""
        if getattr(self.obj, "allow_unicode_keys", False) is True:
            return key.encode("utf-8")
        return key.encode("ascii")

    def _client_prefix(self) -> bytes:
        client_prefix = getattr(self.obj, "key_prefix", b"")
        return client_prefix if isinstance(client_prefix, bytes) else b""

    def _check_prefix(self) -> None:
        from .errors import ConfigurationError

        prefix = self.prefix
        try:
            encoded = self._encode_key(prefix)
        except UnicodeEncodeError:
            raise ConfigurationError(
                f"memcached prefix {prefix!r} is not ASCII, and the client was not made with "
                "allow_unicode_keys=True; use an ASCII prefix"
            ) from None
        fault = _memcache_key_fault(encoded)
        if fault is not None:
            raise ConfigurationError(
                f"memcached prefix {prefix!r} can never be part of a memcached key: {fault}; "
                "use letters, digits and punctuation such as 'my-service:'"
            )
        room = _MEMCACHE_MAX_KEY - len(self._client_prefix()) - _MEMCACHE_KEY_TAIL
        if len(encoded) > room:
            raise ConfigurationError(
                f"memcached prefix is {len(encoded)} bytes; with the client's key_prefix and "
                f"the {_MEMCACHE_KEY_TAIL} bytes of a token's name, keys would pass memcached's "
                f"{_MEMCACHE_MAX_KEY}-byte limit: use a prefix of at most {max(room, 0)} bytes"
            )

    def key_for(self, name: str) -> str:
        """The key of the token named ``name``; hashed when memcached couldn't take it as it is.

        A name with spaces, or a long one (a ``cache_key`` a provider chose),
        is replaced by its SHA-256: keys stay within memcached's rules, and
        one credential still gets one key.
        """
        key = super().key_for(name)
        try:
            encoded = self._encode_key(key)
        except UnicodeEncodeError:
            encoded = b" "  # hashed below
        size = len(self._client_prefix()) + len(encoded) + len(":lock")
        if _memcache_key_fault(encoded) is None and size <= _MEMCACHE_MAX_KEY:
            return key
        import hashlib

        return super().key_for(hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest())

    def _after_fork(self) -> None:
        if self._serial is not None:
            self._serial = threading.Lock()
        close = _method(self.obj, "close")
        if close is not None:
            close()

    def _call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        serial = self._serial
        if serial is None:
            return func(*args, **kwargs)
        with serial:
            return func(*args, **kwargs)

    def _expire(self, ttl: float | None) -> int:
        return 0 if ttl is None else min(floor_seconds(ttl), _MEMCACHE_MAX_RELATIVE)

    def load(self, key: str) -> str | None:
        try:
            return text(self._call(self.obj.get, key))
        except decode_errors():  # the client's serde could not read it: garbage
            return GARBAGE

    def save(self, key: str, value: str, ttl: float | None) -> None:
        self._call(self.obj.set, key, value, expire=self._expire(ttl), noreply=False)

    def delete(self, key: str, expected: str | None = None) -> None:
        gets, cas = _method(self.obj, "gets"), _method(self.obj, "cas")
        if expected is None:
            self._call(self.obj.delete, key, noreply=False)
        elif gets is not None and cas is not None:
            value, token = self._call(gets, key)
            if token is not None and text(value) == expected:
                # Fails (returns False) if the value changed since gets(): the
                # newer token stays.
                self._call(cas, key, b"", token, expire=1, noreply=False)
        elif text(self._call(self.obj.get, key)) == expected:
            self._call(self.obj.delete, key, noreply=False)

    def acquire_lock(self, key: str, ttl: float) -> str | None:
        if self._add is None:
            return None
        owner = new_owner()
        taken = self._call(self._add, lock_key(key), owner, expire=ceil_seconds(ttl), noreply=False)
        return owner if taken else None

    def release_lock(self, key: str, owner: str) -> None:
        # Not by cas: the empty value it leaves would block add() for a second.
        # A get then a delete can only go wrong if the lock expired between
        # the two, when its holder was late anyway.
        name = lock_key(key)
        if text(self._call(self.obj.get, name)) == owner:
            self._call(self.obj.delete, name, noreply=False)


class DjangoCacheStorage(ObjectStorage):
    """A Django cache (``django.core.cache.cache`` or ``caches[alias]``) as a storage.

    TTL by ``timeout=`` (``None``, no expiry, for a token without one), the
    lock by ``add``. Django offers no compare-and-delete, so invalidation is
    a ``get`` then a ``delete`` (see :class:`ObjectStorage`).
    The default ``cache`` proxy gives each thread its own connection.

    .. versionadded:: 0.1
    """

    def __init__(self, obj: Any, *, prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__(obj, prefix=prefix)
        self._ttl_keyword = "timeout"
        self._add_ttl_keyword = "timeout"
        self._lock_by = "add" if self._add is not None else None
        self.can_lock = self._lock_by is not None
        fault = self._key_fault(lock_key(super().key_for("0" * 64)))
        if fault is not None:
            from .errors import ConfigurationError

            raise ConfigurationError(
                f"the Django cache {type(obj).__name__} cannot take keys made with prefix "
                f"{prefix!r} ({fault}); use a short prefix of letters, digits and punctuation "
                "such as 'my-service:'"
            )

    def _key_fault(self, key: str) -> str | None:
        """What the cache says against ``key``, if it refuses it (memcached backends do)."""
        make_key = _method(self.obj, "make_key")
        validate = _method(self.obj, "validate_key")
        if make_key is None or validate is None:
            return None
        import warnings

        try:
            from django.core.cache.backends.base import InvalidCacheKey
        except ImportError:  # pragma: no cover - a Django cache without Django
            return None
        with warnings.catch_warnings():
            # Other backends only warn (CacheKeyWarning) and take the key.
            warnings.simplefilter("ignore")
            try:
                validate(make_key(key))
            except InvalidCacheKey as exc:
                return str(exc)[:120]
        return None

    def key_for(self, name: str) -> str:
        """The key of the token named ``name``; hashed when the cache would refuse it."""
        key = super().key_for(name)
        if self._key_fault(lock_key(key)) is None:
            return key
        import hashlib

        return super().key_for(hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest())

    def save(self, key: str, value: str, ttl: float | None) -> None:
        # Django reads an absent timeout as its default (300 s) and None as never.
        self.obj.set(key, value, timeout=None if ttl is None else floor_seconds(ttl))
