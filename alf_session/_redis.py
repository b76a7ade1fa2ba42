"""Redis (and Redis Cluster, Valkey) as the shared token storage."""

from __future__ import annotations

import math
from typing import Any

from ._base import (
    DEFAULT_PREFIX,
    GARBAGE,
    TokenStorage,
    decode_errors,
    lock_key,
    new_owner,
    refuse_async,
    text,
)

__all__ = ["RedisStorage", "redis_from_url"]

# Compare-and-delete, atomic on the server: the key is deleted only while it
# still holds the value the caller saw (redis-py lock.py LUA_RELEASE_SCRIPT).
# It releases a lock only for its owner, and invalidates a token without
# deleting a newer one that another process stored meanwhile.
_COMPARE_AND_DELETE = """\
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

# A lock key with no expiry is not a lock this library took (they all have
# PX): something else wrote it. Deleted, atomically only while it still has
# no expiry, so that a real lock taken meanwhile stays.
_DELETE_IF_PERMANENT = """\
if redis.call('pttl', KEYS[1]) == -1 then
    return redis.call('del', KEYS[1])
end
return 0
"""


def wrong_type(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis's WRONGTYPE error: a hash, list, set… under a string's key.

    That is garbage under the key, to be overwritten (``SET`` replaces a key
    of any type), not an outage. Told by the server's error code, so that
    redis-py, valkey and the clients wrapped by Django look alike.
    """
    return type(exc).__name__ == "ResponseError" and "WRONGTYPE" in str(exc)[:80]


class RedisStorage(TokenStorage):
    """Tokens in Redis, shared by every process and host that can reach it.

    Each token is one JSON string with a TTL (``PX``) that ends no later than
    the token. The fetch lock is ``SET lock owner NX PX ttl`` with a random
    owner from the OS's CSPRNG, released by a Lua compare-and-delete, so only
    its owner can release it and a dead owner's lock expires by itself.
    Token and lock keys share a ``{hash tag}``, hence one cluster slot.

    A value of another type under the token's key (a hash, a list: Redis
    answers ``WRONGTYPE``) is read as garbage and overwritten by the next
    save, never taken for an outage; so is a lock key without an expiry.

    Args:
        client: A synchronous ``redis.Redis``, ``redis.cluster.RedisCluster``
            or ``valkey.Valkey`` client (``decode_responses`` either way).
            Give it socket timeouts: the manager bounds each call anyway, but
            a bounded client gives up its connection sooner.
        prefix: Namespace put in front of every key.

    Thread-safety and fork-safety are the client's: redis-py's connection
    pools are both.

    .. versionadded:: 0.1
    """

    can_lock = True

    def __init__(self, client: Any, *, prefix: str = DEFAULT_PREFIX) -> None:
        from .errors import ConfigurationError

        register = getattr(client, "register_script", None)
        if not callable(register) or not callable(getattr(client, "set", None)):
            raise ConfigurationError(
                "RedisStorage needs a synchronous redis client (redis.Redis, "
                f"redis.cluster.RedisCluster, valkey.Valkey), not {type(client).__name__}"
            )
        refuse_async(client, "RedisStorage")
        super().__init__(prefix=prefix)
        self.client = client
        self._compare_and_delete = register(_COMPARE_AND_DELETE)
        self._delete_if_permanent = register(_DELETE_IF_PERMANENT)

    def __repr__(self) -> str:
        # Never the client's repr: it may carry a user name or a URL.
        where = ""
        pool = getattr(self.client, "connection_pool", None)
        options = getattr(pool, "connection_kwargs", None)
        if isinstance(options, dict) and "host" in options:
            where = f"{options['host']}:{options.get('port', 6379)}/{options.get('db', 0)}, "
        return f"RedisStorage({where}prefix={self.prefix!r})"

    def load(self, key: str) -> str | None:
        try:
            return text(self.client.get(key))
        except decode_errors():  # decode_responses=True on bytes that aren't UTF-8
            return GARBAGE
        except Exception as exc:
            if wrong_type(exc):
                return GARBAGE
            raise

    def save(self, key: str, value: str, ttl: float | None) -> None:
        if ttl is None:
            self.client.set(key, value)
        else:
            # Rounded down: the stored copy never outlives the token.
            self.client.set(key, value, px=max(1, int(ttl * 1000)))

    def delete(self, key: str, expected: str | None = None) -> None:
        if expected is None:
            self.client.delete(key)
        else:
            self._delete_if(key, expected)

    def _delete_if(self, key: str, expected: str) -> None:
        try:
            self._compare_and_delete(keys=[key], args=[expected])
        except Exception as exc:
            if not wrong_type(exc):
                raise
            # Not a string, so not the value expected: nothing to delete.

    def acquire_lock(self, key: str, ttl: float) -> str | None:
        owner = new_owner()
        name, px = lock_key(key), max(1, math.ceil(ttl * 1000))
        taken = self.client.set(name, owner, nx=True, px=px)
        if not taken and self._delete_if_permanent(keys=[name]):
            # The lock key held something without an expiry (not a lock):
            # removed, so the lock can be taken, once.
            taken = self.client.set(name, owner, nx=True, px=px)
        return owner if taken else None

    def release_lock(self, key: str, owner: str) -> None:
        self._delete_if(lock_key(key), owner)


def redis_from_url(url: str, *, timeout: float) -> Any:
    """A redis client for ``url`` whose every call is bounded.

    Socket timeouts and a short retry policy are set unless the URL's query
    sets them (redis-py lets the URL win), so that a Redis that is down is
    reported in about ``timeout`` seconds instead of after redis-py 6's
    default of ten retries.
    """
    from urllib.parse import urlsplit

    from .errors import ConfigurationError

    try:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry
    except ImportError:
        raise ConfigurationError(
            f"{url.split(':', 1)[0]}:// storage needs the redis package: "
            "pip install 'alf-session[redis]'"
        ) from None
    try:
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
            health_check_interval=30,
        )
        # redis-py passes an unknown ?option on to each connection it makes,
        # which then fails with a TypeError on every call: make one now (it
        # connects only when used) so that the URL fails here instead.
        pool = client.connection_pool
        pool.connection_class(**pool.connection_kwargs)
    except (ValueError, TypeError) as exc:
        # redis-py quotes the bad part (a port, an option); never let that be a password.
        message = str(exc)
        if isinstance(exc, TypeError):
            message = "unknown option " + message.rpartition(" ")[2] + " in its query"
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            message = message.replace(password, "***")
        raise ConfigurationError(f"bad redis storage URL: {message}") from None
    return client
