"""Client authentication at the token endpoint: one small object per RFC 8414 method.

===============================  ===================================================
``client_secret_basic``          :class:`ClientSecretBasic`: HTTP Basic (RFC 6749 §2.3.1)
``client_secret_post``           :class:`ClientSecretPost`: id and secret in the form
``client_secret_jwt``            :class:`ClientSecretJwt`: an assertion signed with
                                 the secret (HMAC; RFC 7523 §2.2, OIDC Core §9)
``private_key_jwt``              :class:`PrivateKeyJwt`: an assertion signed with a
                                 private key, or a ready-made one (workload identity)
``tls_client_auth``              :class:`TlsClientAuth`: a CA-issued client certificate
                                 (RFC 8705 §2.1)
``self_signed_tls_client_auth``  :class:`SelfSignedTlsClientAuth`: a self-signed one
                                 (RFC 8705 §2.2)
``none``                         :class:`NoClientAuth`: a public client, id only
===============================  ===================================================

A method is chosen once, when the provider is built (or at the first token
request, when it waits for the issuer's metadata), and then only turns a
form into an authenticated one with :meth:`ClientAuth.apply`, **once per
attempt**: a signed assertion gets a fresh ``jti``, ``iat`` and ``exp`` every
time, so a server that refuses a replayed ``jti`` never sees one from us.

Any object with ``name``, ``apply``, ``secrets`` and ``identity`` like these
can be passed as ``auth_method``.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple
from urllib.parse import quote_plus

from . import _jose
from ._assertions import CredentialSource
from .errors import ConfigurationError

__all__ = [
    "ASSERTION_TYPE",
    "AUTH_METHODS",
    "AuthContext",
    "ClientAuth",
    "ClientSecretBasic",
    "ClientSecretJwt",
    "ClientSecretPost",
    "NoClientAuth",
    "PrivateKeyJwt",
    "SelfSignedTlsClientAuth",
    "TlsClientAuth",
    "cert_thumbprint",
    "select_auth",
]

#: ``client_assertion_type`` of a JWT client assertion (RFC 7523 §2.2).
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: The RFC 8414 names this module implements, in the order ``auth_method=None`` prefers.
AUTH_METHODS = (
    "client_secret_basic",
    "client_secret_post",
    "client_secret_jwt",
    "private_key_jwt",
    "tls_client_auth",
    "self_signed_tls_client_auth",
    "none",
)
# Signed assertions live this long: long enough for a slow network, short
# enough that a captured one is soon worthless.
_ASSERTION_LIFETIME = 60.0


class AuthContext(NamedTuple):
    """What a method may need to authenticate one attempt."""

    client_id: str
    #: ``aud`` of a signed assertion: ``assertion_audience``, else the token endpoint.
    audience: str
    #: The provider's clock, UNIX seconds.
    now: float


class ClientAuth:
    """Base of the client authentication methods.

    Subclasses set :attr:`name` and implement :meth:`apply`. They are
    immutable once built and thread-safe; their repr shows no secret.

    .. versionadded:: 0.2
    """

    #: The RFC 8414 ``token_endpoint_auth_method`` name.
    name: ClassVar[str] = ""
    #: Whether the token request must present a client certificate.
    needs_cert: ClassVar[bool] = False
    #: Whether each attempt gets a new form (a fresh assertion): then the wire
    #: retries by building the request again, never by resending it.
    per_attempt: ClassVar[bool] = False

    def apply(self, form: dict[str, str], headers: dict[str, str], context: AuthContext) -> None:
        """Authenticate one token request attempt, in place."""
        raise NotImplementedError

    def secrets(self) -> tuple[str, ...]:
        """Values to scrub from every message (secrets; never assertions' keys)."""
        return ()

    def identity(self) -> dict[str, object]:
        """What sets this credential apart in a storage key (never a secret)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _form_encode(value: str) -> str:
    # RFC 6749 §2.3.1: client_id and client_secret are form-url-encoded before
    # they are joined with ':' and Base64-encoded for HTTP Basic.
    return quote_plus(value, safe="")


class _SecretMethod(ClientAuth):
    __slots__ = ("_secret",)

    def __init__(self, client_secret: str) -> None:
        if not isinstance(client_secret, str):
            raise ConfigurationError(
                f"{self.name} needs client_secret as a string, not {type(client_secret).__name__}"
            )
        self._secret = client_secret

    def secrets(self) -> tuple[str, ...]:
        return (self._secret,)


class ClientSecretBasic(_SecretMethod):
    """``client_secret_basic``: HTTP Basic with the form-url-encoded id and secret.

    .. versionadded:: 0.2
    """

    name = "client_secret_basic"

    def apply(self, form: dict[str, str], headers: dict[str, str], context: AuthContext) -> None:
        pair = f"{_form_encode(context.client_id)}:{_form_encode(self._secret)}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")


class ClientSecretPost(_SecretMethod):
    """``client_secret_post``: ``client_id`` and ``client_secret`` in the form body.

    .. versionadded:: 0.2
    """

    name = "client_secret_post"

    def apply(self, form: dict[str, str], headers: dict[str, str], context: AuthContext) -> None:
        form["client_id"] = context.client_id
        form["client_secret"] = self._secret


def _put_assertion(form: dict[str, str], client_id: str, assertion: str) -> None:
    # RFC 7523 §3.1 doesn't require client_id beside an assertion, but RFC
    # 6749 §3.2.1 allows it and several servers (Entra ID, Okta) ask for it.
    form["client_id"] = client_id
    form["client_assertion_type"] = ASSERTION_TYPE
    form["client_assertion"] = assertion


class ClientSecretJwt(_SecretMethod):
    """``client_secret_jwt``: an RFC 7523 assertion signed with the secret (HMAC).

    Args:
        client_secret: The shared secret, the HMAC key.
        signing_alg: HS256 (default), HS384 or HS512.

    Needs the ``jwt`` extra.

    .. versionadded:: 0.2
    """

    __slots__ = ("_key",)
    name = "client_secret_jwt"
    per_attempt = True

    def __init__(self, client_secret: str, *, signing_alg: str | None = None) -> None:
        super().__init__(client_secret)
        if not client_secret:
            raise ConfigurationError("client_secret_jwt needs a non-empty client_secret")
        self._key = _jose.SigningKey.hmac(client_secret, signing_alg)

    @property
    def algorithm(self) -> str:
        return self._key.algorithm

    def apply(self, form: dict[str, str], headers: dict[str, str], context: AuthContext) -> None:
        claims = _jose.assertion_claims(
            context.client_id, context.audience, context.now, _ASSERTION_LIFETIME
        )
        _put_assertion(form, context.client_id, _jose.sign(self._key, claims))

    def __repr__(self) -> str:
        return f"ClientSecretJwt(signing_alg={self.algorithm!r})"


class PrivateKeyJwt(ClientAuth):
    """``private_key_jwt``: an RFC 7523 client assertion, signed here or ready-made.

    Give exactly one of:

    Args:
        private_key: PEM text or bytes, a path to a PEM file, or a
            ``cryptography`` private key (RSA, EC, Ed25519). Each attempt signs
            a new assertion: ``iss`` = ``sub`` = client id, ``aud``, a random
            ``jti``, ``iat``, ``exp`` a minute later. Needs the ``jwt`` extra.
        client_assertion: A ready assertion: a JWT string, a callable returning
            one, or a path read again at each token request (a Kubernetes
            projected token, GitHub Actions or cloud workload identity).
        key_id: The ``kid`` header of signed assertions.
        signing_alg: The JWS algorithm; default from the key (RS256, ES256/
            384/512, EdDSA).

    The key is held as a ``cryptography`` object, never shown, logged, stored
    or pickled.

    .. versionadded:: 0.2
    """

    __slots__ = ("_key", "_source")
    name = "private_key_jwt"
    per_attempt = True

    def __init__(
        self,
        private_key: object = None,
        *,
        client_assertion: object = None,
        key_id: str | None = None,
        signing_alg: str | None = None,
    ) -> None:
        if (private_key is None) == (client_assertion is None):
            raise ConfigurationError(
                "private_key_jwt needs either private_key (to sign assertions) or "
                "client_assertion (a ready one), and not both"
            )
        self._key: _jose.SigningKey | None = None
        self._source: CredentialSource | None = None
        if private_key is not None:
            self._key = _jose.SigningKey(private_key, algorithm=signing_alg, key_id=key_id)
        else:
            if key_id is not None or signing_alg is not None:
                raise ConfigurationError(
                    "key_id and signing_alg apply to assertions signed from private_key, "
                    "not to a ready client_assertion"
                )
            self._source = CredentialSource(client_assertion, name="client_assertion")

    @property
    def signing_key(self) -> _jose.SigningKey | None:
        """The key assertions are signed with (``None`` for a ready assertion)."""
        return self._key

    def apply(self, form: dict[str, str], headers: dict[str, str], context: AuthContext) -> None:
        if self._key is not None:
            claims = _jose.assertion_claims(
                context.client_id, context.audience, context.now, _ASSERTION_LIFETIME
            )
            assertion = _jose.sign(self._key, claims)
        else:
            assert self._source is not None  # noqa: S101 - one of the two is set
            assertion = self._source.get()
        _put_assertion(form, context.client_id, assertion)

    def __repr__(self) -> str:
        if self._key is not None:
            return f"PrivateKeyJwt({self._key!r})"
        return f"PrivateKeyJwt({self._source!r})"


class TlsClientAuth(ClientAuth):
    """``tls_client_auth`` (RFC 8705 §2.1): the client certificate, issued by a
    CA the server trusts, is the credential; the form carries ``client_id``.

    The certificate itself is the provider's ``cert=``.

    .. versionadded:: 0.2
    """

    name = "tls_client_auth"
    needs_cert = True

    def apply(self, form: dict[str, str], headers: dict[str, str], context: AuthContext) -> None:
        form["client_id"] = context.client_id


class SelfSignedTlsClientAuth(TlsClientAuth):
    """``self_signed_tls_client_auth`` (RFC 8705 §2.2): a self-signed client
    certificate registered with the server.

    .. versionadded:: 0.2
    """

    name = "self_signed_tls_client_auth"


class NoClientAuth(ClientAuth):
    """``none``: a public client; the form carries ``client_id`` only.

    .. versionadded:: 0.2
    """

    name = "none"

    def apply(self, form: dict[str, str], headers: dict[str, str], context: AuthContext) -> None:
        form["client_id"] = context.client_id


def cert_thumbprint(cert: str | tuple[str, str] | Path) -> str:
    """The RFC 8705 §3.1 ``x5t#S256`` of a client certificate: the base64url
    SHA-256 of its DER form. ``cert`` is as in requests: a PEM path, or a
    ``(cert, key)`` pair of paths.

    Raises:
        ConfigurationError: the file cannot be read or holds no certificate.
    """
    path = cert[0] if isinstance(cert, tuple) else cert
    where = f"client certificate {str(path)[:200]!r}"
    try:
        text = Path(path).read_text("ascii", errors="replace")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read {where}: {exc.strerror or type(exc).__name__}"
        ) from None
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        raise ConfigurationError(f"{where} holds no PEM certificate")
    try:
        der = ssl.PEM_cert_to_DER_cert(text[start : stop + len(end)])
    except ValueError:
        raise ConfigurationError(f"{where} holds no valid PEM certificate") from None
    digest = hashlib.sha256(der).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


_BY_NAME: dict[str, type[ClientAuth]] = {
    "client_secret_basic": ClientSecretBasic,
    "client_secret_post": ClientSecretPost,
    "client_secret_jwt": ClientSecretJwt,
    "private_key_jwt": PrivateKeyJwt,
    "tls_client_auth": TlsClientAuth,
    "self_signed_tls_client_auth": SelfSignedTlsClientAuth,
    "none": NoClientAuth,
}


def candidates(
    *,
    client_secret: str | None,
    private_key: object,
    client_assertion: object,
    cert: object,
) -> tuple[str, ...]:
    """The methods the given credentials allow, best first (for ``auth_method=None``)."""
    if private_key is not None or client_assertion is not None:
        return ("private_key_jwt",)
    if client_secret is not None:
        return ("client_secret_basic", "client_secret_post", "client_secret_jwt")
    if cert is not None:
        return ("tls_client_auth", "self_signed_tls_client_auth")
    return ("none",)


def select_auth(
    auth_method: str | ClientAuth | None,
    *,
    client_secret: str | None = None,
    private_key: object = None,
    client_assertion: object = None,
    key_id: str | None = None,
    signing_alg: str | None = None,
    cert: object = None,
    supported: Sequence[str] | None = None,
) -> ClientAuth:
    """Build the client authentication for the given credentials.

    Args:
        auth_method: An RFC 8414 name, a :class:`ClientAuth`, or ``None`` to
            choose from the credentials given (and from ``supported``).
        supported: The server's ``token_endpoint_auth_methods_supported``,
            when its metadata is known.

    Raises:
        ConfigurationError: the method is unknown, its credential is
            missing, or a credential is given that it would not use.
    """
    if isinstance(auth_method, ClientAuth) or (
        auth_method is not None
        and not isinstance(auth_method, str)
        and callable(getattr(auth_method, "apply", None))
    ):
        return auth_method  # structurally a ClientAuth
    if private_key is not None and client_assertion is not None:
        raise ConfigurationError(
            "give private_key (assertions signed here) or client_assertion (a ready one), not both"
        )
    if auth_method is None:
        options = candidates(
            client_secret=client_secret,
            private_key=private_key,
            client_assertion=client_assertion,
            cert=cert,
        )
        # client_secret_jwt needs the jwt extra: chosen only when the server
        # supports nothing else for a secret.
        auth_method = options[0]
        if supported:
            auth_method = next((m for m in options if m in supported), auth_method)
    if not isinstance(auth_method, str) or auth_method not in _BY_NAME:
        raise ConfigurationError(
            f"auth_method must be one of {', '.join(AUTH_METHODS)} or a ClientAuth, "
            f"not {auth_method!r}"
        )
    uses = {
        "client_secret": auth_method.startswith("client_secret_"),
        "private_key": auth_method == "private_key_jwt",
        "client_assertion": auth_method == "private_key_jwt",
    }
    given = {
        "client_secret": client_secret is not None,
        "private_key": private_key is not None,
        "client_assertion": client_assertion is not None,
    }
    unused = [name for name in given if given[name] and not uses[name]]
    if unused:
        raise ConfigurationError(
            f"auth_method {auth_method!r} does not use {' or '.join(unused)}; "
            "pass the credential that method needs, or leave auth_method to be chosen"
        )
    if (key_id is not None or signing_alg is not None) and auth_method not in (
        "private_key_jwt",
        "client_secret_jwt",
    ):
        raise ConfigurationError(f"key_id and signing_alg do not apply to {auth_method!r}")
    if auth_method in ("client_secret_basic", "client_secret_post", "client_secret_jwt"):
        if client_secret is None:
            raise ConfigurationError(
                f"client_secret is missing: auth_method {auth_method!r} authenticates the "
                "client with it. Pass client_secret=..., or auth_method='none' for a public client"
            )
        if auth_method == "client_secret_jwt":
            if key_id is not None:
                raise ConfigurationError("key_id does not apply to client_secret_jwt")
            return ClientSecretJwt(client_secret, signing_alg=signing_alg)
        return _BY_NAME[auth_method](client_secret)  # type: ignore[call-arg]
    if auth_method == "private_key_jwt":
        return PrivateKeyJwt(
            private_key, client_assertion=client_assertion, key_id=key_id, signing_alg=signing_alg
        )
    if auth_method in ("tls_client_auth", "self_signed_tls_client_auth") and cert is None:
        raise ConfigurationError(
            f"auth_method {auth_method!r} needs cert=: the client certificate (RFC 8705)"
        )
    return _BY_NAME[auth_method]()


def describe(method: Any) -> str:
    """The RFC 8414 name of a method object, for reprs and messages."""
    return str(getattr(method, "name", "") or type(method).__name__)
