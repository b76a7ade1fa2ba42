"""The :class:`TokenSession`: a ``requests.Session`` that carries its own token."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import requests
from requests import PreparedRequest, Request, Response
from requests.utils import get_netrc_auth

from . import _flow
from .client_auth import ClientAuth
from .errors import ConfigurationError
from .manager import TokenManager, check_options
from .providers import ClientCredentials, Scope, Timeout

if TYPE_CHECKING:
    from urllib3.util.retry import Retry

    from ._base import KeyValueStore
    from .manager import ManagerOptions
    from .storage import TokenStorage

    if sys.version_info >= (3, 11):
        from typing import Unpack
    else:
        from typing_extensions import Unpack

__all__ = ["TokenSession"]

log = logging.getLogger(__name__)


def _skip_netrc(request: PreparedRequest) -> PreparedRequest:
    # Stands in for auth while requests prepares the request: an auth that is
    # set stops requests from reading ~/.netrc on every request (its cost is
    # larger than all of our token logic) and from putting netrc credentials
    # where the token belongs.
    return request


class TokenSession(requests.Session):
    """A :class:`requests.Session` that gets, caches, renews and sends a bearer token.

    Every request to an allowed host carries ``Authorization: Bearer …``; a
    401 answer invalidates that token and sends the request once more with a
    new one. Everything else is :class:`requests.Session` as you know it:
    mounts, hooks, proxies, ``verify``, ``with``.

    Args:
        token_endpoint: The token URL (``https://``, or ``http://`` on loopback).
        client_id: The client's id.
        client_secret: The client's secret (never logged, shown or stored).
        scope: ``"read write"`` or ``["read", "write"]``.
        audience: The ``audience`` parameter (Auth0 and others).
        token_storage: Where the token is shared between processes: a
            :class:`~alf_session.TokenStorage` or any object with ``get`` and
            ``set`` (redis, pymemcache, a Django cache, …). Default: this
            process's memory.
        token_retry: A urllib3 ``Retry`` or an int for the token request;
            default: 3 retries with backoff on connection errors, 429 and 5xx.
        token_timeout: Seconds (or ``(connect, read)``) that bound a whole token
            request, retries included; then :class:`~alf_session.TokenRequestTimeout`.
        auth_method: An RFC 8414 client authentication method name, or a
            :class:`~alf_session.ClientAuth`; default: chosen from the
            credential given (see :class:`~alf_session.OAuth2Provider`). The
            secret methods need a non-empty ``client_secret``; ``"none"`` is a
            public client.
        token_manager: A :class:`~alf_session.TokenManager` to use instead of
            the credentials above (to share one between sessions, or for
            another grant).
        token_hosts: Host names (``"api.example.com"``, or
            ``"localhost:8080"`` with a port) the token may be sent to,
            case-insensitive. ``None``: every host.
        extra_params: More form parameters for the token request.
        allow_insecure_http: Allow a plain-http token endpoint that is not loopback.
        issuer: Discover the token endpoint from this issuer's metadata.
        private_key: A key that signs ``private_key_jwt`` assertions (PEM
            text or bytes, a path, or a ``cryptography`` key).
        key_id: The ``kid`` of ``private_key``.
        signing_alg: The JWS algorithm of the assertions; default from the key.
        client_assertion: A ready assertion: a JWT, a callable, or a path read
            again at each token request (workload identity).
        assertion_audience: The ``aud`` of signed assertions; default the token endpoint.
        cert: A client certificate (mTLS, RFC 8705), as in requests: presented
            to the token endpoint and, since the token is bound to it, to the
            API as well (``self.cert``).
        manager_options: Passed on to :class:`~alf_session.TokenManager`
            (``leeway``, ``refresh_ahead``, ``failure_ttl``, ``clock``, …).

    Raises:
        ConfigurationError: the arguments don't describe one credential.

    Thread-safety: as :class:`requests.Session`; the token machinery itself
    is thread-safe and fork-safe.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       ``issuer``, ``private_key``, ``key_id``, ``signing_alg``,
       ``client_assertion``, ``assertion_audience``, ``cert``; ``auth_method``
       chosen from the credential by default.
    """

    __attrs__ = [  # noqa: RUF012 - requests.Session declares it a plain list
        *requests.Session.__attrs__,
        "token_manager",
        "token_hosts",
    ]

    def __init__(
        self,
        token_endpoint: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        scope: Scope = None,
        audience: str | None = None,
        token_storage: TokenStorage | KeyValueStore | str | None = None,
        token_retry: Retry | int | None = None,
        token_timeout: Timeout = 10,
        auth_method: str | ClientAuth | None = None,
        token_manager: TokenManager | None = None,
        token_hosts: Iterable[str] | str | None = None,
        extra_params: Mapping[str, str] | None = None,
        allow_insecure_http: bool = False,
        issuer: str | None = None,
        private_key: object = None,
        key_id: str | None = None,
        signing_alg: str | None = None,
        client_assertion: object = None,
        assertion_audience: str | None = None,
        cert: str | tuple[str, str] | None = None,
        **manager_options: Unpack[ManagerOptions],
    ) -> None:
        super().__init__()
        manager = manager_from_credentials(
            type(self).__name__,
            token_endpoint,
            client_id,
            client_secret,
            scope=scope,
            audience=audience,
            token_storage=token_storage,
            token_retry=token_retry,
            token_timeout=token_timeout,
            auth_method=auth_method,
            token_manager=token_manager,
            extra_params=extra_params,
            allow_insecure_http=allow_insecure_http,
            manager_options=manager_options,
            credentials={
                "issuer": issuer,
                "private_key": private_key,
                "key_id": key_id,
                "signing_alg": signing_alg,
                "client_assertion": client_assertion,
                "assertion_audience": assertion_audience,
                "cert": cert,
            },
        )
        if cert is not None:
            # RFC 8705 §3: a token bound to the certificate is good only over
            # a connection that presents it, so the API gets it too.
            self.cert = cert
        self._flow = _flow.requests_flow(manager, _flow.normalize_hosts(token_hosts))

    @property
    def token_manager(self) -> TokenManager:
        """The :class:`~alf_session.TokenManager` that supplies this session's tokens."""
        return cast(TokenManager, self._flow.source)

    @token_manager.setter
    def token_manager(self, manager: TokenManager) -> None:
        if not isinstance(manager, TokenManager):
            raise ConfigurationError(
                f"token_manager must be a TokenManager, not {type(manager).__name__}"
            )
        hosts = self._flow.hosts if "_flow" in self.__dict__ else None
        self._flow = _flow.requests_flow(manager, hosts)

    @property
    def token_hosts(self) -> frozenset[str] | None:
        """The hosts the token may be sent to, in canonical form; ``None``: every host."""
        return self._flow.hosts

    @token_hosts.setter
    def token_hosts(self, hosts: Iterable[str] | str | None) -> None:
        self._flow = _flow.requests_flow(self._flow.source, _flow.normalize_hosts(hosts))

    def __repr__(self) -> str:
        return f"<TokenSession {self.token_manager!r}>"

    def prepare_request(self, request: Request) -> PreparedRequest:
        """Prepare as :class:`requests.Session` does, then add the token.

        The token goes on requests to allowed hosts (judged on the prepared
        URL, as the transport will connect) that have no ``Authorization``
        header yet: a header (or ``auth``) the caller set wins, and
        ``headers={"Authorization": None}`` means no token on that call.
        ``self.headers`` is never written to; it is shared by all threads.

        Raises:
            TokenError: no token could be obtained; nothing is sent.
        """
        flow = self._flow
        if request.auth is None and self.auth is None:
            request.auth = _skip_netrc
            try:
                prepared = super().prepare_request(request)
            finally:
                request.auth = None
            if not (request.headers and _flow.removed_by_caller(request.headers)) and (
                flow.hosts is None or flow.allowed(prepared)
            ):
                headers: Any = prepared.headers  # Any: _store is private
                if _flow.FAST_HEADERS and type(headers) is _flow._CID:
                    # The hot path: _flow.authorization and set_authorization
                    # inlined (see there), without their two Python frames.
                    store = headers._store
                    if "authorization" not in store:
                        store["authorization"] = ("Authorization", flow.source.get_token()._header)
                elif _flow.authorization(headers) is None:
                    _flow.set_authorization(headers, flow.source.get_token().header_value)
            elif self.trust_env:
                # No token here: ~/.netrc serves this host, as requests would.
                credentials = get_netrc_auth(prepared.url or "")
                if credentials:
                    prepared.prepare_auth(credentials)
            return prepared
        prepared = super().prepare_request(request)
        if (
            _flow.authorization(prepared.headers) is None
            and not (request.headers and _flow.removed_by_caller(request.headers))
            and flow.allowed(prepared)
        ):
            flow.attach(prepared)
        return prepared

    def rebuild_auth(self, prepared_request: PreparedRequest, response: Response) -> None:
        """Drop the header on a redirect to another origin, as requests does,
        but keep it on a redirect within the origin.

        requests puts ``~/.netrc`` credentials over the header on every hop,
        even on a hop to the same host that keeps the header: our token (or
        the caller's explicit header) would be displaced by them there. Our
        token is also dropped on a hop that requests would let keep it (an
        upgrade to https) when ``token_hosts`` does not allow that origin.
        """
        headers = prepared_request.headers
        kept = headers.get("Authorization")
        if kept is not None:
            flow = self._flow
            session: Any = self  # should_strip_auth is untyped in types-requests
            previous = response.request.url if response.request is not None else None
            if session.should_strip_auth(previous or "", prepared_request.url or ""):
                kept = None
            elif not flow.allowed(prepared_request) and flow.source._token_for_header(
                _flow.authorization(headers) or ""
            ):
                del headers["Authorization"]
                kept = None
        base: Any = super()  # untyped in types-requests
        base.rebuild_auth(prepared_request, response)
        if kept is not None:
            headers["Authorization"] = kept

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:
        """Send as :class:`requests.Session` does; on a 401 to our token,
        invalidate that token and send once more with a new one.

        The 401 is returned as it is when the body cannot be replayed (a
        generator, a file without a known start) or the retry would not carry
        our token. Redirect hops never get a token added here: requests drops
        the header on a change of origin and it stays dropped.

        When the request has response hooks, the retry runs as the first of
        them (as requests' own auth retries do), so that a hook that raises
        (``raise_for_status``) sees the final response, not the 401.
        """
        hooks = request.hooks.get("response")
        if hooks:
            if type(hooks[0]) is not _RetryHook:
                hooks.insert(0, _RetryHook(self))
            return super().send(request, **kwargs)
        response = super().send(request, **kwargs)
        if response.status_code != 401:  # the hot path: no further call
            return response
        flow = self._flow
        retry = flow.retry_for(request, response)
        if retry is None:
            return response
        _flow.drain(response)
        final = super().send(retry, **kwargs)
        final.history.insert(0, response)
        flow.refused_retry(retry, final)
        return final

    def __setstate__(self, state: dict[str, Any]) -> None:
        # requests.Session restores its __attrs__ with setattr: token_manager
        # first (it makes the flow), then token_hosts.
        manager = state.pop("token_manager")
        hosts = state.pop("token_hosts", None)
        base: Any = super()  # not declared in types-requests
        base.__setstate__(state)
        self._flow = _flow.requests_flow(manager, _flow.normalize_hosts(hosts))


def manager_from_credentials(
    owner: str,
    token_endpoint: str | None,
    client_id: str | None,
    client_secret: str | None,
    *,
    scope: Scope,
    audience: str | None,
    token_storage: TokenStorage | KeyValueStore | str | None,
    token_retry: Retry | int | None,
    token_timeout: Timeout,
    auth_method: str | ClientAuth | None,
    token_manager: TokenManager | None,
    extra_params: Mapping[str, str] | None,
    allow_insecure_http: bool,
    manager_options: Mapping[str, Any],
    credentials: Mapping[str, Any] | None = None,
) -> TokenManager:
    """The manager for :class:`TokenSession`'s credential keywords (or its ``token_manager``).

    Shared by every front door that takes those keywords (``TokenSession``,
    ``alf_session.httpx.TokenClient`` and ``AsyncTokenClient``), so that they
    take the same ones and check them alike. ``owner`` names the class in errors.
    ``credentials`` are the keywords of credentials without shared secrets
    (``issuer``, ``private_key``, ``key_id``, ``signing_alg``,
    ``client_assertion``, ``assertion_audience``, ``cert``), passed on to
    :class:`~alf_session.ClientCredentials`.

    Raises:
        ConfigurationError: the arguments don't describe one credential.
    """
    if manager_options:
        check_options(owner, manager_options)
    credentials = {k: v for k, v in (credentials or {}).items() if v is not None}
    if token_manager is not None:
        given = [
            name
            for name, value in (
                ("token_endpoint", token_endpoint),
                ("client_id", client_id),
                ("client_secret", client_secret),
                ("scope", scope),
                ("audience", audience),
                ("token_storage", token_storage),
                ("token_retry", token_retry),
                ("extra_params", extra_params),
                *credentials.items(),
            )
            if value is not None
        ]
        # Options with a default count as given when they differ from it:
        # silently ignoring them would leave the user believing they apply.
        given += [
            name
            for name, value, default in (
                ("token_timeout", token_timeout, 10),
                ("allow_insecure_http", allow_insecure_http, False),
            )
            if value != default
        ]
        if auth_method not in (None, "client_secret_basic"):
            given.append("auth_method")
        if given or manager_options:
            raise ConfigurationError(
                "pass either token_manager or the credentials, not both; "
                f"got token_manager and {', '.join(given + list(manager_options))}"
            )
        if not isinstance(token_manager, TokenManager):
            raise ConfigurationError(
                f"token_manager must be a TokenManager, not {type(token_manager).__name__}"
            )
        manager = token_manager
    else:
        missing = [
            name
            for name, value in (
                ("token_endpoint", token_endpoint if "issuer" not in credentials else True),
                ("client_id", client_id),
            )
            if value is None
        ]
        if missing:
            raise ConfigurationError(
                f"{owner} needs {' and '.join(missing)} (with client_secret, private_key, "
                "client_assertion or cert), or issuer= in place of token_endpoint, or "
                "token_manager=TokenManager(...)"
            )
        provider = ClientCredentials(
            token_endpoint,
            client_id,
            client_secret,
            scope=scope,
            audience=audience,
            auth_method=auth_method,
            extra_params=extra_params,
            retry=token_retry,
            timeout=token_timeout,
            allow_insecure_http=allow_insecure_http,
            **credentials,
        )
        manager = TokenManager(provider, token_storage, **manager_options)
    return manager


class _RetryHook:
    """The first response hook of a :class:`TokenSession` request that has
    hooks: the 401 retry, before the caller's hooks see the response."""

    __slots__ = ("session",)

    def __init__(self, session: TokenSession) -> None:
        self.session = session

    def __call__(self, response: Response, **kwargs: Any) -> Response:
        session = self.session
        return _flow.retry_in_hook(
            session._flow, response, lambda request: session.get_adapter(request.url or ""), kwargs
        )
