"""alf-session: a ``requests.Session`` that carries its own OAuth 2.0 bearer token.

It fetches the token, caches it in the process and in a store shared by every
process and host, renews it before it expires without making requests wait,
and retries a request once when the API answers 401::

    from alf_session import TokenSession

    session = TokenSession("https://idp.example/oauth/token", "my-client", "s3cret",
                           scope="orders:read")
    session.get("https://api.example/orders")
"""

from __future__ import annotations

import logging

from .adapter import TokenAdapter
from .auth import BearerAuth
from .errors import (
    ConfigurationError,
    InsecureTransportError,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTokenResponse,
    OAuthError,
    TokenError,
    TokenHTTPError,
    TokenRequestError,
    TokenRequestTimeout,
    TokenTimeout,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from .manager import TokenManager, TokenStats
from .providers import (
    CallableProvider,
    ClientCredentials,
    OAuth2Provider,
    PasswordCredentials,
    TokenProvider,
    default_retry,
)
from .session import TokenSession
from .storage import (
    EncryptedStorage,
    FileStorage,
    KeyValueStore,
    MemoryStorage,
    RedisStorage,
    TokenStorage,
    as_storage,
    storage_from_url,
)
from .token import Token

__version__ = "0.1.0"

__all__ = [
    "BearerAuth",
    "CallableProvider",
    "ClientCredentials",
    "ConfigurationError",
    "EncryptedStorage",
    "FileStorage",
    "InsecureTransportError",
    "InvalidClient",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTokenResponse",
    "KeyValueStore",
    "MemoryStorage",
    "OAuth2Provider",
    "OAuthError",
    "PasswordCredentials",
    "RedisStorage",
    "Token",
    "TokenAdapter",
    "TokenError",
    "TokenHTTPError",
    "TokenManager",
    "TokenProvider",
    "TokenRequestError",
    "TokenRequestTimeout",
    "TokenSession",
    "TokenStats",
    "TokenStorage",
    "TokenTimeout",
    "UnauthorizedClient",
    "UnsupportedGrantType",
    "as_storage",
    "default_retry",
    "storage_from_url",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
