"""Providers: how a token is obtained.

A provider is any object with a ``fetch_token() -> Token`` method (see
:class:`TokenProvider`); a plain callable is wrapped by
:class:`CallableProvider`. A provider that can also renew a token with its
refresh token has ``refresh(token) -> Token``.

The ready-made providers speak RFC 6749 to a token endpoint:
:class:`ClientCredentials` (§4.4) and :class:`PasswordCredentials` (§4.3),
both of which use a returned ``refresh_token`` (§6) when renewing.
"""

from __future__ import annotations

import base64
import hashlib
import html
import ipaddress
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, quote, quote_plus, urlencode

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError, NewConnectionError, ResponseError
from urllib3.exceptions import TimeoutError as _Urllib3Timeout
from urllib3.util import parse_url
from urllib3.util.retry import Retry

from .errors import (
    OAUTH_ERRORS,
    ConfigurationError,
    InsecureTransportError,
    InvalidTokenResponse,
    OAuthError,
    TokenError,
    TokenHTTPError,
    TokenRequestError,
    TokenRequestTimeout,
)
from .token import Token

if TYPE_CHECKING:
    from requests import PreparedRequest

__all__ = [
    "CallableProvider",
    "ClientCredentials",
    "OAuth2Provider",
    "PasswordCredentials",
    "TokenProvider",
    "as_provider",
]

log = logging.getLogger(__name__)

#: What ``scope`` accepts: a space-separated string or a sequence of strings.
Scope = str | Iterable[str] | None
#: What ``timeout`` accepts: seconds, or a (connect, read) pair.
Timeout = float | tuple[float, float]

# A token response larger than this is not a token response (a misrouted
# download, an HTML error page of a proxy); reading stops here.
_MAX_BODY = 1024 * 1024
# How much of an error body a message may quote.
_QUOTE = 200
# RFC 8414 names of the client authentication methods; "none" is a public
# client (its client_id in the form, no secret).
_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
_NEEDS_SECRET = ("client_secret_basic", "client_secret_post")
# Form fields of a token request whose values are credentials: replaced by
# "***" in the request objects an error carries.
# Fields of a token response whose values are tokens (RFC 6749 §5.1, OpenID
# Connect, RFC 8693): masked in the body of a response an error carries.
_TOKEN_FIELDS = frozenset({"access_token", "refresh_token", "id_token"})

_SECRET_FIELDS = frozenset(
    {
        "client_secret",
        "password",
        "refresh_token",
        "client_assertion",
        "assertion",
        "subject_token",
        "actor_token",
    }
)


@runtime_checkable
class TokenProvider(Protocol):
    """Anything that can obtain a token.

    ``fetch_token`` is called by one thread at a time per
    :class:`~alf_session.TokenManager`; it should bound its own network I/O.
    Optionally, ``cache_key`` (a string naming the credential) lets the token
    be shared through storage, and ``refresh(token)`` renews a token with its
    refresh token.
    """

    def fetch_token(self) -> Token:
        """Obtain a new token from the authority."""
        ...


def _no_auth(request: PreparedRequest) -> PreparedRequest:
    # An explicit auth stops requests from looking up ~/.netrc and putting its
    # credentials on the token request in place of ours.
    return request


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


def normalize_scope(scope: Scope) -> str | None:
    """``scope`` as the space-separated string RFC 6749 §3.3 sends."""
    if scope is None:
        return None
    if isinstance(scope, str):
        items = scope.split()
    else:
        try:
            items = list(scope)
        except TypeError:
            raise ConfigurationError(
                f"scope must be a string or a sequence of strings, not {type(scope).__name__}"
            ) from None
        if not all(isinstance(s, str) for s in items):
            raise ConfigurationError("scope must be a string or a sequence of strings")
        items = [part for s in items for part in s.split()]
    return " ".join(items) or None


def _require_str(name: str, value: object, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty_ok):
        got = "an empty string" if value == "" else type(value).__name__
        raise ConfigurationError(f"{name} must be a non-empty string, not {got}")
    return value


def _form_encode(value: str) -> str:
    # RFC 6749 §2.3.1: client_id and client_secret are form-url-encoded before
    # they are joined with ':' and Base64-encoded for HTTP Basic.
    return quote_plus(value, safe="")


class OAuth2Provider:
    """Base for providers that POST an RFC 6749 grant to a token endpoint.

    Subclasses set :attr:`grant_type` and implement :meth:`grant_params`. The
    token request is a form-encoded POST with client authentication by HTTP
    Basic (``client_secret_basic``, the default) or in the body
    (``client_secret_post``) -- both need a non-empty client secret -- or
    none (``"none"``, a public client), retried on connection errors, 429 and
    5xx by ``retry``. Redirects are not followed: the request carries the
    client secret.

    ``timeout`` bounds the whole token request: connecting, sending, every
    byte of the answer, and the retries with their pauses. A fetch raises
    :class:`~alf_session.TokenRequestTimeout` after at most ``timeout``
    seconds (connect + read for a pair), having closed its connection; a
    retry that would not fit in what is left is not made (the last answer is
    reported instead). Each read also has the read timeout. Name resolution
    is left to the system resolver's own timeouts.

    Plain http is allowed to a loopback host only (see :func:`check_endpoint`);
    the connection is checked again once made, and a loopback endpoint is
    reached directly, never through a proxy.

    No connection to the token endpoint stays open between token requests.

    Thread-safety: one instance may be used from many threads; a
    :class:`~alf_session.TokenManager` calls it from one at a time. After
    ``fork()`` the child gets a fresh connection pool.

    .. versionadded:: 0.1
    """

    grant_type = ""

    def __init__(
        self,
        token_endpoint: str,
        client_id: str,
        client_secret: str | None,
        *,
        scope: Scope = None,
        audience: str | None = None,
        auth_method: str = "client_secret_basic",
        extra_params: Mapping[str, str] | None = None,
        retry: Retry | int | None = None,
        timeout: Timeout = 10,
        default_lifetime: float | None = 3600.0,
        allow_insecure_http: bool = False,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token_endpoint = check_endpoint(
            token_endpoint, allow_insecure_http=allow_insecure_http
        )
        self.client_id = _require_str("client_id", client_id)
        if client_secret is not None:
            _require_str("client_secret", client_secret, empty_ok=True)
        if auth_method not in _AUTH_METHODS:
            raise ConfigurationError(
                f"auth_method must be one of {', '.join(_AUTH_METHODS)}, not {auth_method!r}"
            )
        if auth_method in _NEEDS_SECRET and not client_secret:
            # Sent without one, the request would only earn an invalid_client.
            raise ConfigurationError(
                f"client_secret is {'empty' if client_secret == '' else 'missing'}: "
                f"auth_method {auth_method!r} authenticates the client with it. Pass "
                "client_secret=..., or auth_method='none' for a public client"
            )
        if auth_method == "none" and client_secret:
            raise ConfigurationError(
                "auth_method='none' sends no client secret, yet client_secret was given; "
                "drop one or the other"
            )
        self._client_secret = client_secret or None
        self.auth_method = auth_method
        self.scope = normalize_scope(scope)
        if audience is not None:
            _require_str("audience", audience)
        self.audience = audience
        self.extra_params = dict(extra_params or {})
        for key, value in self.extra_params.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ConfigurationError("extra_params must map strings to strings")
        self.retry = _coerce_retry(retry)
        self.timeout = _check_timeout(timeout)
        if default_lifetime is not None and not default_lifetime > 0:
            raise ConfigurationError(
                f"default_lifetime must be > 0 or None, not {default_lifetime!r}"
            )
        self.default_lifetime = default_lifetime
        self.verify = verify
        self.cert = cert
        self.proxies = dict(proxies) if proxies else None
        self.allow_insecure_http = allow_insecure_http
        #: Stamps ``issued_at``/``expires_at`` of the tokens it parses. A
        #: TokenManager given a ``clock`` hands it to a provider left on this default.
        self.clock = clock
        self._session = self._new_session()

    # -- identity ----------------------------------------------------------

    @property
    def cache_key(self) -> str:
        """A stable name for this credential, hashed into storage keys.

        Made of the token endpoint, client id, grant, scope, audience and
        extra parameters; never of the secret.
        """
        ident = {
            "endpoint": self.token_endpoint,
            "client_id": self.client_id,
            "grant": self.grant_type,
            "scope": self.scope,
            "audience": self.audience,
            "params": sorted(self.extra_params.items()),
            **self._identity(),
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def _identity(self) -> dict[str, object]:
        return {}

    def __repr__(self) -> str:
        fields = [f"token_endpoint={self.token_endpoint!r}", f"client_id={self.client_id!r}"]
        if self.scope:
            fields.append(f"scope={self.scope!r}")
        if self.audience:
            fields.append(f"audience={self.audience!r}")
        fields.append(f"auth_method={self.auth_method!r}")
        return f"{type(self).__name__}({', '.join(fields)})"

    # -- the grant ---------------------------------------------------------

    def grant_params(self) -> dict[str, str]:
        """The grant's form parameters, beyond ``grant_type`` and client auth."""
        raise NotImplementedError

    def fetch_token(self) -> Token:
        """Request a new token with this provider's grant.

        Raises:
            TokenError: the token could not be obtained; see its subclasses.
        """
        data = {"grant_type": self.grant_type, **self.grant_params()}
        return self._request(data)

    def refresh(self, token: Token) -> Token:
        """Renew ``token`` with its refresh token (RFC 6749 §6).

        The new token keeps the old refresh token when the server sends none.

        Raises:
            ConfigurationError: ``token`` has no refresh token.
            TokenError: the refresh failed; an :class:`OAuthError` (such as
                ``invalid_grant``) means the refresh token is no longer good.
        """
        if not token.refresh_token:
            raise ConfigurationError("refresh() needs a token that has a refresh_token")
        data = {"grant_type": "refresh_token", "refresh_token": token.refresh_token}
        if self.scope:
            data["scope"] = self.scope
        new = self._request(data, refresh_token=token.refresh_token)
        if new.refresh_token is None:
            new = Token(
                new.access_token,
                new.token_type,
                expires_at=new.expires_at,
                refresh_token=token.refresh_token,
                scope=new.scope,
                extra=new.extra,
                issued_at=new.issued_at,
            )
        return new

    # -- the wire ----------------------------------------------------------

    def _common_params(self) -> dict[str, str]:
        data: dict[str, str] = {}
        if self.scope:
            data["scope"] = self.scope
        if self.audience:
            data["audience"] = self.audience
        data.update(self.extra_params)
        return data

    def _secrets(self, extra: Iterable[str | None] = ()) -> list[str]:
        found = [self._client_secret, *extra]
        return [s for s in found if s and len(s) >= 3]

    def _redact(self, text: str, extra: Iterable[str | None] = ()) -> str:
        """``text`` with every spelling of a secret replaced by ``***``."""
        spellings: set[str] = set()
        for secret in self._secrets(extra):
            spellings.update(_spellings(secret))
        if self._client_secret:
            spellings.update(_basic_credentials(self.client_id, self._client_secret))
        # Longest first: a spelling that contains another is replaced whole.
        for form in sorted(spellings, key=len, reverse=True):
            if len(form) >= 3:
                text = text.replace(form, "***")
        return text

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        adapter = _WireAdapter(
            max_retries=self.retry, plain_http_loopback_only=not self.allow_insecure_http
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def _after_fork(self) -> None:
        # The parent's pooled sockets must not be shared with it. Drop them
        # without closing: closing a TLS socket here could disturb the parent.
        self._session = self._new_session()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_session", None)  # a connection pool does not travel
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._session = self._new_session()

    def _request(self, data: dict[str, str], *, refresh_token: str | None = None) -> Token:
        url = self.token_endpoint
        headers = {"Accept": "application/json"}
        if self._client_secret is None or self.auth_method == "client_secret_post":
            data["client_id"] = self.client_id
            if self._client_secret is not None:
                data["client_secret"] = self._client_secret
        else:
            pair = f"{_form_encode(self.client_id)}:{_form_encode(self._client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        secrets = [refresh_token, data.get("password")]
        prepared = self._session.prepare_request(
            requests.Request("POST", url, data=data, headers=headers, auth=_no_auth)
        )
        # The request object that the response or an error hands out is a
        # copy with the credentials replaced by "***".
        safe = _scrubbed(prepared)
        try:
            response, body = self._exchange(prepared, secrets)
        except TokenError as exc:
            _hand_out(exc, prepared, safe)
            raise
        finally:
            # No socket is kept between fetches: a credential asks once per
            # token lifetime (minutes to hours), far longer than identity
            # providers keep an idle connection open, so a pooled socket would
            # only hold a descriptor (one per credential in a gateway) and go
            # stale. Retries within this fetch still reuse the connection.
            # (After a timeout, the abandoned connection was shut already; its
            # pool, closed here, closes it when the exchange lets go of it.)
            self._session.close()
        response.request = safe
        if body is None:
            raise TokenHTTPError(
                f"token endpoint {url} answered HTTP {response.status_code} with a body "
                f"over {_MAX_BODY // 1024} KiB; that is not a token response",
                response=response,
            )
        try:
            return self._parse(response, body, secrets)
        except TokenError:
            # The error hands out the response: its body must not hand out a
            # token the server issued (a 200 refused for a bad expires_in) or
            # a secret it echoed.
            self._scrub_body(response, body, secrets)
            raise

    def _scrub_body(
        self, response: requests.Response, body: bytes, secrets: list[str | None]
    ) -> None:
        """Replace ``response``'s body by a copy without tokens or secrets:
        the values of token fields and every spelling of a known secret read
        ``***``; a 2xx body that is not a JSON or form object is dropped."""
        ctype = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        payload = _decode_body(body, ctype)
        if not isinstance(payload, Mapping):
            if 200 <= response.status_code < 300:
                response._content = b""
                return
            payload = {}
        hidden = [v for k, v in payload.items() if k in _TOKEN_FIELDS and isinstance(v, str)]
        spellings: set[str] = set()
        for value in hidden:
            spellings.update(_spellings(value))

        def mask(text: str) -> str:
            for form in sorted(spellings, key=len, reverse=True):
                if form:
                    text = text.replace(form, "***")
            return self._redact(text, secrets)

        text = _unescaped_json(body.decode("utf-8", errors="replace"), mask)
        unescaped = html.unescape(text)  # an HTML page may echo "&" as "&amp;"
        if mask(unescaped) != unescaped:
            text = unescaped
        response._content = mask(text).encode("utf-8")
        response.encoding = "utf-8"

    def _exchange(
        self, prepared: requests.PreparedRequest, secrets: list[str | None]
    ) -> tuple[requests.Response, bytes | None]:
        """Send the token request and read its answer, all within ``timeout``.

        Connecting, sending, every byte of the answer, and the retries with
        their pauses share one deadline (``timeout``, or connect + read): each
        socket operation of the request waits at most what is left of it (see
        :class:`_Call`), so a server that trickles one byte at a time cannot
        hold the caller, nor through the single flight every other thread.
        Per-read timeouts alone would let it. No thread is started for this.
        """
        url = self.token_endpoint
        call = _Call(_budget(self.timeout))
        settings = self._session.merge_environment_settings(
            prepared.url or url, dict(self.proxies or {}), True, self.verify, self.cert
        )
        _Call.local.call = call
        try:
            response = self._session.send(
                prepared, timeout=self.timeout, allow_redirects=False, **settings
            )
            try:
                return response, _read_limited(response)
            except requests.RequestException as exc:
                if exc.response is None:
                    exc.response = response  # a broken-off answer still had a status
                raise
            finally:
                response.close()
        except _RefusedPeer as exc:
            raise InsecureTransportError(str(exc)) from None
        except (requests.RequestException, _Cancelled) as exc:
            if isinstance(exc, _Cancelled) or call.remaining() <= 0 or _timed_out(exc):
                # Same words whichever ran out: the whole budget or one read.
                raise TokenRequestTimeout(
                    f"token endpoint {url} did not answer within {self._timeout_text()}; "
                    "check that it is up, or raise token_timeout"
                ) from exc
            if exc.response is not None:
                raise TokenRequestError(
                    f"token endpoint {url} broke off its answer: {type(exc).__name__}",
                    response=exc.response,
                ) from exc
            reason = self._redact(_root_cause(exc), secrets)
            raise TokenRequestError(f"could not reach token endpoint {url}: {reason}") from exc
        finally:
            _Call.local.call = None

    def _parse(self, response: requests.Response, body: bytes, secrets: list[str | None]) -> Token:
        url = self.token_endpoint
        status = response.status_code
        ctype = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        payload = _decode_body(body, ctype)
        # The OAuth error body is judged before the status: a 400 with
        # {"error": "invalid_scope"} is InvalidScope, not an HTTP error, and a
        # 200 carrying "error" is an error too (golang/oauth2 does the same).
        if isinstance(payload, Mapping) and isinstance(payload.get("error"), str):
            raise self._oauth_error(response, payload, secrets)
        if not 200 <= status < 300:
            if 300 <= status < 400:
                where = response.headers.get("Location", "?")[:_QUOTE]
                detail = (
                    f"a redirect to {where!r}, which is not followed because the request "
                    "carries the client secret; configure the final token URL"
                )
            else:
                detail = _describe_body(body, ctype, self._redact, secrets)
            raise TokenHTTPError(
                f"token endpoint {url} answered HTTP {status} {response.reason or ''}".rstrip()
                + f": {detail}",
                response=response,
            )
        if payload is None:
            # A 2xx body is never quoted: whatever it is, it might hold a token.
            kind = (
                "an empty body"
                if not body.strip()
                else (f"{len(body)} bytes of {ctype or 'unlabelled content'} that are not JSON")
            )
            raise InvalidTokenResponse(
                f"token endpoint {url} answered HTTP {status} with {kind}; "
                "expected a JSON token response (is the URL the token endpoint?)",
                response=response,
            )
        try:
            return Token.from_response(
                payload, now=self.clock(), default_lifetime=self.default_lifetime
            )
        except InvalidTokenResponse as exc:
            raise InvalidTokenResponse(f"token endpoint {url}: {exc}", response=response) from None

    def _oauth_error(
        self, response: requests.Response, payload: Mapping[str, Any], secrets: list[str | None]
    ) -> OAuthError:
        # Every field is the server's text, and a server may echo what it was
        # sent (a refresh token, the secret): each is redacted before it is cut.
        raw_code = str(payload["error"])
        code = self._redact(raw_code, secrets)[:100]
        description = payload.get("error_description")
        uri = payload.get("error_uri")
        description = (
            self._redact(str(description), secrets)[:_QUOTE] if description is not None else None
        )
        uri = self._redact(str(uri), secrets)[:_QUOTE] if uri is not None else None
        cls = OAUTH_ERRORS.get(raw_code, OAuthError)
        message = f"{self.token_endpoint} refused the token request: {code}"
        if description:
            message += f" ({description})"
        if cls.hint:
            message += f". {cls.hint}"
        return cls(
            message,
            error=code,
            error_description=description,
            error_uri=uri,
            response=response,
        )

    def _timeout_text(self) -> str:
        t = self.timeout
        if isinstance(t, tuple):
            return f"{t[0]:g}s to connect and {t[1]:g}s to read ({t[0] + t[1]:g}s in all)"
        return f"{t:g}s"


class ClientCredentials(OAuth2Provider):
    """The client credentials grant (RFC 6749 §4.4): a service's own token.

    Args:
        token_endpoint: The token URL; ``https://``, or ``http://`` on loopback.
        client_id: The client's id.
        client_secret: The client's secret. Kept out of every log, repr and
            message, never stored.
        scope: A space-separated string or a sequence of strings.
        audience: The ``audience`` parameter (Auth0 and others).
        auth_method: ``"client_secret_basic"`` (HTTP Basic, the default),
            ``"client_secret_post"`` (in the form body), or ``"none"`` (a
            public client: ``client_id`` in the form, no secret).
        extra_params: More form parameters, such as Azure's ``resource``.
        retry: A urllib3 ``Retry`` or an int for the token request; default
            :func:`default_retry`. POST is always allowed to retry.
        timeout: Seconds, or a (connect, read) pair: the bound of a whole
            token request, retries and pauses included (connect + read for a
            pair); each read also has the read timeout.
        default_lifetime: Lifetime assumed when the response gives neither
            ``expires_in`` nor a JWT ``exp``; ``None`` for unknown.
        allow_insecure_http: Allow ``http://`` to a host that is not loopback.
        verify: TLS verification, as in requests (a bool or a CA bundle path);
            ``REQUESTS_CA_BUNDLE`` is honoured.
        cert: A client certificate, as in requests.
        proxies: Proxies for the token request, as in requests.
        clock: Returns UNIX seconds; ``expires_in`` is counted from it.

    Raises:
        ConfigurationError: an argument is missing or wrong (such as no
            ``client_secret`` for an ``auth_method`` that sends one).
        InsecureTransportError: the endpoint is plain http to a remote host.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       ``auth_method="none"``; a missing secret is an error; ``timeout``
       bounds the whole request.
    """

    grant_type = "client_credentials"

    def __init__(
        self,
        token_endpoint: str,
        client_id: str,
        client_secret: str | None,
        **options: Any,
    ) -> None:
        super().__init__(token_endpoint, client_id, client_secret, **options)

    def grant_params(self) -> dict[str, str]:
        return self._common_params()


class PasswordCredentials(OAuth2Provider):
    """The resource owner password grant (RFC 6749 §4.3).

    Takes the arguments of :class:`ClientCredentials` plus ``username`` and
    ``password``. The password is kept out of every log, repr and message.
    Tokens for different users never share a storage key. When the server
    returns a refresh token, renewal uses it before sending the password again.

    .. versionadded:: 0.1
    """

    grant_type = "password"

    def __init__(
        self,
        token_endpoint: str,
        client_id: str,
        client_secret: str | None,
        username: str,
        password: str,
        **options: Any,
    ) -> None:
        super().__init__(token_endpoint, client_id, client_secret, **options)
        self.username = _require_str("username", username)
        self._password = _require_str("password", password, empty_ok=True)

    def _identity(self) -> dict[str, object]:
        return {"username": self.username}

    def _secrets(self, extra: Iterable[str | None] = ()) -> list[str]:
        return super()._secrets([*extra, self._password])

    def grant_params(self) -> dict[str, str]:
        return {"username": self.username, "password": self._password, **self._common_params()}

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", username={self.username!r})"


class CallableProvider:
    """Wraps a callable as a provider.

    The callable takes no argument and returns a :class:`~alf_session.Token`,
    a token response mapping (``{"access_token": …, "expires_in": …}``) or a
    bare access token string (given ``default_lifetime``).

    Args:
        func: The callable.
        cache_key: A name for the credential, to share its token through
            storage; ``None`` keeps it in the process.
        default_lifetime: Lifetime of a token whose expiry is unknown.
        clock: Returns UNIX seconds; ``expires_in`` is counted from it.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        func: Callable[[], Token | Mapping[str, Any] | str],
        *,
        cache_key: str | None = None,
        default_lifetime: float | None = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not callable(func):
            raise ConfigurationError(f"provider must be callable, not {type(func).__name__}")
        self.func = func
        self.cache_key = cache_key
        self.default_lifetime = default_lifetime
        self.clock = clock

    def __repr__(self) -> str:
        name = getattr(self.func, "__qualname__", type(self.func).__name__)
        return f"CallableProvider({name})"

    def fetch_token(self) -> Token:
        result = self.func()
        if isinstance(result, Token):
            return result
        if isinstance(result, str):
            result = {"access_token": result}
        if isinstance(result, Mapping):
            return Token.from_response(
                result, now=self.clock(), default_lifetime=self.default_lifetime
            )
        raise InvalidTokenResponse(
            f"{self!r} returned a {type(result).__name__}; "
            "return a Token, a token response mapping or an access token string"
        )


def as_provider(provider: object) -> TokenProvider:
    """``provider`` as a :class:`TokenProvider`: objects with ``fetch_token``
    are used as they are, callables are wrapped in :class:`CallableProvider`.

    Raises:
        ConfigurationError: ``provider`` is neither.
    """
    if callable(getattr(provider, "fetch_token", None)):
        return provider  # type: ignore[return-value]  # structurally a TokenProvider
    if callable(provider):
        return CallableProvider(provider)
    raise ConfigurationError(
        f"provider must have a fetch_token() method or be callable; got {type(provider).__name__}"
    )


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


def _scrubbed(prepared: requests.PreparedRequest) -> requests.PreparedRequest:
    """A copy of a token request with its credentials replaced by ``***``: the
    ``Authorization`` header and the secret fields of the form body."""
    safe = prepared.copy()
    headers = CaseInsensitiveDict(prepared.headers)
    for name in ("Authorization", "Proxy-Authorization"):
        if name in headers:
            headers[name] = "***"
    safe.headers = headers
    body = prepared.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str):
        fields = parse_qsl(body, keep_blank_values=True)
        safe.body = urlencode(
            [(k, "***" if k in _SECRET_FIELDS else v) for k, v in fields], safe="*"
        )
    return safe


def _hand_out(
    exc: BaseException, prepared: requests.PreparedRequest, safe: requests.PreparedRequest
) -> None:
    """Put ``safe`` in place of ``prepared`` wherever ``exc`` and the
    exceptions chained to it (``__cause__``, ``__context__``) hold it: their
    ``request`` and their ``response.request``."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if getattr(err, "request", None) is prepared:
            err.request = safe  # type: ignore[attr-defined]
        response = getattr(err, "response", None)
        if isinstance(response, requests.Response) and response.request is prepared:
            response.request = safe
        todo += [err.__cause__, err.__context__]


def _spellings(secret: str) -> set[str]:
    """The ways ``secret`` may be written in a server's answer or an error."""
    return {
        secret,
        quote_plus(secret, safe=""),
        quote(secret, safe=""),
        json.dumps(secret)[1:-1],
    }


def _basic_credentials(client_id: str, secret: str) -> set[str]:
    """The Base64 ``id:secret`` of HTTP Basic, form-encoded (RFC 6749 §2.3.1) or not."""
    pairs = {f"{_form_encode(client_id)}:{_form_encode(secret)}", f"{client_id}:{secret}"}
    encoded = {base64.b64encode(p.encode()).decode("ascii") for p in pairs}
    return encoded | {e.rstrip("=") for e in encoded}


# -- helpers -----------------------------------------------------------------


def _read_limited(response: requests.Response) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > _MAX_BODY:
            return None
        chunks.append(chunk)
    body = b"".join(chunks)
    response._content = body  # so that exc.response.content works for callers
    return body


def _decode_body(body: bytes, ctype: str) -> object:
    """The body as JSON, or as a form (some servers, GitHub among them, answer
    ``application/x-www-form-urlencoded``); ``None`` when it is neither."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    if ctype in ("application/x-www-form-urlencoded", "text/plain") and "=" in text:
        try:
            return dict(parse_qsl(text.strip(), strict_parsing=True))
        except ValueError:
            return None
    return None


_SPACES = re.compile(r"\s+")


def _describe_body(
    body: bytes,
    ctype: str,
    redact: Callable[[str, Iterable[str | None]], str],
    secrets: list[str | None],
) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return "empty body"
    if "html" in ctype or text[:15].lower().startswith(("<!doctype", "<html")):
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
        # The title is the server's text like any other: redacted, then cut.
        name = _SPACES.sub(" ", redact(title.group(1), secrets)).strip()[:80] if title else ""
        found = f" titled {name!r}" if name else ""
        return f"an HTML page{found}"
    text = _unescaped_json(text, lambda t: redact(t, secrets))
    text = _SPACES.sub(" ", redact(text, secrets))
    return repr(text[:_QUOTE] + ("…" if len(text) > _QUOTE else ""))


def _unescaped_json(text: str, redact: Callable[[str], str]) -> str:
    """``text``, or the same JSON without its escapes when that spelling
    shows a secret that ``redact`` hides and ``text``'s does not.

    A server's JSON encoder may escape what it echoes: Go's writes ``&`` as
    ``\\u0026``, PHP's ``/`` as ``\\/``; the secret is then in the body under a
    spelling nobody can list in advance.
    """
    try:
        decoded = json.loads(text)
    except (ValueError, RecursionError):
        return text
    plain = json.dumps(decoded, ensure_ascii=False)
    return plain if redact(plain) != plain else text


def _timed_out(exc: requests.RequestException) -> bool:
    """Whether the request failed for want of an answer in time.

    Once its retries are spent, urllib3 reports a read timeout as a
    MaxRetryError, which requests turns into a ConnectionError rather than a
    Timeout: look at the reason inside.
    """
    if isinstance(exc, requests.Timeout):
        return True
    for arg in exc.args:
        reason = getattr(arg, "reason", arg)
        # urllib3 makes "connection refused" a subclass of ConnectTimeoutError.
        if isinstance(reason, _Urllib3Timeout) and not isinstance(reason, NewConnectionError):
            return True
    return False


def _root_cause(exc: BaseException) -> str:
    """A short reason for a transport failure ("Connection refused")."""
    seen: BaseException = exc
    while True:
        nxt = seen.__cause__ or seen.__context__
        if nxt is None or nxt is seen:
            break
        seen = nxt
    for arg in getattr(exc, "args", ()):
        reason = getattr(arg, "reason", None)
        if isinstance(reason, BaseException):
            seen = reason
    text = re.sub(r"<[^>]*object at 0x[0-9a-f]+>:?\s*", "", str(seen))
    # urllib3 starts with "HTTPConnection(host=…, port=…): ", which the URL
    # in our own message says already.
    text = re.sub(r"^HTTPS?Connection\([^)]*\):\s*", "", text)
    return (text or type(seen).__name__)[:_QUOTE]


def _wrap_error(exc: Exception, provider: object) -> TokenError:
    """A provider's unexpected exception as a TokenError (message: type only,
    since a custom provider's own message may contain anything)."""
    return TokenError(f"{provider!r} failed with {type(exc).__name__}; see the chained exception")
