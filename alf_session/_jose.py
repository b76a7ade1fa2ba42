"""Signing keys and JWT assertions, through PyJWT and ``cryptography``.

Both come with the ``jwt`` extra (``pip install 'alf-session[jwt]'``) and are
imported here, lazily, only when a signing method is built: ``import
alf_session`` never loads them. Nothing in this module signs or parses by
hand; PyJWT does the JOSE work and ``cryptography`` the keys.

A key is loaded once, when the provider is built, and kept as a
``cryptography`` key object: no copy of its PEM text stays around, and no
message, log line or repr ever shows it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

__all__ = ["SigningKey", "assertion_claims", "require_jwt", "sign"]

_EXTRA_HINT = "install the jwt extra: pip install 'alf-session[jwt]'"
# A PEM key file is a few KiB; a file far larger is not a key (and reading it
# whole could exhaust memory).
_MAX_KEY_FILE = 256 * 1024

_RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_HMAC_ALGS = ("HS256", "HS384", "HS512")


def require_jwt(what: str) -> Any:
    """The ``jwt`` module (PyJWT), or a ConfigurationError saying how to get it."""
    try:
        import jwt
        from cryptography.hazmat.primitives import serialization  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            f"{what} signs JWTs with PyJWT and cryptography, which are not installed; {_EXTRA_HINT}"
        ) from exc
    return jwt


class SigningKey:
    """A private key (or an HMAC secret) and the JWS algorithm it signs with.

    Args:
        key: PEM text (``str`` starting with ``-----BEGIN``), PEM ``bytes``, a
            path (``str`` or :class:`os.PathLike`) to a PEM file, or a
            ``cryptography`` private key object.
        algorithm: The JWS ``alg``; default from the key: RS256 for RSA,
            ES256/ES384/ES512 by the EC curve, EdDSA for Ed25519/Ed448.
        key_id: The ``kid`` header, naming the key among the client's JWKS.
        password: The passphrase of an encrypted PEM key.

    Raises:
        ConfigurationError: the key cannot be loaded, or does not fit the
            algorithm. The message never quotes the key.
    """

    __slots__ = ("_key", "algorithm", "key_id")

    def __init__(
        self,
        key: object,
        *,
        algorithm: str | None = None,
        key_id: str | None = None,
        password: bytes | None = None,
    ) -> None:
        require_jwt("private_key_jwt")
        self._key = _load_private_key(key, password)
        self.algorithm = _algorithm_for(self._key, algorithm)
        if key_id is not None and (not isinstance(key_id, str) or not key_id):
            raise ConfigurationError("key_id must be a non-empty string")
        self.key_id = key_id

    @classmethod
    def hmac(cls, secret: str, algorithm: str | None = None) -> SigningKey:
        """A key for ``client_secret_jwt``: the client secret, HS256 by default."""
        require_jwt("client_secret_jwt")
        algorithm = algorithm or "HS256"
        if algorithm not in _HMAC_ALGS:
            raise ConfigurationError(
                f"client_secret_jwt signs with {', '.join(_HMAC_ALGS)}, not {algorithm!r}"
            )
        key = secret.encode()
        need = int(algorithm[2:]) // 8
        if len(key) < need:
            # RFC 7518 §3.2: an HMAC key at least as long as the hash.
            raise ConfigurationError(
                f"client_secret_jwt with {algorithm} needs a client_secret of at least {need} "
                f"bytes (RFC 7518 §3.2); this one has {len(key)}"
            )
        self = cls.__new__(cls)
        self._key = key
        self.algorithm = algorithm
        self.key_id = None
        return self

    @property
    def public_key(self) -> Any:
        """The public half (a ``cryptography`` key), to register with a server."""
        if isinstance(self._key, bytes):
            raise ConfigurationError("an HMAC secret has no public key")
        return self._key.public_key()

    def __repr__(self) -> str:
        kid = f", key_id={self.key_id!r}" if self.key_id else ""
        return f"SigningKey(algorithm={self.algorithm!r}{kid})"

    def __reduce__(self) -> Any:
        # A key does not travel by pickle: a provider holding one is rebuilt
        # in each process from where the key lives (a file, a secret store).
        raise TypeError("a SigningKey cannot be pickled; load the key in each process")


def sign(key: SigningKey, claims: Mapping[str, Any], *, typ: str | None = None) -> str:
    """A compact JWS of ``claims`` signed with ``key`` (PyJWT does the work)."""
    jwt = require_jwt("signing an assertion")
    headers: dict[str, Any] = {}
    if key.key_id:
        headers["kid"] = key.key_id
    if typ:
        headers["typ"] = typ
    token: str = jwt.encode(dict(claims), key._key, algorithm=key.algorithm, headers=headers)
    return token


def assertion_claims(client_id: str, audience: str, now: float, lifetime: float) -> dict[str, Any]:
    """The claims of an RFC 7523 §3 client assertion: ``iss`` = ``sub`` = the
    client, ``aud``, a fresh random ``jti``, ``iat`` and a short ``exp``."""
    issued = int(now)
    return {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": secrets.token_urlsafe(18),
        "iat": issued,
        "exp": issued + int(lifetime),
    }


def _load_private_key(key: object, password: bytes | None) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    private_types = (
        rsa.RSAPrivateKey,
        ec.EllipticCurvePrivateKey,
        ed25519.Ed25519PrivateKey,
        ed448.Ed448PrivateKey,
    )
    if isinstance(key, private_types):
        return key
    where = "private_key"
    if isinstance(key, str) and key.lstrip().startswith("-----BEGIN"):
        data = key.encode()
    elif isinstance(key, bytes):
        data = key
    elif isinstance(key, (str, os.PathLike)):
        path = Path(key)
        where = f"private key file {str(path)[:200]!r}"
        try:
            with path.open("rb") as fh:
                data = fh.read(_MAX_KEY_FILE + 1)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read {where}: {exc.strerror or type(exc).__name__}"
            ) from None
        if len(data) > _MAX_KEY_FILE:
            raise ConfigurationError(f"{where} is over {_MAX_KEY_FILE // 1024} KiB: not a PEM key")
    else:
        raise ConfigurationError(
            "private_key must be PEM text or bytes, a path to a PEM file, or a cryptography "
            f"private key, not {type(key).__name__}"
        )
    try:
        loaded = serialization.load_pem_private_key(data, password=password)
    except TypeError:
        raise ConfigurationError(
            f"{where} is encrypted: pass its password, or give an unencrypted key"
        ) from None
    except ValueError:
        # from None: cryptography's own message could carry parts of the input.
        raise ConfigurationError(
            f"{where} is not a PEM private key (RSA, EC or Ed25519), or its password is wrong"
        ) from None
    except Exception as exc:  # noqa: BLE001 - cryptography raises its own types
        raise ConfigurationError(f"{where} could not be loaded ({type(exc).__name__})") from None
    if not isinstance(loaded, private_types):
        raise ConfigurationError(
            f"{where} is a {type(loaded).__name__}; use an RSA, EC or Ed25519 key"
        )
    return loaded


def _algorithm_for(key: Any, algorithm: str | None) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ConfigurationError(
                f"the RSA key has {key.key_size} bits; RFC 7518 §3.3 asks for 2048 or more"
            )
        allowed: tuple[str, ...] = _RSA_ALGS
        default = "RS256"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        default = _EC_ALGS.get(key.curve.name, "")
        if not default:
            raise ConfigurationError(
                f"EC curve {key.curve.name} has no JWS algorithm; use P-256, P-384 or P-521"
            )
        allowed = (default,)
    elif isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        allowed, default = ("EdDSA",), "EdDSA"
    else:  # pragma: no cover - _load_private_key admits nothing else
        raise ConfigurationError(f"unsupported key type {type(key).__name__}")
    if algorithm is None:
        return default
    if algorithm not in allowed:
        raise ConfigurationError(
            f"signing_alg {algorithm!r} does not fit this {type(key).__name__.lstrip('_')}; "
            f"use {' or '.join(allowed)}"
        )
    return algorithm
