"""Where a token request may go, how long it may take, and how it is retried.

* The transport rule: ``https://``, or ``http://`` to a loopback host, the
  URL judged as requests and urllib3 will connect to it, and a plain-http
  connection checked again by the address it reached (:func:`check_endpoint`,
  :class:`_WireAdapter`).
* The time bound: ``token_timeout`` bounds a whole token request, retries and
  their pauses included (:class:`_Call`, which the connections register with
  so that a request out of time can be cut off).
* The retry policy: urllib3's ``Retry``, POST allowed, ``Retry-After``
  capped, no retry that the time bound has no room for (:func:`default_retry`).

:mod:`alf_session._wire` sends the token request through these.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.util import parse_url
from urllib3.util.retry import Retry

from .errors import ConfigurationError, InsecureTransportError

__all__ = ["Timeout", "check_endpoint", "default_retry"]

#: What ``timeout`` accepts: seconds, or a (connect, read) pair.
Timeout = float | tuple[float, float]


def default_retry(total: int = 3) -> Retry:
    """The ``token_retry`` used when none is given.

    Retries connection errors, reads, HTTP 429 and 5xx ``total`` times with
    exponential backoff (0.5 s, 1 s, 2 s, …), honouring ``Retry-After`` up to
    10 s. Applies to POST, which urllib3 would otherwise not retry.
    """
    options: dict[str, Any] = {}
    if _RETRY_TAKES_BACKOFF_MAX:
        options["backoff_max"] = _MAX_WAIT
    return _BoundedRetry(
        total=total,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,  # every method, POST included
        raise_on_status=False,  # hand back the last response: its body may be an OAuth error
        respect_retry_after_header=True,
        **options,
    )


# Longest pause between two attempts of a token request, whether backoff or
# Retry-After asked for it.
_MAX_WAIT = 10
# urllib3 2 takes Retry(backoff_max=...); 1.26 (which requests still allows)
# has no such argument and reads the DEFAULT_BACKOFF_MAX class attribute.
# The signature is read off the code object: importing inspect for it would
# cost more than the rest of the package's import.
_RETRY_INIT = Retry.__init__.__code__
_RETRY_TAKES_BACKOFF_MAX = (
    "backoff_max"
    in _RETRY_INIT.co_varnames[: _RETRY_INIT.co_argcount + _RETRY_INIT.co_kwonlyargcount]
)


class _BoundedRetry(Retry):
    """A Retry whose ``Retry-After`` waits are capped at 10 s, so a server
    asking for an hour's pause cannot hang the caller for an hour."""

    DEFAULT_BACKOFF_MAX = _MAX_WAIT  # urllib3 1.26 only; 2.x gets backoff_max=

    def get_retry_after(self, response: Any) -> float | None:
        after = super().get_retry_after(response)
        return None if after is None else min(after, _MAX_WAIT)

    def increment(  # type: ignore[override]  # urllib3 1.26 and 2.x differ in annotations
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Retry:
        new = super().increment(method, url, response, error, _pool, _stacktrace)
        call = _Call.current()
        if call is not None:
            # A retry whose pause would run past the whole request's budget
            # (token_timeout) is not made: the caller gets the last answer
            # (say, the 503 and its body) rather than a timeout.
            pause = new.get_backoff_time()
            if response is not None and new.respect_retry_after_header:
                pause = max(pause, new.get_retry_after(response) or 0.0)
            if pause >= call.remaining():
                reason = error or ResponseError(
                    f"no time left in token_timeout for a retry after {pause:g}s"
                )
                raise MaxRetryError(_pool, url or "", reason)
        return new


def _coerce_retry(retry: Retry | int | None) -> Retry:
    if retry is None:
        return default_retry()
    if isinstance(retry, bool) or not isinstance(retry, (int, Retry)):
        raise ConfigurationError(
            f"token_retry must be a urllib3 Retry or an int, not {type(retry).__name__}"
        )
    if isinstance(retry, int):
        if retry < 0:
            raise ConfigurationError(f"token_retry must be >= 0, not {retry}")
        return default_retry(retry)
    changes: dict[str, Any] = {"raise_on_status": False}
    # The token request is a POST, which urllib3 leaves out of
    # Retry.DEFAULT_ALLOWED_METHODS: a Retry written for GETs (the alf README's
    # Retry(total=5, status_forcelist=[500], backoff_factor=0.3)) would never
    # retry anything here. Retrying a token request is safe: it has no side
    # effect that a second token would harm.
    if retry.allowed_methods is not None and "POST" not in retry.allowed_methods:
        changes["allowed_methods"] = frozenset(retry.allowed_methods) | {"POST"}
    new = retry.new(**changes)
    if type(new) is Retry:
        # A plain Retry becomes a bounded one (same state, no fields added):
        # its Retry-After waits are capped and it gives up on a retry that
        # token_timeout leaves no time for. A user's own subclass is kept.
        new.__class__ = _BoundedRetry
    return new


def _budget(timeout: Timeout) -> float:
    """The bound of a whole token request: ``timeout``, or connect + read."""
    return float(sum(timeout)) if isinstance(timeout, tuple) else float(timeout)


def _check_timeout(timeout: Timeout) -> Timeout:
    values = timeout if isinstance(timeout, tuple) else (timeout,)
    if len(values) not in (1, 2) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values
    ):
        raise ConfigurationError(
            f"token_timeout must be seconds > 0 or a (connect, read) pair of them, "
            f"not {timeout!r}; an unbounded token request could hang every caller"
        )
    return timeout


# -- where the token request may go -------------------------------------------------
#
# The rule: https://, or http:// to a loopback host. The URL is judged as
# requests and urllib3 will read it (not as urllib.parse would: the two differ
# on backslashes, whitespace and userinfo), and a plain-http connection is
# checked once more after it is made, by the address it reached: a name that
# looks local (``auth.localhost``) but that DNS sends elsewhere gets no byte.

# Whitespace, control characters and backslashes: urllib.parse and urllib3
# read URLs holding them differently ("http://evil.example\\.localhost/" is
# evil.example to urllib3); none belongs in a token endpoint.
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\x9f\\]")


# localhost and its subdomains (RFC 6761 §6.3), in plain DNS labels only.
_LOCAL_NAME = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)*localhost")


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (as urllib3 reads it: lower-case, IPv6 in brackets)
    names this machine: ``localhost``, ``*.localhost`` (RFC 6761), or a
    loopback address literal. Other spellings of an address (``2130706433``,
    ``127.1``, ``0x7f.0.0.1``) are not judged here: they are refused."""
    host = host.lower()
    if _LOCAL_NAME.fullmatch(host):
        return True
    return _is_loopback_address(host.strip("[]"))


def _is_loopback_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # drop an IPv6 zone
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1
    return ip.is_loopback


def _transport_url(url: str) -> tuple[str, str, str | None]:
    """``(scheme, host, userinfo)`` of ``url`` as requests and urllib3 connect to it.

    Raises:
        ConfigurationError: requests cannot send to it.
    """
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(url, None)
        parts = parse_url(prepared.url or "")
    except (requests.RequestException, ValueError) as exc:
        raise ConfigurationError(
            f"token_endpoint {url!r} is not a URL requests can send to "
            f"({type(exc).__name__}); give one such as 'https://idp.example/oauth/token'"
        ) from None
    return (parts.scheme or "").lower(), parts.host or "", parts.auth


def _is_loopback_url(url: str) -> bool:
    """Whether requests would send ``url`` to a loopback host (internal)."""
    try:
        return _is_loopback(parse_url(url).host or "")
    except ValueError:
        return False


def check_endpoint(url: object, *, allow_insecure_http: bool = False) -> str:
    """Validate a token endpoint URL and return it.

    The URL is judged as requests and urllib3 will connect to it. It may not
    hold whitespace, control characters, backslashes or credentials; a
    plain-http one must name a loopback host (``localhost``, ``*.localhost``,
    ``127.0.0.0/8``, ``[::1]``; other spellings of an address are refused),
    and its connection must then reach a loopback address.

    Raises:
        ConfigurationError: not an absolute http(s) URL, or one that parsers
            could read differently.
        InsecureTransportError: ``http://`` to a host other than loopback,
            without ``allow_insecure_http``.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(
            f"token_endpoint must be a URL string such as 'https://idp.example/oauth/token', "
            f"not {type(url).__name__ if not isinstance(url, str) else 'an empty string'}"
        )
    url = url.strip()
    bad = _URL_FORBIDDEN.search(url)
    if bad:
        raise ConfigurationError(
            f"token_endpoint {url!r} holds {bad.group()!r} at position {bad.start()}: "
            "whitespace, control characters and backslashes are read differently by "
            "different URL parsers; percent-encode it, or fix the URL"
        )
    scheme, host, userinfo = _transport_url(url)
    if scheme not in ("http", "https") or not host:
        raise ConfigurationError(
            f"token_endpoint {url!r} is not an absolute http(s) URL; "
            "give one such as 'https://idp.example/oauth/token'"
        )
    if userinfo is not None or "@" in url.partition("://")[2].partition("/")[0]:
        raise ConfigurationError(
            "token_endpoint must not carry credentials (user@host) in the URL; "
            "pass client_id and client_secret"
        )
    if scheme == "http" and not allow_insecure_http and not _is_loopback(host):
        raise InsecureTransportError(
            f"token_endpoint {url!r} uses http:// to {host!r}, which is not a loopback "
            "host (localhost, 127.0.0.1, [::1]): the client secret would cross the network "
            "in clear text. Use https://, or pass allow_insecure_http=True if the network "
            "is trusted."
        )
    return url


# -- the wire: connections of the token request ----------------------------------------


class _RefusedPeer(Exception):  # internal; not an OSError, so urllib3 won't retry it
    """A plain-http token connection reached an address that is not loopback."""


class _Cancelled(Exception):  # internal; not an OSError, so urllib3 won't retry it
    """The token request's budget ran out before a new connection."""


class _Call:
    """The deadline of one token request, found by its thread in ``_Call.local``.

    The token connections below give every socket operation (connect, send,
    each read) at most what is left of it, and make no new connection once it
    has passed: the whole request is bounded without a watchdog thread. Name
    resolution is left to the system resolver and its own timeouts.
    """

    local = threading.local()

    def __init__(self, budget: float) -> None:
        self.deadline = time.monotonic() + budget

    @classmethod
    def current(cls) -> _Call | None:
        return getattr(cls.local, "call", None)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def _arm(sock: socket.socket) -> None:
    """Cap ``sock``'s timeout at what is left of its thread's token request."""
    call = _Call.current()
    if call is None:
        return
    left = call.remaining()
    if left <= 0:
        raise TimeoutError("token_timeout ran out")
    current = sock.gettimeout()
    if current is None or current > left:
        sock.settimeout(left)


class _DeadlineSocket(socket.socket):
    """A socket whose every send and receive obeys the token request's deadline."""

    __slots__ = ()

    def recv(self, *args: Any) -> bytes:
        _arm(self)
        return super().recv(*args)

    def recv_into(self, *args: Any) -> int:
        _arm(self)
        return super().recv_into(*args)

    def send(self, *args: Any) -> int:
        _arm(self)
        return super().send(*args)

    def sendall(self, *args: Any) -> None:
        _arm(self)
        super().sendall(*args)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """The TLS counterpart of :class:`_DeadlineSocket`."""

    def recv(self, *args: Any) -> bytes:
        _arm(self)
        return super().recv(*args)

    def recv_into(self, *args: Any) -> int:
        _arm(self)
        return super().recv_into(*args)

    def send(self, *args: Any) -> int:
        _arm(self)
        return super().send(*args)

    def sendall(self, *args: Any) -> None:
        _arm(self)
        super().sendall(*args)


class _GuardMixin:
    """What a token connection checks: the request's deadline, and for plain
    http without ``allow_insecure_http``, that the peer is a loopback address."""

    loopback_only = False
    sock: Any
    timeout: Any

    def _new_conn(self) -> socket.socket:
        call = _Call.current()
        if call is not None:
            left = call.remaining()
            if left <= 0:
                raise _Cancelled("token_timeout ran out before a new connection")
            timeout = getattr(self, "timeout", None)
            if timeout is None or (isinstance(timeout, (int, float)) and timeout > left):
                self.timeout = left  # the connect timeout, capped too
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        if self.loopback_only:
            try:
                peer = str(sock.getpeername()[0])
            except OSError:
                peer = "?"
            if not _is_loopback_address(peer):
                sock.close()  # before a single byte is sent
                raise _RefusedPeer(
                    f"the plain-http token endpoint's host resolved to {peer}, which is not "
                    "a loopback address: the client secret would cross the network in clear "
                    "text, so nothing was sent. Use https://, or pass allow_insecure_http=True "
                    "if the network is trusted."
                )
        if type(sock) is socket.socket:
            sock.__class__ = _DeadlineSocket
        return sock

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        if type(self.sock) is ssl.SSLSocket:
            self.sock.__class__ = _DeadlineSSLSocket


class _GuardedHTTPConnection(_GuardMixin, HTTPConnection):
    loopback_only = True


class _InsecureHTTPConnection(_GuardMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardMixin, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _InsecureHTTPPool(HTTPConnectionPool):
    ConnectionCls = _InsecureHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _WireAdapter(HTTPAdapter):
    """The token request's adapter.

    A loopback token endpoint is reached directly, never through a proxy (the
    reason plain http is allowed there is that the bytes never leave the
    host); plain-http connections must reach a loopback address unless
    ``allow_insecure_http``; every connection obeys the call's budget.
    """

    def __init__(self, *, plain_http_loopback_only: bool, **kwargs: Any) -> None:
        self._loopback_only = plain_http_loopback_only
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _GuardedHTTPPool if self._loopback_only else _InsecureHTTPPool,
            "https": _GuardedHTTPSPool,
        }

    __attrs__ = [*HTTPAdapter.__attrs__, "_loopback_only"]  # noqa: RUF012 - what pickling keeps, as in requests

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        if _is_loopback_url(request.url or ""):
            kwargs["proxies"] = {}
        return super().send(request, *args, **kwargs)
