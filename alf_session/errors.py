"""Exceptions raised by alf-session.

Every failure to obtain a token is a :class:`TokenError`; nothing else escapes
from the token machinery (no bare ``KeyError``, ``ValueError`` or
``JSONDecodeError``)::

    TokenError                      base; .response when there was one
    ├── ConfigurationError          bad arguments (also a ValueError)
    │   └── InsecureTransportError  token endpoint neither https:// nor loopback http://
    ├── TokenRequestError           the token endpoint could not be reached (connect, timeout)
    │   └── TokenRequestTimeout     ... or did not finish answering within token_timeout
    ├── TokenHTTPError              the token endpoint answered with a non-OAuth HTTP error
    ├── InvalidTokenResponse        a 2xx answer that is not a usable token
    ├── TokenTimeout                waited too long: for another fetch, or (TokenRequestTimeout)
    │                               for the token endpoint
    ├── CredentialSourceError       a ready-made assertion or subject token could not be read
    ├── DiscoveryError              the issuer's metadata could not be fetched or is wrong
    └── OAuthError                  RFC 6749 §5.2 error: .error, .error_description, .error_uri
        ├── InvalidRequest
        ├── InvalidClient
        ├── InvalidGrant
        ├── UnauthorizedClient
        ├── UnsupportedGrantType
        └── InvalidScope

Every one of them is also a :class:`requests.RequestException` (an
``OSError``), so code that catches the latter around ``session.get`` keeps
working; ``.response`` (and requests' ``.request``) keep their meaning.

Messages say what went wrong and what to do about it. They never contain a
client secret, password, access token or refresh token: response bodies are
quoted only in part, with any secret the provider knows replaced by ``***``
(in its raw, form-encoded, percent-encoded and HTTP Basic spellings). The
token request reachable from an error (``exc.request``,
``exc.response.request`` and those of the chained requests exceptions) has
its ``Authorization`` header and its secret form fields replaced by ``***``.
"""

from __future__ import annotations

import copy

import requests

__all__ = [
    "ConfigurationError",
    "CredentialSourceError",
    "DiscoveryError",
    "InsecureTransportError",
    "InvalidClient",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTokenResponse",
    "OAuthError",
    "TokenError",
    "TokenHTTPError",
    "TokenRequestError",
    "TokenRequestTimeout",
    "TokenTimeout",
    "UnauthorizedClient",
    "UnsupportedGrantType",
]


class TokenError(requests.RequestException):
    """A token could not be obtained.

    Attributes:
        response: The token endpoint's :class:`requests.Response`, when there
            was one (its ``request`` has the credentials replaced by ``***``).
        request: The token request (credentials replaced by ``***``), when
            there was a response, as in :class:`requests.RequestException`.
        remembered_until: Set on a failure that a
            :class:`~alf_session.TokenManager` raises again from memory
            without a new token request: until when (UNIX seconds, the
            manager's clock) it does so. ``None`` on a fresh failure.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       Also a :class:`requests.RequestException`; ``remembered_until``.
    """

    remembered_until: float | None = None

    def __init__(self, message: str = "", *, response: requests.Response | None = None) -> None:
        super().__init__(message, response=response)

    def __str__(self) -> str:
        # OSError's own __str__ would show "[Errno …]" forms for two-argument
        # errors; ours always carry one message.
        return str(self.args[0]) if self.args else ""

    def _clone(self, message: str | None = None) -> TokenError:
        """A fresh copy to raise again, without this one's traceback.

        Failures are shared by every thread waiting for the same fetch; raising
        one instance from many threads would keep growing its traceback.
        ``message`` replaces the copy's message.
        """
        clone = copy.copy(self)
        if message is not None:
            clone.args = (message,)
        clone.__traceback__ = None
        clone.__cause__ = self.__cause__
        return clone


class ConfigurationError(TokenError, ValueError):
    """An argument is missing or wrong; the message says which and how to fix it."""


class InsecureTransportError(ConfigurationError):
    """The token endpoint is neither ``https://`` nor ``http://`` on a loopback host.

    Client secrets would cross the network in clear text. Use https, or pass
    ``allow_insecure_http=True`` to the provider if you really mean it.
    """


class TokenRequestError(TokenError):
    """The token endpoint could not be reached or did not answer in time."""


class TokenTimeout(TokenError):
    """Waited too long for a token.

    Raised as such when another thread's or process's fetch took longer than
    the manager's ``max_wait``; see :class:`TokenRequestTimeout` for the
    token endpoint itself.
    """


class TokenRequestTimeout(TokenRequestError, TokenTimeout, requests.Timeout):
    """The token endpoint did not finish its answer within ``token_timeout``.

    The whole token request (connecting, sending, the status line, headers
    and body, and any retries with their pauses) is bounded: a server that
    trickles its answer a byte at a time is cut off, and the connection closed.
    Also a :class:`requests.Timeout`.

    .. versionadded:: 0.2
    """


class TokenHTTPError(TokenError):
    """The token endpoint answered with an HTTP error that is not an OAuth error."""

    @property
    def status_code(self) -> int | None:
        """The HTTP status of the response, if there was one."""
        return None if self.response is None else self.response.status_code


class InvalidTokenResponse(TokenError):
    """The token endpoint answered 2xx with something that is not a usable token."""


class CredentialSourceError(TokenError):
    """A ready-made credential could not be read: an assertion or subject token
    file is missing, empty, too large or not a file, or its callable failed.

    .. versionadded:: 0.2
    """


class DiscoveryError(TokenError):
    """The issuer's metadata (OpenID Connect discovery or RFC 8414) could not
    be fetched, or it is not acceptable: another ``issuer``, no
    ``token_endpoint``, or an endpoint that breaks the transport rule.

    .. versionadded:: 0.2
    """


class OAuthError(TokenError):
    """The token endpoint returned an RFC 6749 §5.2 error response.

    Attributes:
        error: The ``error`` code, e.g. ``"invalid_client"``.
        error_description: The server's human-readable text, if any.
        error_uri: A link to the server's documentation of the error, if any.
    """

    #: What the user should check; shown at the end of the message.
    hint = ""

    def __init__(
        self,
        message: str = "",
        *,
        error: str = "",
        error_description: str | None = None,
        error_uri: str | None = None,
        response: requests.Response | None = None,
    ) -> None:
        super().__init__(message, response=response)
        self.error = error
        self.error_description = error_description
        self.error_uri = error_uri


class InvalidRequest(OAuthError):
    """``invalid_request``: the token request is malformed."""

    hint = "Check the grant's parameters (scope, audience, extra_params)."


class InvalidClient(OAuthError):
    """``invalid_client``: client authentication failed."""

    hint = (
        "Check client_id, the credential (client_secret, private_key, client_assertion "
        "or cert) and auth_method."
    )


class InvalidGrant(OAuthError):
    """``invalid_grant``: the grant (password, refresh token, …) was refused."""

    hint = "Check the username and password, or the refresh token."


class UnauthorizedClient(OAuthError):
    """``unauthorized_client``: the client may not use this grant type."""

    hint = "Allow this grant type for the client at the identity provider."


class UnsupportedGrantType(OAuthError):
    """``unsupported_grant_type``: the server does not support this grant type."""

    hint = "Use a grant type the identity provider supports."


class InvalidScope(OAuthError):
    """``invalid_scope``: the requested scope is invalid, unknown or too wide."""

    hint = "Check the scope (and audience) the client asks for."


#: RFC 6749 §5.2 error codes and the exception each one raises.
OAUTH_ERRORS: dict[str, type[OAuthError]] = {
    "invalid_request": InvalidRequest,
    "invalid_client": InvalidClient,
    "invalid_grant": InvalidGrant,
    "unauthorized_client": UnauthorizedClient,
    "unsupported_grant_type": UnsupportedGrantType,
    "invalid_scope": InvalidScope,
}
