"""Helpers for the test suites of services that use alf-session.

Two ways to test code that makes authorized requests:

* Against the real thing, on loopback: :class:`TokenServer` is an RFC 6749
  token endpoint and :class:`APIServer` an API that accepts only its valid
  tokens. They are the servers ``alf-session demo`` runs. With pytest, the
  plugin :mod:`alf_session.pytest_plugin` (loaded automatically once
  alf-session is installed) gives them as fixtures::

      def test_orders_client(alf_token_server, alf_api_server):
          client = OrdersClient(alf_token_server.token_url, "demo-client", "demo-secret",
                                base_url=alf_api_server.base_url)
          client.list_orders()
          client.list_orders()
          assert alf_token_server.count == 1          # one token for both calls

          alf_token_server.revoke()                   # the API now answers 401 ...
          client.list_orders()                        # ... and the client recovers
          alf_token_server.fail_next(503, times=10)   # the endpoint is down

* Without any server: :class:`StaticTokenProvider` hands out fixed tokens::

      session = TokenSession(token_manager=TokenManager(StaticTokenProvider("t0k3n")))

The servers run in threads of their own, so async tests use them as they
are: ``await AsyncTokenClient(...).get(api.base_url + "/orders")`` (from
:mod:`alf_session.httpx`), or ``await manager.aget_token()`` with a
:class:`StaticTokenProvider`; their counters and knobs never block a loop.

Nothing here imports pytest; :mod:`alf_session.pytest_plugin` does.

.. versionadded:: 0.1
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._servers import APIServer, TokenRequest, TokenServer
from .token import Token

__all__ = [
    "APIServer",
    "StaticTokenProvider",
    "TokenRequest",
    "TokenServer",
    "local_servers",
]


class StaticTokenProvider:
    """A provider that hands out fixed tokens and never touches the network.

    Each call of :meth:`fetch_token` returns the next of ``access_tokens``;
    the last one is repeated once they are used up. So ``StaticTokenProvider
    ("old", "new")`` lets a test see a 401 to ``"old"`` retried with ``"new"``.

    Args:
        *access_tokens: The tokens to hand out, in order (default:
            ``"test-token"``).
        expires_in: Lifetime of each token in seconds; ``None`` for a token
            whose expiry is unknown (never renewed).
        token_type: The ``token_type`` of the tokens.
        scope: The ``scope`` of the tokens.
        cache_key: A name for the credential, so that the tokens can be
            shared through a storage in tests; default: ``None`` (memory only).

    Attributes:
        calls: How many times :meth:`fetch_token` was called.

    Thread-safe.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        *access_tokens: str,
        expires_in: float | None = 3600.0,
        token_type: str = "Bearer",  # noqa: S107 - a token type, not a password
        scope: str | None = None,
        cache_key: str | None = None,
    ) -> None:
        if not all(isinstance(t, str) and t for t in access_tokens):
            raise TypeError("access tokens must be non-empty strings")
        self.access_tokens: tuple[str, ...] = access_tokens or ("test-token",)
        self.expires_in = expires_in
        self.token_type = token_type
        self.scope = scope
        self.cache_key = cache_key
        self.calls = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StaticTokenProvider({len(self.access_tokens)} token(s), calls={self.calls})"

    def fetch_token(self) -> Token:
        """The next token; the last one again once all were handed out."""
        with self._lock:
            value = self.access_tokens[min(self.calls, len(self.access_tokens) - 1)]
            self.calls += 1
        now = time.time()
        expires_at = None if self.expires_in is None else now + self.expires_in
        return Token(value, self.token_type, expires_at=expires_at, scope=self.scope, issued_at=now)


@contextmanager
def local_servers(**token_server_options: Any) -> Iterator[tuple[TokenServer, APIServer]]:
    """A running :class:`TokenServer` and the :class:`APIServer` it protects.

    Both listen on ``127.0.0.1`` on free ports and are stopped on exit::

        with local_servers(expires_in=60) as (tokens, api):
            session = TokenSession(tokens.token_url, tokens.client_id, tokens.client_secret)
            session.get(api.base_url + "/orders").raise_for_status()

    Args:
        **token_server_options: Passed to :class:`TokenServer` (``client_id``,
            ``client_secret``, ``expires_in``, ``users``, ``jwt``, ``clock``;
            and, to test credentials without shared secrets, ``client_keys``
            for ``private_key_jwt``, ``client_certs`` for mTLS,
            ``trusted_issuers`` for the JWT bearer grant, ``subject_validator``
            for token exchange).

    .. versionadded:: 0.1
    """
    tokens = TokenServer(**token_server_options)
    api = APIServer(tokens)
    tokens.start()
    try:
        api.start()
        try:
            yield tokens, api
        finally:
            api.stop()
    finally:
        tokens.stop()
