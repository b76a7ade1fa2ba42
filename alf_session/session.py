"""The :class:`TokenSession`: a ``requests.Session`` that carries its own token."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import requests
from requests import PreparedRequest, Request, Response

from . import _flow
from .client_auth import ClientAuth
from .errors import ConfigurationError
from .manager import TokenManager
from .providers import ClientCredentials, Scope, Timeout

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
        token_storage: Any = None,
        token_retry: Any = None,
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
        **manager_options: Any,
    ) -> None:
        super().__init__()
        credentials = {
            "issuer": issuer,
            "private_key": private_key,
            "key_id": key_id,
            "signing_alg": signing_alg,
            "client_assertion": client_assertion,
            "assertion_audience": assertion_audience,
            "cert": cert,
        }
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
                    ("auth_method", auth_method),
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
            if given or manager_options:
                raise ConfigurationError(
                    "pass either token_manager or the credentials, not both; "
                    f"got token_manager and {', '.join(given + list(manager_options))}"
                )
            if not isinstance(token_manager, TokenManager):
                raise ConfigurationError(
                    f"token_manager must be a TokenManager, not {type(token_manager).__name__}"
                )
            self.token_manager = token_manager
        else:
            missing = [
                name
                for name, value in (
                    ("token_endpoint", token_endpoint if issuer is None else issuer),
                    ("client_id", client_id),
                )
                if value is None
            ]
            if missing:
                raise ConfigurationError(
                    f"TokenSession needs {' and '.join(missing)} (with client_secret, "
                    "private_key, client_assertion or cert), or issuer= in place of "
                    "token_endpoint, or token_manager=TokenManager(...)"
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
            self.token_manager = TokenManager(provider, token_storage, **manager_options)
            if cert is not None:
                # RFC 8705 §3: a token bound to the certificate is good only
                # over a connection that presents it, so the API gets it too.
                self.cert = cert
        self.token_hosts = _flow.normalize_hosts(token_hosts)

    def __repr__(self) -> str:
        return f"<TokenSession {self.token_manager!r}>"

    def prepare_request(self, request: Request) -> PreparedRequest:
        """Prepare as :class:`requests.Session` does, then add the token.

        The token goes on requests to allowed hosts that have no
        ``Authorization`` header yet: a header (or ``auth``) the caller set
        wins. ``self.headers`` is never written to; it is shared by all threads.

        Raises:
            TokenError: no token could be obtained; nothing is sent.
        """
        hosts = self.token_hosts
        ours = request.auth is None and self.auth is None
        if ours and (hosts is None or _flow.host_allowed(request.url, hosts)):
            request.auth = _skip_netrc
            try:
                prepared = super().prepare_request(request)
            finally:
                request.auth = None
            if _flow.authorization(prepared.headers) is None:
                _flow.attach(prepared, self.token_manager.get_token())
            return prepared
        prepared = super().prepare_request(request)
        if _flow.authorization(prepared.headers) is None and (
            hosts is None or _flow.host_allowed(prepared.url, hosts)
        ):
            _flow.attach(prepared, self.token_manager.get_token())
        return prepared

    def rebuild_auth(self, prepared_request: PreparedRequest, response: Response) -> None:
        """Drop the header on a redirect to another origin, as requests does,
        but keep it on a redirect within the origin.

        requests puts ``~/.netrc`` credentials over the header on every hop,
        even on a hop to the same host that keeps the header: our token (or
        the caller's explicit header) would be displaced by them there.
        """
        kept = prepared_request.headers.get("Authorization")
        if kept is not None and self.should_strip_auth(  # type: ignore[no-untyped-call]  # untyped in types-requests
            response.request.url or "", prepared_request.url or ""
        ):
            kept = None
        super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]  # untyped in types-requests
        if kept is not None:
            prepared_request.headers["Authorization"] = kept

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:
        """Send as :class:`requests.Session` does; on a 401 to our token,
        invalidate that token and send once more with a new one.

        The 401 is returned as it is when the body cannot be replayed (a
        generator, a file without a known start) or the retry would not carry
        our token. Redirect hops never get a token added here: requests drops
        the header on a change of host and it stays dropped.
        """
        response = super().send(request, **kwargs)
        if response.status_code != 401:  # the hot path: no further call
            return response
        token = _flow.sent_token(response, request, self.token_manager)
        if token is None:
            return response
        if not _flow.replayable(request):
            # Not sent again, but the token was refused all the same: drop it,
            # so that the next request gets a new one instead of another 401.
            self.token_manager.invalidate(token)
            log.info("API answered 401; body cannot be replayed, so not retrying")
            return response
        retry = _flow.retry_request(request, self.token_manager._replace_refused(token))
        _flow.drain(response)
        final = super().send(retry, **kwargs)
        final.history.insert(0, response)
        return final
