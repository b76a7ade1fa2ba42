"""The grants: each one only builds the form of its token request.

The wire (sending, retrying, reading and judging the answer) is
:mod:`alf_session._wire`'s, the client authentication is
:mod:`alf_session.client_auth`'s, and the caching and sharing is the
:class:`~alf_session.TokenManager`'s, the same for every grant:

=========================  ==========================================================
:class:`ClientCredentials`  RFC 6749 §4.4: a service's own token
:class:`PasswordCredentials` RFC 6749 §4.3: a user's password, traded once
:class:`JwtBearer`          RFC 7523 §2.1: a JWT (signed here, or ready-made) as the grant
:class:`TokenExchange`      RFC 8693: a token from elsewhere traded for one for this API
=========================  ==========================================================

:meth:`~alf_session.OAuth2Provider.grant_params` runs for every attempt,
retries included, so anything time-bound in a form (an assertion's ``jti``
and ``exp``, a subject token read from a rotating file) is fresh each time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import _jose
from ._assertions import CredentialSource
from ._oauth2 import OAuth2Provider
from ._wire import _require_str
from .errors import ConfigurationError, InvalidGrant
from .token import Token

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "JWT_BEARER_GRANT",
    "JWT_TOKEN_TYPE",
    "TOKEN_EXCHANGE_GRANT",
    "ClientCredentials",
    "JwtBearer",
    "PasswordCredentials",
    "TokenExchange",
]

#: RFC 7523 §2.1 grant type.
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: RFC 8693 §2.1 grant type.
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
#: RFC 8693 §3 token type identifiers.
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 - a URN
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105 - a URN

# A JWT bearer grant assertion signed here lives this long (RFC 7523 §3: "the
# authorization server MAY reject JWTs with an exp claim value that is
# unreasonably far in the future").
_GRANT_ASSERTION_LIFETIME = 300.0


class ClientCredentials(OAuth2Provider):
    """The client credentials grant (RFC 6749 §4.4): a service's own token.

    Args:
        token_endpoint: The token URL; ``https://``, or ``http://`` on
            loopback. Or leave it out and give ``issuer=``.
        client_id: The client's id.
        client_secret: The client's secret, if it authenticates with one.
            Kept out of every log, repr and message, never stored.
        **options: See :class:`~alf_session.OAuth2Provider`: ``issuer``,
            ``auth_method``, ``private_key``, ``key_id``, ``signing_alg``,
            ``client_assertion``, ``assertion_audience``, ``cert``, ``scope``,
            ``audience``, ``extra_params``, ``retry``, ``timeout``, …

    Raises:
        ConfigurationError: an argument is missing or wrong.
        InsecureTransportError: the endpoint is plain http to a remote host.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       ``issuer``, every RFC 8414 client authentication method, ``cert``.
    """

    grant_type = "client_credentials"

    def __init__(
        self,
        token_endpoint: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        **options: Any,
    ) -> None:
        if client_id is None:
            raise ConfigurationError("ClientCredentials needs a client_id")
        super().__init__(token_endpoint, client_id, client_secret, **options)

    def grant_params(self) -> dict[str, Any]:
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
        token_endpoint: str | None,
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

    def _secrets(self, extra: Any = ()) -> list[str]:
        return super()._secrets([*extra, self._password])

    def grant_params(self) -> dict[str, Any]:
        return {"username": self.username, "password": self._password, **self._common_params()}

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", username={self.username!r})"


class JwtBearer(OAuth2Provider):
    """The JWT bearer grant (RFC 7523 §2.1): a JWT is the grant.

    The assertion is either ready-made, as ``client_assertion`` is (a JWT
    string, a callable returning one, or a path read again at each token
    request), or signed here from ``private_key`` with ``iss`` =
    ``assertion_issuer`` (default: the client id), ``sub`` = ``subject``
    (default: the issuer), ``aud`` = ``assertion_audience`` (default: the
    token endpoint), a fresh ``jti``, ``iat`` and an ``exp`` five minutes on,
    plus ``claims``: a new one for every attempt. The client authenticates
    too if a credential is given (RFC 7523 §3.1 makes that optional).

    Args:
        token_endpoint: The token URL, or ``None`` with ``issuer=``.
        assertion: A ready assertion (str, callable or path).
        private_key: A key to sign the assertion with instead (needs the
            ``jwt`` extra); ``key_id`` and ``signing_alg`` as for
            ``private_key_jwt``.
        assertion_issuer: ``iss`` of the signed assertion.
        subject: ``sub`` of the signed assertion.
        claims: More claims for the signed assertion (Google's ``scope``, …).
        client_id: The client, if it authenticates (with the client
            authentication options of :class:`~alf_session.OAuth2Provider`).
        **options: As :class:`ClientCredentials`.

    .. versionadded:: 0.2
    """

    grant_type = JWT_BEARER_GRANT
    _client_auth_optional = True
    _grant_per_attempt = True

    def __init__(
        self,
        token_endpoint: str | None = None,
        assertion: object = None,
        *,
        private_key: object = None,
        key_id: str | None = None,
        signing_alg: str | None = None,
        assertion_issuer: str | None = None,
        subject: str | None = None,
        claims: Mapping[str, Any] | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        **options: Any,
    ) -> None:
        if (assertion is None) == (private_key is None):
            raise ConfigurationError(
                "JwtBearer needs either assertion (a ready JWT: str, callable or path) "
                "or private_key (to sign one), and not both"
            )
        if private_key is None and (key_id or signing_alg or assertion_issuer or subject or claims):
            raise ConfigurationError(
                "key_id, signing_alg, assertion_issuer, subject and claims apply to an "
                "assertion signed from private_key, not to a ready one"
            )
        super().__init__(token_endpoint, client_id, client_secret, **options)
        self._grant_key: _jose.SigningKey | None = None
        self._grant_source: CredentialSource | None = None
        if private_key is not None:
            self._grant_key = _jose.SigningKey(private_key, algorithm=signing_alg, key_id=key_id)
            iss = assertion_issuer or client_id
            if not iss:
                raise ConfigurationError(
                    "a signed JwtBearer assertion needs assertion_issuer= (its iss) or client_id"
                )
            self.assertion_issuer: str | None = iss
            self.subject: str | None = subject or iss
            self.claims = dict(claims or {})
        else:
            self._grant_source = CredentialSource(assertion, name="assertion")
            self.assertion_issuer = self.subject = None
            self.claims = {}

    def _identity(self) -> dict[str, object]:
        if self._grant_source is not None:
            return {"assertion": self._grant_source.identity()}
        return {"iss": self.assertion_issuer, "sub": self.subject, "claims": sorted(self.claims)}

    def grant_params(self) -> dict[str, Any]:
        if self._grant_key is not None:
            assert self.assertion_issuer is not None  # noqa: S101 - set with the key
            now = self.clock()
            claims = _jose.assertion_claims(
                self.assertion_issuer,
                self.assertion_audience or self._endpoint(),
                now,
                _GRANT_ASSERTION_LIFETIME,
            )
            claims["sub"] = self.subject
            claims.update(self.claims)
            assertion = _jose.sign(self._grant_key, claims)
        else:
            assert self._grant_source is not None  # noqa: S101 - one of the two is set
            assertion = self._grant_source.get()
        return {"assertion": assertion, **self._common_params()}


class TokenExchange(OAuth2Provider):
    """Token exchange (RFC 8693): trade a token from elsewhere for one for this API.

    ``subject_token`` is read again at each token request: a JWT string, a
    callable, a path (a workload identity file), or a
    :class:`~alf_session.TokenManager`, whose current token is exchanged. So
    "workload token → STS → API token" is two managers and no glue, and each
    shares its token through the fleet's storage as any other. When the STS
    refuses a subject token from a manager (``invalid_grant``), that token
    is dropped from the manager and the exchange is tried once more.

    Args:
        token_endpoint: The STS token URL, or ``None`` with ``issuer=``.
        subject_token: The token to exchange.
        subject_token_type: Its RFC 8693 §3 type; default
            ``urn:ietf:params:oauth:token-type:access_token`` for a
            TokenManager, ``…:jwt`` otherwise.
        actor_token: The acting party's token (delegation), as
            ``subject_token``; ``actor_token_type`` its type (default ``…:jwt``).
        requested_token_type: The type asked for; the server's default if ``None``.
        audience: The ``audience`` parameter: the service the token is for.
        resource: The ``resource`` URI(s) the token is for.
        client_id: The client, if it authenticates (as in ClientCredentials).
        **options: As :class:`ClientCredentials`.

    .. versionadded:: 0.2
    """

    grant_type = TOKEN_EXCHANGE_GRANT
    _client_auth_optional = True
    _grant_per_attempt = True

    def __init__(
        self,
        token_endpoint: str | None = None,
        subject_token: object = None,
        subject_token_type: str | None = None,
        *,
        actor_token: object = None,
        actor_token_type: str | None = None,
        requested_token_type: str | None = None,
        resource: str | Sequence[str] | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        **options: Any,
    ) -> None:
        if subject_token is None:
            raise ConfigurationError("TokenExchange needs a subject_token")
        super().__init__(token_endpoint, client_id, client_secret, **options)
        self._subject = CredentialSource(subject_token, name="subject_token", managers=True)
        default_type = ACCESS_TOKEN_TYPE if self._subject.kind == "manager" else JWT_TOKEN_TYPE
        self.subject_token_type = _require_str(
            "subject_token_type", subject_token_type or default_type
        )
        self._actor: CredentialSource | None = None
        self.actor_token_type: str | None = None
        if actor_token is not None:
            self._actor = CredentialSource(actor_token, name="actor_token", managers=True)
            self.actor_token_type = _require_str(
                "actor_token_type", actor_token_type or JWT_TOKEN_TYPE
            )
        elif actor_token_type is not None:
            raise ConfigurationError("actor_token_type needs an actor_token")
        if requested_token_type is not None:
            _require_str("requested_token_type", requested_token_type)
        self.requested_token_type = requested_token_type
        if isinstance(resource, str):
            resource = [resource]
        self.resource = [_require_str("resource", r) for r in resource or ()]

    def fetch_token(self) -> Token:
        manager = self._subject.target if self._subject.kind == "manager" else None
        if manager is None:
            return super().fetch_token()
        sent = manager.get_token()
        try:
            return super().fetch_token()
        except InvalidGrant:
            # The STS refused the subject token: it may have been revoked
            # before its expiry. Drop that one token and try once more.
            manager.invalidate(sent)
            return super().fetch_token()

    def _identity(self) -> dict[str, object]:
        return {
            "subject": self._subject.identity(),
            "subject_type": self.subject_token_type,
            "actor": self._actor.identity() if self._actor else None,
            "requested": self.requested_token_type,
            "resource": self.resource,
        }

    def grant_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "subject_token": self._subject.get(),
            "subject_token_type": self.subject_token_type,
        }
        if self._actor is not None:
            params["actor_token"] = self._actor.get()
            params["actor_token_type"] = self.actor_token_type
        if self.requested_token_type:
            params["requested_token_type"] = self.requested_token_type
        if self.resource:
            params["resource"] = list(self.resource)
        params.update(self._common_params())
        return params

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", subject_token={self._subject!r})"
