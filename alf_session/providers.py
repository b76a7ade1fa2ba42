"""Providers: how a token is obtained.

A provider is any object with a ``fetch_token() -> Token`` method (see
:class:`TokenProvider`); a plain callable is wrapped by
:class:`CallableProvider`. A provider that can also renew a token with its
refresh token has ``refresh(token) -> Token``.

The ready-made providers speak OAuth 2.0 to a token endpoint. They are built
from three pieces, each in its own module, and all importable from here and
from :mod:`alf_session`:

* the grants, which only build a form (:mod:`alf_session.grants`):
  :class:`ClientCredentials` (RFC 6749 §4.4), :class:`PasswordCredentials`
  (§4.3), :class:`JwtBearer` (RFC 7523 §2.1), :class:`TokenExchange` (RFC 8693);
  all of them use a returned ``refresh_token`` (§6) when renewing;
* the client authentication methods (:mod:`alf_session.client_auth`), one
  object per RFC 8414 name;
* the wire (:mod:`alf_session._wire`, over :mod:`alf_session._transport`):
  the transport rule, the retried and time-bounded request, the judged
  answer; and their common base,
  :class:`OAuth2Provider` (endpoint or issuer, method, storage key).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from ._oauth2 import OAuth2Provider
from ._transport import Timeout, check_endpoint, default_retry
from ._wire import Scope, _root_cause, normalize_scope
from .errors import ConfigurationError, InvalidTokenResponse, TokenError
from .grants import ClientCredentials, JwtBearer, PasswordCredentials, TokenExchange
from .token import Token

__all__ = [
    "CallableProvider",
    "ClientCredentials",
    "JwtBearer",
    "OAuth2Provider",
    "PasswordCredentials",
    "Scope",
    "Timeout",
    "TokenExchange",
    "TokenProvider",
    "as_provider",
    "check_endpoint",
    "default_retry",
    "normalize_scope",
]

# Imported by other modules of the package from here, as before the split.
_ = _root_cause


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


def _wrap_error(exc: Exception, provider: object) -> TokenError:
    """A provider's unexpected exception as a TokenError (message: type only,
    since a custom provider's own message may contain anything)."""
    return TokenError(f"{provider!r} failed with {type(exc).__name__}; see the chained exception")
