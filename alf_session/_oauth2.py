"""The base of the RFC 6749 providers: one credential, its endpoint, its client authentication.

:class:`OAuth2Provider` holds what every grant shares: where the token
endpoint is (given, or discovered from ``issuer=`` at the first token
request), how the client authenticates (an object from
:mod:`alf_session.client_auth`, chosen once), the name its tokens are shared
under, and the wire (:class:`~alf_session._wire.WireMixin`). A grant
(:mod:`alf_session.grants`) adds its ``grant_type`` and form.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from urllib3.util.retry import Retry

from . import client_auth as _auth
from ._transport import Timeout, _budget, _check_timeout, _coerce_retry, check_endpoint
from ._wire import Scope, WireMixin, _no_auth, _require_str, normalize_scope
from .errors import ConfigurationError
from .token import Token

__all__ = ["OAuth2Provider"]

_SECRET_METHODS = ("client_secret_basic", "client_secret_post", "client_secret_jwt")


class OAuth2Provider(WireMixin):
    """Base for providers that POST an RFC 6749 grant to a token endpoint.

    Subclasses set :attr:`grant_type` and implement :meth:`grant_params`. The
    token request is a form-encoded POST, authenticated by one of the RFC 8414
    methods (see :mod:`alf_session.client_auth`), retried on connection
    errors, 429 and 5xx by ``retry`` and bounded as a whole by ``timeout``.
    Each attempt is built afresh when it carries an assertion. Redirects are
    not followed: the request carries the client's credential.

    Args:
        token_endpoint: The token URL: ``https://``, or ``http://`` on
            loopback. Or ``None``, with ``issuer``.
        client_id: The client's id.
        client_secret: The client's secret, for the ``client_secret_*``
            methods. Never logged, shown or stored.
        issuer: The issuer identifier, instead of ``token_endpoint``: its
            metadata (OpenID Connect discovery, else RFC 8414) is fetched at
            the first token request, checked (same ``issuer``, endpoints
            obeying the transport rule) and cached; with ``cert``, its
            ``mtls_endpoint_aliases`` are used.
        auth_method: An RFC 8414 method name (``client_secret_basic``,
            ``client_secret_post``, ``client_secret_jwt``, ``private_key_jwt``,
            ``tls_client_auth``, ``self_signed_tls_client_auth``, ``none``) or a
            :class:`~alf_session.ClientAuth`; ``None`` chooses from the
            credential given, and from the server's
            ``token_endpoint_auth_methods_supported`` once its metadata is known.
        private_key: For ``private_key_jwt``: PEM text or bytes, a path, or a
            ``cryptography`` key; each attempt signs a new assertion. Needs
            the ``jwt`` extra.
        key_id: The ``kid`` of that key.
        signing_alg: The JWS algorithm; default from the key (RS256,
            ES256/384/512, EdDSA) or HS256 for ``client_secret_jwt``.
        client_assertion: A ready assertion for ``private_key_jwt``: a JWT
            string, a callable returning one, or a path read again at each
            token request (workload identity).
        assertion_audience: The ``aud`` of the assertions signed here;
            default: the token endpoint.
        cert: A client certificate for mTLS (RFC 8705), as in requests: a
            PEM path or a ``(cert, key)`` pair. Tokens obtained with it are
            cached apart (the storage key holds its thumbprint).
        scope: A space-separated string or a sequence of strings.
        audience: The ``audience`` parameter (Auth0 and others).
        extra_params: More form parameters, such as Azure's ``resource``.
        retry: A urllib3 ``Retry`` or an int; default :func:`default_retry`.
        timeout: Seconds, or a (connect, read) pair, bounding the whole request.
        default_lifetime: Lifetime assumed when the response says nothing.
        allow_insecure_http: Allow ``http://`` to a host that is not loopback.
        verify: TLS verification, as in requests.
        proxies: Proxies for the token request, as in requests.
        clock: Returns UNIX seconds; ``expires_in`` and assertions count from it.

    Raises:
        ConfigurationError: an argument is missing or wrong, or the
            credentials given do not fit ``auth_method``.
        InsecureTransportError: the endpoint or issuer is plain http to a
            remote host.

    Thread-safety: one instance may be used from many threads; a
    :class:`~alf_session.TokenManager` calls it from one at a time. After
    ``fork()`` the child gets a fresh connection pool.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       ``issuer``, ``private_key``, ``key_id``, ``signing_alg``,
       ``client_assertion``, ``assertion_audience``; every RFC 8414 method.
    """

    grant_type = ""
    #: Whether the grant may go without client authentication (RFC 7523 §3.1,
    #: RFC 8693 §2.1): then a client id alone means ``none``.
    _client_auth_optional = False
    #: Whether the grant's form changes per attempt (an assertion, a subject token).
    _grant_per_attempt = False

    def __init__(
        self,
        token_endpoint: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        issuer: str | None = None,
        auth_method: str | _auth.ClientAuth | None = None,
        private_key: object = None,
        key_id: str | None = None,
        signing_alg: str | None = None,
        client_assertion: object = None,
        assertion_audience: str | None = None,
        cert: str | tuple[str, str] | None = None,
        scope: Scope = None,
        audience: str | None = None,
        extra_params: Mapping[str, str] | None = None,
        retry: Retry | int | None = None,
        timeout: Timeout = 10,
        default_lifetime: float | None = 3600.0,
        allow_insecure_http: bool = False,
        verify: bool | str = True,
        proxies: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from .discovery import check_issuer

        if token_endpoint is not None and issuer is not None:
            raise ConfigurationError("give token_endpoint or issuer (to discover it), not both")
        if token_endpoint is None and issuer is None:
            raise ConfigurationError(
                "a token_endpoint (or an issuer to discover it from) is needed, such as "
                "'https://idp.example/oauth/token'"
            )
        self.allow_insecure_http = allow_insecure_http
        self.issuer = (
            check_issuer(issuer, allow_insecure_http=allow_insecure_http) if issuer else None
        )
        self.token_endpoint: str | None = (
            check_endpoint(token_endpoint, allow_insecure_http=allow_insecure_http)
            if token_endpoint is not None
            else None
        )
        self.client_id = _require_str("client_id", client_id) if client_id is not None else None
        if client_secret is not None:
            _require_str("client_secret", client_secret, empty_ok=True)
        self._client_secret = client_secret or None
        if assertion_audience is not None:
            _require_str("assertion_audience", assertion_audience)
        self.assertion_audience = assertion_audience
        self.cert = cert
        self._cert_thumbprint = _auth.cert_thumbprint(cert) if cert is not None else None
        self._auth_options: dict[str, Any] = {
            "client_secret": client_secret,
            "private_key": private_key,
            "client_assertion": client_assertion,
            "key_id": key_id,
            "signing_alg": signing_alg,
            "cert": cert,
        }
        self._auth_given = auth_method
        self.client_auth: _auth.ClientAuth | None = self._choose_auth(None)
        # Chosen again from the server's metadata only when the credential
        # allows more than one method (a secret, a certificate); the private
        # key is held by the method object alone from here on.
        self._rechoose = (
            auth_method is None
            and private_key is None
            and client_assertion is None
            and self.client_auth is not None
        )
        self._auth_options["private_key"] = None
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
        self.proxies = dict(proxies) if proxies else None
        #: Stamps ``issued_at``/``expires_at`` of the tokens it parses. A
        #: TokenManager given a ``clock`` hands it to a provider left on this default.
        self.clock = clock
        #: The issuer's metadata, once discovered.
        self.metadata: Any = None
        self._discovery_lock = threading.Lock()
        self._session = self._new_session()

    # -- client authentication ---------------------------------------------

    def _choose_auth(self, supported: Iterable[str] | None) -> _auth.ClientAuth | None:
        options = self._auth_options
        method = self._auth_given
        credentials = [
            name
            for name in ("client_secret", "private_key", "client_assertion")
            if options[name] is not None
        ]
        if self.client_id is None:
            if credentials or method not in (None, "none"):
                raise ConfigurationError(
                    "client authentication needs a client_id; pass client_id=... with "
                    f"{', '.join(credentials) or 'auth_method'}"
                )
            return None
        if method is None and not credentials and options["cert"] is None:
            if self._client_auth_optional:
                method = "none"
            else:
                raise ConfigurationError(
                    "client_secret is missing: the client has no credential to authenticate "
                    "with. Pass client_secret=..., private_key=..., client_assertion=... or "
                    "cert=..., or auth_method='none' for a public client"
                )
        if method == "none" and options["client_secret"]:
            raise ConfigurationError(
                "auth_method='none' sends no client secret, yet client_secret was given; "
                "drop one or the other"
            )
        chosen = _auth.select_auth(
            method,
            supported=tuple(supported) if supported is not None else None,
            **options,
        )
        if chosen.name in _SECRET_METHODS and not options["client_secret"]:
            # Sent without one, the request would only earn an invalid_client.
            secret = options["client_secret"]
            raise ConfigurationError(
                f"client_secret is {'empty' if secret == '' else 'missing'}: "
                f"auth_method {chosen.name!r} authenticates the client with it. Pass "
                "client_secret=..., or auth_method='none' for a public client"
            )
        if getattr(chosen, "needs_cert", False) and options["cert"] is None:
            raise ConfigurationError(
                f"auth_method {chosen.name!r} needs cert=: the client certificate (RFC 8705)"
            )
        return chosen

    @property
    def auth_method(self) -> str:
        """The RFC 8414 name of the client authentication in use (``"none"`` without)."""
        return _auth.describe(self.client_auth) if self.client_auth is not None else "none"

    def _authenticate(self, form: dict[str, Any], headers: dict[str, str], url: str) -> None:
        if self.client_auth is None:
            return
        assert self.client_id is not None  # noqa: S101 - no client auth without one
        context = _auth.AuthContext(self.client_id, self.assertion_audience or url, self.clock())
        self.client_auth.apply(form, headers, context)

    def _rebuilt_per_attempt(self) -> bool:
        method = self.client_auth
        if self._grant_per_attempt:
            return True
        if method is None:
            return False
        return bool(getattr(method, "per_attempt", True))

    # -- discovery ---------------------------------------------------------

    def _endpoint(self) -> str:
        endpoint = self.token_endpoint
        if endpoint is not None:
            return endpoint
        with self._discovery_lock:
            if self.token_endpoint is None:
                self._discover()
            assert self.token_endpoint is not None  # noqa: S101 - set by _discover
            return self.token_endpoint

    def _discover(self) -> None:
        from .discovery import discover

        assert self.issuer is not None  # noqa: S101 - no endpoint means an issuer
        metadata = discover(
            self.issuer,
            timeout=self.timeout,
            verify=self.verify,
            proxies=self.proxies,
            allow_insecure_http=self.allow_insecure_http,
            fetch=self._fetch_document,
        )
        supported = metadata.token_endpoint_auth_methods_supported
        if self._rechoose and supported and self.auth_method not in supported:
            # Chosen again now that the server says what it takes.
            self.client_auth = self._choose_auth(supported)
        self.metadata = metadata
        self.token_endpoint = metadata.token_endpoint_for(mtls=self.cert is not None)

    def _fetch_document(self, url: str, deadline: float) -> tuple[int, bytes | None]:
        """A metadata GET, guarded and bounded like a token request."""
        import requests

        left = min(_budget(self.timeout), deadline - time.monotonic())
        prepared = self._session.prepare_request(
            requests.Request("GET", url, headers={"Accept": "application/json"}, auth=_no_auth)
        )
        try:
            response, body = self._exchange(prepared, [], budget=max(left, 0.001))
        finally:
            self._close_pools()
        return response.status_code, body

    # -- identity ----------------------------------------------------------

    @property
    def cache_key(self) -> str:
        """A stable name for this credential, hashed into storage keys.

        Made of the token endpoint (or issuer), client id, grant, scope,
        audience, extra parameters and the client certificate's thumbprint;
        never of a secret, a key or an assertion.
        """
        ident: dict[str, object] = {
            "endpoint": self.token_endpoint if self.issuer is None else None,
            "client_id": self.client_id,
            "grant": self.grant_type,
            "scope": self.scope,
            "audience": self.audience,
            "params": sorted(self.extra_params.items()),
            **self._identity(),
        }
        if self.issuer is not None:
            ident["issuer"] = self.issuer
        if self._cert_thumbprint is not None:
            # RFC 8705 §3: a token bound to a certificate is good only with it.
            ident["x5t#S256"] = self._cert_thumbprint
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def _identity(self) -> dict[str, object]:
        return {}

    def __repr__(self) -> str:
        if self.issuer is not None:
            fields = [f"issuer={self.issuer!r}"]
        else:
            fields = [f"token_endpoint={self.token_endpoint!r}"]
        fields.append(f"client_id={self.client_id!r}")
        if self.scope:
            fields.append(f"scope={self.scope!r}")
        if self.audience:
            fields.append(f"audience={self.audience!r}")
        fields.append(f"auth_method={self.auth_method!r}")
        return f"{type(self).__name__}({', '.join(fields)})"

    # -- the grant ---------------------------------------------------------

    def grant_params(self) -> dict[str, Any]:
        """The grant's form parameters, beyond ``grant_type`` and client auth.

        Called once per attempt, so that time-bound values are fresh.
        """
        raise NotImplementedError

    def fetch_token(self) -> Token:
        """Request a new token with this provider's grant.

        Raises:
            TokenError: the token could not be obtained; see its subclasses.
        """
        return self._request(lambda: {"grant_type": self.grant_type, **self.grant_params()})

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
        refresh_token = token.refresh_token

        def form() -> dict[str, Any]:
            data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
            if self.scope:
                data["scope"] = self.scope
            return data

        new = self._request(form, refresh_token=refresh_token)
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

    def _common_params(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.scope:
            data["scope"] = self.scope
        if self.audience:
            data["audience"] = self.audience
        data.update(self.extra_params)
        return data

    def _secrets(self, extra: Iterable[str | None] = ()) -> list[str]:
        found = [self._client_secret, *extra]
        return [s for s in found if s and len(s) >= 3]

    # -- processes ---------------------------------------------------------

    def _after_fork(self) -> None:
        super()._after_fork()
        self._discovery_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_discovery_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._discovery_lock = threading.Lock()
