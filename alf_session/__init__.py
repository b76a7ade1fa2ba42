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

from ._events import TokenEvent
from .adapter import TokenAdapter
from .auth import BearerAuth
from .client_auth import (
    ClientAuth,
    ClientSecretBasic,
    ClientSecretJwt,
    ClientSecretPost,
    NoClientAuth,
    PrivateKeyJwt,
    SelfSignedTlsClientAuth,
    TlsClientAuth,
)
from .discovery import ServerMetadata, discover
from .errors import (
    ConfigurationError,
    CredentialSourceError,
    DiscoveryError,
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
    JwtBearer,
    OAuth2Provider,
    PasswordCredentials,
    TokenExchange,
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

__version__ = "0.2.0.dev0"

__all__ = [
    "BearerAuth",
    "CallableProvider",
    "ClientAuth",
    "ClientCredentials",
    "ClientSecretBasic",
    "ClientSecretJwt",
    "ClientSecretPost",
    "ConfigurationError",
    "CredentialSourceError",
    "DiscoveryError",
    "EncryptedStorage",
    "FileStorage",
    "InsecureTransportError",
    "InvalidClient",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTokenResponse",
    "JwtBearer",
    "KeyValueStore",
    "MemoryStorage",
    "NoClientAuth",
    "OAuth2Provider",
    "OAuthError",
    "PasswordCredentials",
    "PrivateKeyJwt",
    "RedisStorage",
    "SelfSignedTlsClientAuth",
    "ServerMetadata",
    "TlsClientAuth",
    "Token",
    "TokenAdapter",
    "TokenError",
    "TokenEvent",
    "TokenExchange",
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
    "discover",
    "storage_from_url",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
