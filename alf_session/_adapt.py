"""What ``token_storage`` may be, made into a :class:`TokenStorage`: objects and URLs.

:func:`as_storage` and :func:`open_url` live here, below
:mod:`alf_session._encrypted` (which wraps whatever :func:`as_storage`
accepts) and :mod:`alf_session.storage` (which adds encryption to a URL), so
that the storage modules import one another in one direction only.
"""

from __future__ import annotations

import os
import threading

from ._base import DEFAULT_PREFIX, TokenStorage
from ._file import FileStorage
from ._memory import MemoryStorage
from ._objects import DjangoCacheStorage, MemcacheStorage, ObjectStorage
from ._redis import RedisStorage, redis_from_url, sentinel_from_url

__all__ = ["as_storage", "open_url"]


def as_storage(obj: object, *, prefix: str = DEFAULT_PREFIX) -> TokenStorage:
    """Wrap ``obj`` as a :class:`TokenStorage`, once, at construction.

    A :class:`TokenStorage` is returned as it is, a string is read by
    :func:`~alf_session.storage_from_url`, and any other object needs ``get`` and ``set``
    (see the table in :mod:`alf_session.storage` for what each becomes).

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
        return open_url(obj, prefix=prefix)
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


def open_url(url: str, *, prefix: str = DEFAULT_PREFIX, timeout: float = 2.0) -> TokenStorage:
    """The storage a URL names: :func:`~alf_session.storage_from_url` without encryption."""
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
    return storage
