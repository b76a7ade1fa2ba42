"""pytest fixtures for testing code that uses alf-session, on loopback.

Loaded automatically once alf-session is installed (a ``pytest11`` entry
point); with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` set, load it with
``-p alf_session.pytest_plugin`` or ``pytest_plugins = ["alf_session.pytest_plugin"]``
in your root ``conftest.py``.

Fixtures (each test gets its own servers, so counts start at zero):

``alf_token_server``
    A running :class:`~alf_session.testing.TokenServer` on 127.0.0.1.
    ``.token_url``, ``.client_id``, ``.client_secret``; ``.count`` (token
    requests so far) and ``.requests`` (each one's form and headers);
    ``.revoke()`` (every token issued so far, or one); ``.fail_next(status,
    body, times=1)`` and ``.failure = (status, body)`` to make the endpoint
    fail; ``.expires_in``, ``.delay`` to change how it answers.
    Options by marker: ``@pytest.mark.alf_token_server(expires_in=2, jwt=True)``.
``alf_token_endpoint``
    The token URL of ``alf_token_server``.
``alf_credentials``
    ``{"token_endpoint", "client_id", "client_secret"}`` for it, so that
    ``TokenSession(**alf_credentials)`` works.
``alf_api_server``
    A running :class:`~alf_session.testing.APIServer` that accepts only the
    valid tokens of ``alf_token_server``: ``.base_url``, ``.calls``,
    ``.unauthorized`` (401s sent) and ``.seen`` (each ``Authorization`` header).
``alf_token_session``
    A :class:`~alf_session.TokenSession` with ``alf_credentials``, closed
    after the test.
``alf_token_manager``
    A :class:`~alf_session.TokenManager` for ``alf_token_server``: share it
    between front doors, or ``await alf_token_manager.aget_token()``.

Async tests (``async def``, run by anyio's plugin, pytest-asyncio or any
other) use the same fixtures: the servers run in threads of their own, and
their counters and knobs (``count``, ``revoke()``, ``fail_next()``) never
block. Build an async client in the test itself, where its event loop runs::

    @pytest.mark.anyio
    async def test_orders(alf_credentials, alf_api_server):
        async with AsyncTokenClient(**alf_credentials) as client:  # alf_session.httpx
            assert (await client.get(alf_api_server.base_url + "/orders")).status_code == 200

.. versionadded:: 0.1
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

# alf_session itself is imported inside the fixtures, not here: pytest loads
# plugins before coverage starts, and an import here would hide the package's
# module-level lines from the coverage of your own test run.
if TYPE_CHECKING:
    from .manager import TokenManager
    from .session import TokenSession
    from .testing import APIServer, TokenServer

__all__ = [
    "alf_api_server",
    "alf_credentials",
    "alf_token_endpoint",
    "alf_token_manager",
    "alf_token_server",
    "alf_token_session",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "alf_token_server(**options): options of the alf_token_server fixture's TokenServer "
        "(client_id, client_secret, expires_in, users, jwt)",
    )


@pytest.fixture
def alf_token_server(request: pytest.FixtureRequest) -> Iterator[TokenServer]:
    """A running token server on 127.0.0.1, for this test only."""
    from .testing import TokenServer

    marker = request.node.get_closest_marker("alf_token_server")
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    with TokenServer(**options) as server:
        yield server


@pytest.fixture
def alf_token_endpoint(alf_token_server: TokenServer) -> str:
    """The token URL of ``alf_token_server``."""
    return alf_token_server.token_url


@pytest.fixture
def alf_credentials(alf_token_server: TokenServer) -> dict[str, str]:
    """Keyword arguments of :class:`~alf_session.TokenSession` for ``alf_token_server``."""
    return {
        "token_endpoint": alf_token_server.token_url,
        "client_id": alf_token_server.client_id,
        "client_secret": alf_token_server.client_secret,
    }


@pytest.fixture
def alf_api_server(alf_token_server: TokenServer) -> Iterator[APIServer]:
    """A running API on 127.0.0.1 that accepts the valid tokens of ``alf_token_server``."""
    from .testing import APIServer

    with APIServer(alf_token_server) as server:
        yield server


@pytest.fixture
def alf_token_session(alf_token_server: TokenServer) -> Iterator[TokenSession]:
    """A :class:`~alf_session.TokenSession` for ``alf_token_server``, closed afterwards."""
    from .session import TokenSession

    server = alf_token_server
    with TokenSession(server.token_url, server.client_id, server.client_secret) as session:
        yield session


@pytest.fixture
def alf_token_manager(alf_token_server: TokenServer) -> TokenManager:
    """A :class:`~alf_session.TokenManager` for ``alf_token_server``.

    .. versionadded:: 0.2
    """
    from .manager import TokenManager
    from .providers import ClientCredentials

    server = alf_token_server
    return TokenManager(ClientCredentials(server.token_url, server.client_id, server.client_secret))
