"""Shared fixtures: real loopback servers and a clock the test moves by hand.

``token_server``  a started :class:`~alf_session._servers.TokenServer` on the ``clock``
``api_server``    a started :class:`~alf_session._servers.APIServer` trusting it
``clock``         a :class:`FakeClock`, UNIX seconds, frozen until ``advance()``
``make_provider`` / ``make_manager`` / ``make_session``
                  build the library's objects against ``token_server`` on ``clock``
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from alf_session import ClientCredentials, TokenManager, TokenSession
from alf_session._servers import APIServer, TokenServer

from .helpers import CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME, FakeClock

with warnings.catch_warnings():
    # Hypothesis reports a failing example through libcst where it is
    # installed, and libcst's import warns (mypy_extensions.TypedDict): under
    # filterwarnings=error that turned a test failure into an INTERNALERROR.
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import libcst  # noqa: F401
    except ImportError:
        pass


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def token_server(clock: FakeClock) -> Iterator[TokenServer]:
    with TokenServer(CLIENT_ID, CLIENT_SECRET, users={USERNAME: PASSWORD}, clock=clock) as server:
        yield server


@pytest.fixture
def api_server(token_server: TokenServer) -> Iterator[APIServer]:
    with APIServer(token_server) as server:
        yield server


@pytest.fixture
def make_provider(token_server: TokenServer) -> Callable[..., ClientCredentials]:
    """``make_provider(**options)``: ClientCredentials for ``token_server``."""

    def make(**options: Any) -> ClientCredentials:
        options.setdefault("client_secret", CLIENT_SECRET)
        secret = options.pop("client_secret")
        return ClientCredentials(token_server.token_url, CLIENT_ID, secret, **options)

    return make


@pytest.fixture
def make_manager(
    make_provider: Callable[..., ClientCredentials], clock: FakeClock
) -> Callable[..., TokenManager]:
    """``make_manager(provider=None, storage=None, **manager_options)`` on ``clock``."""

    def make(provider: Any = None, storage: Any = None, **options: Any) -> TokenManager:
        options.setdefault("clock", clock)
        return TokenManager(provider or make_provider(), storage, **options)

    return make


@pytest.fixture
def make_session(
    token_server: TokenServer, clock: FakeClock
) -> Iterator[Callable[..., TokenSession]]:
    """``make_session(**options)``: a TokenSession for ``token_server`` on ``clock``,
    closed at the end of the test."""
    sessions: list[TokenSession] = []

    def make(**options: Any) -> TokenSession:
        if "token_manager" not in options:
            options.setdefault("token_endpoint", token_server.token_url)
            options.setdefault("client_id", CLIENT_ID)
            options.setdefault("client_secret", CLIENT_SECRET)
            options.setdefault("clock", clock)
        session = TokenSession(**options)
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.close()
