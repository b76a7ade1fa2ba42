"""The :class:`Token` value: what a token endpoint returned, immutable."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import time
from collections.abc import Mapping
from typing import Any

from .errors import InvalidTokenResponse

__all__ = ["Token"]

# Fields of an RFC 6749 §5.1 response that Token keeps as attributes; the rest
# go to Token.extra.
_KNOWN = frozenset({"access_token", "token_type", "expires_in", "refresh_token", "scope"})

# A lifetime longer than this is not a lifetime but a bug on the server's side
# (or milliseconds where seconds were meant); ten years is generous.
_MAX_LIFETIME = 10 * 365 * 24 * 3600.0


class Token:
    """An OAuth 2.0 access token and what came with it. Immutable.

    Attributes:
        access_token: The token itself. Never shown by ``repr``.
        token_type: ``"Bearer"`` unless the server said otherwise (a lower-case
            ``"bearer"`` is normalised, as RFC 6750 clients must accept it).
        expires_at: When it expires, in UNIX seconds (wall clock, shared by
            hosts), or ``None`` when unknown.
        refresh_token: The refresh token, if the server returned one. Never
            shown by ``repr``.
        scope: The granted scope as the server returned it, if it did.
        extra: The response's other fields (``id_token``, vendor fields, …).
        issued_at: When the token was obtained, in UNIX seconds; with
            ``expires_at`` it gives the lifetime that renewal is planned on.

    Tokens compare equal when their access tokens are equal.

    .. versionadded:: 0.1
    """

    __slots__ = (
        "_header",
        "access_token",
        "expires_at",
        "extra",
        "issued_at",
        "refresh_token",
        "scope",
        "token_type",
    )

    access_token: str
    token_type: str
    expires_at: float | None
    refresh_token: str | None
    scope: str | None
    extra: Mapping[str, Any]
    issued_at: float | None
    _header: str

    def __init__(
        self,
        access_token: str,
        token_type: str = "Bearer",  # noqa: S107 - a token type, not a password
        expires_at: float | None = None,
        refresh_token: str | None = None,
        scope: str | None = None,
        extra: Mapping[str, Any] | None = None,
        issued_at: float | None = None,
    ) -> None:
        if token_type.lower() == "bearer":
            token_type = "Bearer"  # noqa: S105 - RFC 6750 §1.1 spelling, not a secret
        set_ = object.__setattr__
        set_(self, "access_token", access_token)
        set_(self, "token_type", token_type)
        set_(self, "expires_at", _time_or_none("expires_at", expires_at))
        set_(self, "refresh_token", refresh_token)
        set_(self, "scope", scope)
        set_(self, "extra", dict(extra) if extra else {})
        set_(self, "issued_at", _time_or_none("issued_at", issued_at))
        set_(self, "_header", f"{token_type} {access_token}")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Token is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Token is immutable; cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Token):
            return NotImplemented
        return self.access_token == other.access_token

    def __hash__(self) -> int:
        return hash(self.access_token)

    def __repr__(self) -> str:
        parts = [f"token_type={self.token_type!r}", f"fingerprint={self.fingerprint!r}"]
        if self.expires_at is not None:
            parts.append(f"expires_in={self.expires_in:.0f}s")
        if self.scope is not None:
            parts.append(f"scope={self.scope!r}")
        if self.refresh_token is not None:
            parts.append("refresh_token=***")
        return f"Token({', '.join(parts)})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return (_token_from_state, (self.to_dict(),))

    # -- derived values ---------------------------------------------------

    @property
    def header_value(self) -> str:
        """The ``Authorization`` header value: ``"<token_type> <access_token>"``."""
        return self._header

    @property
    def fingerprint(self) -> str:
        """A short hash of the access token, to tell tokens apart in logs."""
        return hashlib.sha256(self.access_token.encode()).hexdigest()[:10]

    @property
    def expires_in(self) -> float | None:
        """Seconds left until ``expires_at`` (negative once past), or ``None``."""
        if self.expires_at is None:
            return None
        return self.expires_at - time.time()

    @property
    def expired(self) -> bool:
        """Whether ``expires_at`` has passed (no leeway; ``False`` when unknown)."""
        return self.expires_at is not None and self.expires_at <= time.time()

    @property
    def lifetime(self) -> float | None:
        """``expires_at - issued_at`` when both are known, else ``None``."""
        if self.expires_at is None or self.issued_at is None:
            return None
        return self.expires_at - self.issued_at

    # -- parsing and serialisation ---------------------------------------

    @classmethod
    def from_response(
        cls, body: object, *, now: float | None = None, default_lifetime: float | None = 3600.0
    ) -> Token:
        """Build a token from a decoded RFC 6749 §5.1 response body.

        ``expires_in`` must be a number (or numeric string) from 0 to ten
        years; NaN, infinities, negatives and larger values are refused. A
        JWT ``exp`` that is not in the coming ten years is ignored.

        Args:
            body: The decoded JSON (or form) body.
            now: The time the response arrived (UNIX seconds); default: now.
            default_lifetime: Lifetime assumed when the response has neither
                ``expires_in`` nor a usable JWT ``exp`` claim; ``None`` leaves
                the expiry unknown.

        Raises:
            InvalidTokenResponse: the body is not a usable token response.
        """
        if now is None:
            now = time.time()
        if not isinstance(body, Mapping):
            raise InvalidTokenResponse(
                f"token response is a JSON {_json_kind(body)}, not an object"
            )
        access_token = body.get("access_token")
        if not isinstance(access_token, str) or not _header_safe(access_token):
            what = (
                "is missing"
                if access_token is None
                else "is not a non-empty string of visible ASCII characters"
            )
            raise InvalidTokenResponse(
                f"token response has no usable 'access_token' (it {what}); "
                f"fields present: {_field_names(body)}"
            )
        token_type = body.get("token_type", "Bearer")
        if token_type is None:
            token_type = "Bearer"  # noqa: S105 - servers that send null mean Bearer
        if not isinstance(token_type, str) or not _header_safe(token_type.strip()):
            raise InvalidTokenResponse("token response has an invalid 'token_type'")
        refresh_token = body.get("refresh_token")
        if refresh_token is not None and not isinstance(refresh_token, str):
            raise InvalidTokenResponse("token response has a non-string 'refresh_token'")
        scope = body.get("scope")
        if isinstance(scope, list) and all(isinstance(s, str) for s in scope):
            scope = " ".join(scope)  # some servers return a list despite §3.3
        if scope is not None and not isinstance(scope, str):
            raise InvalidTokenResponse("token response has an invalid 'scope'")

        lifetime = _parse_expires_in(body.get("expires_in"))
        if lifetime is not None:
            expires_at: float | None = now + lifetime
        else:
            expires_at = _jwt_exp(access_token)
            if expires_at is not None and not now < expires_at <= now + _MAX_LIFETIME:
                # An exp already past, or ten years ahead (milliseconds for
                # seconds), is not a plan to renew by: as if there were none.
                expires_at = None
            if expires_at is None and default_lifetime is not None:
                expires_at = now + default_lifetime
        extra = {k: v for k, v in body.items() if k not in _KNOWN}
        return cls(
            access_token,
            token_type.strip(),
            expires_at=expires_at,
            refresh_token=refresh_token,
            scope=scope,
            extra=extra,
            issued_at=now,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_dict` turns back into an equal token.

        It contains the access and refresh tokens: store it only where tokens
        may be kept.
        """
        data: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_at": self.expires_at,
            "issued_at": self.issued_at,
        }
        if self.refresh_token is not None:
            data["refresh_token"] = self.refresh_token
        if self.scope is not None:
            data["scope"] = self.scope
        if self.extra:
            data["extra"] = dict(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: object) -> Token:
        """Rebuild a token from :meth:`to_dict` output.

        Raises:
            InvalidTokenResponse: ``data`` is not what :meth:`to_dict` makes.
        """
        if not isinstance(data, Mapping):
            raise InvalidTokenResponse(f"stored token is a {_json_kind(data)}, not an object")
        access_token = data.get("access_token")
        token_type = data.get("token_type", "Bearer")
        expires_at = data.get("expires_at")
        issued_at = data.get("issued_at")
        refresh_token = data.get("refresh_token")
        scope = data.get("scope")
        extra = data.get("extra") or {}
        if (
            not isinstance(access_token, str)
            or not _header_safe(access_token)
            or not isinstance(token_type, str)
            or not _header_safe(token_type)
            or not _is_time(expires_at)
            or not _is_time(issued_at)
            or not (refresh_token is None or isinstance(refresh_token, str))
            or not (scope is None or isinstance(scope, str))
            or not isinstance(extra, Mapping)
        ):
            raise InvalidTokenResponse(f"stored token is malformed; fields: {_field_names(data)}")
        return cls(
            access_token,
            token_type,
            expires_at=expires_at,
            refresh_token=refresh_token,
            scope=scope,
            extra=extra,
            issued_at=issued_at,
        )


def _token_from_state(data: dict[str, Any]) -> Token:
    return Token.from_dict(data)


def _time_or_none(name: str, value: object) -> float | None:
    """A time given to :class:`Token` as a finite float; ``+inf`` ("never")
    is ``None`` (unknown, which is planned as never), NaN or ``-inf`` are
    refused: planned on, they would make every request fetch a token."""
    if value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]  # checked by float() itself
    except (TypeError, ValueError, OverflowError):
        raise InvalidTokenResponse(f"Token {name} must be UNIX seconds or None") from None
    if number == math.inf:
        return None
    if not math.isfinite(number):
        raise InvalidTokenResponse(f"Token {name} must be a finite number of UNIX seconds")
    return number


def _header_safe(text: str) -> bool:
    """Whether ``text`` can go into an ``Authorization`` header as it is.

    Visible ASCII only (RFC 6750 §2.1 is stricter still): a CR, LF or other
    control character from a broken or hostile server must not reach a
    request header, and a space would split the header value.
    """
    return bool(text) and text.isascii() and text.isprintable() and " " not in text


def _is_time(value: object) -> bool:
    return value is None or _as_finite(value) is not None


def _as_finite(value: object) -> float | None:
    """``value`` as a finite float if it is a JSON number that has one, else ``None``.

    JSON integers are unbounded: ``10**400`` has no float, and ``float()`` or
    ``math.isfinite()`` on it raise ``OverflowError``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _parse_expires_in(value: object) -> float | None:
    """``expires_in`` as seconds; ``None`` when absent (or 0, which some servers
    send for "unknown", as golang/oauth2 treats it)."""
    if value is None:
        return None
    seconds: float
    if isinstance(value, bool):
        raise InvalidTokenResponse("token response has a boolean 'expires_in'")
    if isinstance(value, (int, float)):
        finite = _as_finite(value)
        seconds = math.inf if finite is None else finite  # out of range: rejected below
    elif isinstance(value, str):
        try:
            seconds = float(value.strip())
        except ValueError:
            raise InvalidTokenResponse(
                f"token response has a non-numeric 'expires_in' ({_quote(value)})"
            ) from None
    else:
        raise InvalidTokenResponse(
            f"token response has an 'expires_in' that is a {_json_kind(value)}, not a number"
        )
    if not math.isfinite(seconds) or seconds < 0 or seconds > _MAX_LIFETIME:
        raise InvalidTokenResponse(
            f"token response has an out-of-range 'expires_in' ({_quote(str(value))})"
        )
    return seconds or None


def _jwt_exp(access_token: str) -> float | None:
    """The ``exp`` claim of a JWT access token (not verified: only a hint for
    when to renew), or ``None`` when the token is not a JWT or has none."""
    parts = access_token.split(".")
    if len(parts) != 3 or not parts[1]:
        return None
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (ValueError, binascii.Error, RecursionError):
        return None
    if not isinstance(claims, dict):
        return None
    return _as_finite(claims.get("exp"))


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _field_names(body: Mapping[Any, Any]) -> str:
    names = sorted(str(k)[:40] for k in body)[:20]
    return ", ".join(names) if names else "none"


def _quote(text: str, limit: int = 40) -> str:
    return repr(text[:limit] + ("…" if len(text) > limit else ""))
