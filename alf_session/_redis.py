"""Redis (and Redis Cluster, Valkey) as the shared token storage."""

from __future__ import annotations

import math
import re
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
        service = getattr(pool, "service_name", None)
        if isinstance(service, str):  # a Sentinel-managed master
            where = f"sentinel service {service!r}, "
        elif isinstance(options, dict) and "host" in options:
            where = f"{options['host']}:{options.get('port', 6379)}/{options.get('db', 0)}, "
        elif hasattr(self.client, "nodes_manager"):
            where = "cluster, "
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
    """A redis client for ``url`` whose every call ends within ``timeout`` seconds.

    One retry, after 40 ms, and socket timeouts that fit both tries, a
    connect and a read each, in ``timeout`` (0.49 s for the default 2 s)
    unless the URL's query sets its own (redis-py lets the URL win): a Redis
    that is down is reported within ``timeout``, instead of after redis-py's
    default of ten retries, and the storage guard can rely on the client's
    own timeouts instead of bounding its calls from another thread.
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
    retries, backoff = (1, 0.04) if timeout > 0.2 else (0, 0.0)
    socket_timeout = (timeout - backoff) / (2 * (retries + 1))
    try:
        client = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(ExponentialBackoff(cap=backoff, base=backoff / 2), retries),
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
            # "... got an unexpected keyword argument 'x'", which Python 3.13
            # follows with "Did you mean 'y'?": name the option given, not y.
            found = re.search(r"unexpected keyword argument ('[^']*')", message)
            option = found.group(1) if found else "in the URL"
            message = f"unknown option {option} in its query"
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            message = message.replace(password, "***")
        raise ConfigurationError(f"bad redis storage URL: {message}") from None
    return client


# Options a redis+sentinel:// URL may carry in its query, and their types.
_SENTINEL_OPTIONS: dict[str, type] = {
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "sentinel_username": str,
    "sentinel_password": str,
}


def sentinel_from_url(url: str, *, timeout: float) -> Any:
    """A redis client of the master that a Redis Sentinel set names.

    ``redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/service[/db]``
    (``rediss+sentinel://`` for TLS): the sentinels (port 26379 by default),
    then the name they monitor the master under. The user and password are
    the master's; ``?sentinel_password=…`` (and ``sentinel_username``) when
    the sentinels want their own. ``?socket_timeout=`` and
    ``?socket_connect_timeout=`` override ``timeout``, which also bounds each
    question to a sentinel. The client is redis-py's ``Sentinel(...)
    .master_for(service)``: after a failover, its next connection goes to
    the master the sentinels name then.
    """
    from urllib.parse import parse_qsl, unquote

    from .errors import ConfigurationError

    try:
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry
        from redis.sentinel import Sentinel
    except ImportError:
        raise ConfigurationError(
            "redis+sentinel:// storage needs the redis package: pip install 'alf-session[redis]'"
        ) from None
    scheme, _, rest = url.partition("://")
    tls = scheme.lower() == "rediss+sentinel"
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    path = path.partition("#")[0]
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        userinfo, hosts = "", netloc
    user, _, password = userinfo.partition(":")
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, port = _host_port(item.strip(), 26379)
        sentinels.append((host, port))
    segments = [unquote(s) for s in path.split("/") if s]
    if not segments or len(segments) > 2:
        raise ConfigurationError(
            "a redis+sentinel:// URL names the master's service after the sentinels: "
            "redis+sentinel://host1:26379,host2:26379/mymaster[/db]"
        )
    service = segments[0]
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ConfigurationError("the database of a redis+sentinel:// URL is a number")
        db = int(segments[1])
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        kind = _SENTINEL_OPTIONS.get(name)
        if kind is None:
            raise ConfigurationError(
                f"bad redis+sentinel:// storage URL: unknown option {name!r} in its query "
                f"(known: {', '.join(sorted(_SENTINEL_OPTIONS))})"
            )
        try:
            options[name] = kind(value)
        except ValueError:
            raise ConfigurationError(
                f"bad redis+sentinel:// storage URL: {name} must be a number of seconds"
            ) from None
    socket_timeout = options.get("socket_timeout", timeout)
    connect_timeout = options.get("socket_connect_timeout", timeout)
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
    }
    if "sentinel_password" in options:
        sentinel_kwargs["password"] = options["sentinel_password"]
    if "sentinel_username" in options:
        sentinel_kwargs["username"] = options["sentinel_username"]
    if tls:
        sentinel_kwargs["ssl"] = True
    master: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        "db": db,
    }
    if user:
        master["username"] = unquote(user)
    if password:
        master["password"] = unquote(password)
    if tls:
        master["ssl"] = True
    sentinel = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs, **master)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
    return sentinel.master_for(service)  # type: ignore[no-untyped-call]  # likewise


def _host_port(item: str, default: int) -> tuple[str, int]:
    from .errors import ConfigurationError

    if item.startswith("["):  # [IPv6]:port
        host, _, port = item[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ConfigurationError(
            "a redis+sentinel:// URL lists its sentinels as host:port, separated by commas"
        )
    if not port:
        return host, default
    if not port.isdigit() or not 0 < int(port) < 65536:
        # The port only: the rest of the URL may hold a password.
        raise ConfigurationError(f"bad sentinel port {port[:10]!r} in a redis+sentinel:// URL")
    return host, int(port)
