"""Hostile inputs against every front door, on real sockets.

Each test runs for every way of wiring the token in (``tests/front_doors.py``)
and asserts on what really arrived at a server: the API and token servers of
``conftest.py``, a :class:`~tests.recording.Recorder` on another loopback
address standing for a stranger's host, or one used as an HTTP proxy, which
sees the host every request was meant for even when it does not resolve.
Every class of hole here was open in alf-session 0.1 for at least one door.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from alf_session import (
    BearerAuth,
    ClientCredentials,
    ConfigurationError,
    InvalidTokenResponse,
    Token,
    TokenAdapter,
    TokenError,
    TokenManager,
    TokenSession,
    _flow,
)
from alf_session._servers import APIServer, TokenServer

from .front_doors import KINDS, Client
from .helpers import CLIENT_ID, CLIENT_SECRET, FakeClock
from .recording import Recorder

Maker = Callable[..., TokenManager]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clients(kind: str) -> Iterator[Callable[..., Client]]:
    """``clients(manager, token_hosts=None)``: a client of this front door, closed at the end."""
    made: list[Client] = []

    def make(manager: TokenManager, **options: Any) -> Client:
        client = Client(kind, manager, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def stranger() -> Iterator[Recorder]:
    """A host that must never see the token: a server on 127.0.0.2."""
    with Recorder("127.0.0.2") as recorder:
        yield recorder


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    """A recording HTTP proxy (and no proxy settings from the environment)."""
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with Recorder("127.0.0.1") as recorder:
        yield recorder


# -- the host check reads the URL as the transport connects ------------------------------------


# Each URL reads as an allowed host to urllib.parse (what 0.1 checked for
# TokenSession) but requests connects to the stranger on 127.0.0.2.
LOOKALIKES = [
    "http://{stranger}\\@127.0.0.1:{api}/x",
    " http://{stranger}\\@127.0.0.1:{api}/x",
    "\thttp://{stranger}\\@127.0.0.1:{api}/x",
    "HTTP://{stranger}\\@127.0.0.1:{api}/x",
    "http://{stranger}\\\\@127.0.0.1:{api}/x",
    "http://{stranger}\\x@127.0.0.1:{api}\\x",
    "http://{stranger}\\%40@127.0.0.1:{api}/x",
    "http://{stranger}\\ @127.0.0.1:{api}/x",
    "http://{stranger}\\@LOCALHOST:{api}/x",
    "http://{stranger}\\@127.0.0.1./x",
    "http://{stranger}\\@[::1]:{api}/x",
]


class TestLookalikeURLs:
    @pytest.mark.parametrize("template", LOOKALIKES)
    def test_the_stranger_gets_no_token(
        self,
        clients: Callable[..., Client],
        make_manager: Maker,
        token_server: TokenServer,
        api_server: APIServer,
        stranger: Recorder,
        template: str,
    ) -> None:
        client = clients(make_manager(), token_hosts=["127.0.0.1", "localhost", "::1"])
        url = template.format(stranger=stranger.netloc, api=api_server.port)
        response = client.get(url)
        assert response.status_code == 200  # the stranger answered: bytes went there
        assert stranger.authorizations == [None]
        assert api_server.calls == 0
        assert token_server.count == 0

    def test_the_allowed_host_still_gets_it(
        self,
        clients: Callable[..., Client],
        make_manager: Maker,
        api_server: APIServer,
        stranger: Recorder,
    ) -> None:
        # The same client, the same allowed hosts: the check is not simply "never".
        manager = make_manager()
        client = clients(manager, token_hosts=["127.0.0.1", "localhost", "::1"])
        assert client.get(f"HTTP://127.0.0.1:{api_server.port}/x").status_code == 200
        assert api_server.seen == [manager.get_token().header_value]

    @pytest.mark.parametrize(
        "url",
        [
            "http://evil.example\\@api.example.com/x",
            " http://evil.example\\@API.EXAMPLE.COM./x",
            "http://evil.example\\\\@api.example.com:80/x",
            "http://api.example.com.evil.example/x",
            "http://api.example.com@evil.example/x",
            "http://api.example.com:80@evil.example/x",
            "http://api.example.com%2f@evil.example/x",
            "http://evil.example#@api.example.com/x",
            "http://evil.example?@api.example.com/x",
            "http://api.example.com:8080/x",
            "http://api.example.community/x",
            "http://xapi.example.com/x",
        ],
    )
    def test_through_a_proxy_no_lookalike_gets_the_token(
        self,
        clients: Callable[..., Client],
        make_manager: Maker,
        token_server: TokenServer,
        proxy: Recorder,
        url: str,
    ) -> None:
        client = clients(make_manager(), token_hosts=["api.example.com:80"])
        client.get(url, proxies={"http": proxy.url})
        assert len(proxy.seen) == 1
        assert proxy.seen[0].target_host != "api.example.com" or ":8080" in url
        # (A URL's own user:password becomes Basic auth, as requests does.)
        assert not (proxy.authorizations[0] or "").startswith("Bearer")
        assert token_server.count == 0

    @pytest.mark.parametrize(
        ("hosts", "url", "gets_token"),
        [
            (["api.example.com"], "http://api.example.com/x", True),
            (["api.example.com"], "HTTP://API.Example.COM/x", True),
            (["api.example.com"], "http://api.example.com./x", True),
            (["API.EXAMPLE.COM."], "http://api.example.com:8080/x", True),
            (["api.example.com:80"], " http://api.example.com/x", True),
            (["bücher.example"], "http://bücher.example/x", True),
            (["bücher.example"], "http://xn--bcher-kva.example/x", True),
            (["BÜCHER.example."], "http://Bücher.example/x", True),
            (["xn--bcher-kva.example"], "http://bücher.example/x", True),
            (["bücher.example"], "http://bucher.example/x", False),
            (["[::1]"], "http://[::1]:8443/x", True),
            (["::1"], "http://[0:0:0:0:0:0:0:1]:8443/x", True),
            (["[::1]:8443"], "http://[::1]:8443/x", True),
            (["[0::1]:8443"], "http://[::1]:8443/x", True),
            (["[::1]:8443"], "http://[::1]:8444/x", False),
            (["[::1]:8443"], "http://[::2]:8443/x", False),
            (["10.0.0.7:80"], "http://10.0.0.7/x", True),
            (["10.0.0.7"], "http://10.0.0.70/x", False),
        ],
    )
    def test_spellings_of_token_hosts(
        self,
        clients: Callable[..., Client],
        make_manager: Maker,
        proxy: Recorder,
        hosts: list[str],
        url: str,
        gets_token: bool,
    ) -> None:
        manager = make_manager()
        client = clients(manager, token_hosts=hosts)
        client.get(url, proxies={"http": proxy.url})
        expected = manager.get_token().header_value if gets_token else None
        assert proxy.authorizations == [expected]

    def test_redirects_to_lookalikes_carry_no_token(
        self,
        clients: Callable[..., Client],
        make_manager: Maker,
        api_server: APIServer,
        stranger: Recorder,
    ) -> None:
        manager = make_manager()
        client = clients(manager)
        hops = [
            f"http://{stranger.netloc}/plain",
            f"http://{stranger.netloc}\\@127.0.0.1:{api_server.port}/x",
            f"http://127.0.0.1:{api_server.port}@{stranger.netloc}/x",
            f"//{stranger.netloc}/scheme-relative",
        ]
        for hop in hops:
            client.get(f"{api_server.base_url}/redirect", params={"to": hop})
        token = manager.get_token().header_value
        # requests percent-encodes the backslash of a Location: that hop goes
        # to the API itself (which is where it keeps the token), all others
        # to the stranger, without it.
        assert stranger.authorizations == [None] * (len(hops) - 1)
        assert api_server.seen == [token, token, token, token, token]


class TestTokenHostsAtConstruction:
    @pytest.mark.parametrize(
        "entry",
        [
            "https://api.example.com/",
            "api.example.com/v1",
            "*.example.com",
            "user@api.example.com",
            "api.example.com:0",
            "api.example.com:65536",
            "api.example.com:https",
            "api.example.com:",
            "api example.com",
            "api.example.com\\",
            "api..example.com",
            "",
            "   ",
            "[::1",
            "[api.example.com]:80",
            "::1::2",
            "bad\u2603idna.example",
            "-api.example.com",
            "a" * 64 + ".example.com",
            "api.example.com\r\nX-Host: y",
            "api.example.com#",
            "api%2eexample.com",
            b"api.example.com",
            None,
        ],
    )
    def test_an_entry_that_can_never_match_is_refused(
        self, kind: str, make_manager: Maker, entry: Any
    ) -> None:
        with pytest.raises(ConfigurationError, match="token_hosts"):
            Client(kind, make_manager(), token_hosts=[entry])

    def test_canonical_form(self, make_manager: Maker) -> None:
        session = TokenSession(
            token_manager=make_manager(),
            token_hosts=[
                "API.Example.COM.",
                "Bücher.example",
                "[0:0:0:0:0:0:0:1]:08443",
                "::FFFF:10.0.0.1",
                "127.1",
                "localhost:80",
            ],
        )
        assert session.token_hosts == {
            "api.example.com",
            "xn--bcher-kva.example",
            "[::1]:8443",
            "::ffff:10.0.0.1",
            "127.0.0.1",
            "localhost:80",
        }
        session.close()


# -- the caller's say -------------------------------------------------------------------------


def raise_for_status(response: requests.Response, **kwargs: Any) -> None:
    response.raise_for_status()


class HookError(Exception):
    pass


def always_raise(response: requests.Response, **kwargs: Any) -> None:
    raise HookError(response)


class TestRaisingHooks:
    @pytest.mark.parametrize("where", ["call", "session"])
    def test_raise_for_status_sees_the_retried_response(
        self,
        clients: Callable[..., Client],
        make_manager: Maker,
        token_server: TokenServer,
        api_server: APIServer,
        where: str,
    ) -> None:
        client = clients(make_manager())
        client.manager.get_token()
        token_server.revoke()
        if where == "session":
            client.session.hooks["response"].append(raise_for_status)
            response = client.get(f"{api_server.base_url}/x")
        else:
            response = client.get(
                f"{api_server.base_url}/x", hooks={"response": [raise_for_status]}
            )
        assert response.status_code == 200
        assert [r.status_code for r in response.history] == [401]
        assert api_server.calls == 2
        assert token_server.count == 2

    def test_a_hook_that_always_raises_leaves_no_refused_token(
        self,
        clients: Callable[..., Client],
        make_manager: Maker,
        token_server: TokenServer,
        api_server: APIServer,
    ) -> None:
        client = clients(make_manager())
        old = client.manager.get_token()
        token_server.revoke()
        with pytest.raises(HookError) as info:
            client.get(f"{api_server.base_url}/x", hooks={"response": [always_raise]})
        seen: requests.Response = info.value.args[0]
        seen.close()  # requests leaves it open when a hook raises
        assert seen.status_code == 200  # it saw the retried response, not the 401
        response = client.get(f"{api_server.base_url}/y")
        assert response.status_code == 200
        assert response.history == []
        assert client.manager.get_token() != old
        assert api_server.unauthorized == 1
        assert token_server.count == 2

    def test_hooks_run_once_per_response(
        self,
        clients: Callable[..., Client],
        make_manager: Maker,
        token_server: TokenServer,
        api_server: APIServer,
    ) -> None:
        seen: list[int] = []
        client = clients(make_manager())
        client.manager.get_token()
        token_server.revoke()
        client.get(
            f"{api_server.base_url}/x",
            hooks={"response": [lambda r, **kw: seen.append(r.status_code)]},
        )
        assert seen == [200]


class TestAuthorizationNone:
    @pytest.mark.parametrize("name", ["Authorization", "authorization", "AUTHORIZATION"])
    def test_none_on_one_call_means_no_token_on_it(
        self,
        make_manager: Maker,
        token_server: TokenServer,
        api_server: APIServer,
        name: str,
    ) -> None:
        # TokenSession only: an auth (BearerAuth) always sets its header, as
        # every requests auth does, and an adapter cannot see what the call
        # said (requests drops None headers before the adapter).
        manager = make_manager()
        with TokenSession(token_manager=manager) as session:
            response = session.get(f"{api_server.base_url}/x", headers={name: None}, timeout=10)
            assert response.status_code == 401
            assert session.get(f"{api_server.base_url}/y", timeout=10).status_code == 200
        assert api_server.seen == [None, manager.get_token().header_value]
        assert response.history == []  # our token was not sent: not ours to retry


# -- what a provider returns ------------------------------------------------------------------

UNSAFE = [
    "tok\r\nX-Injected: 1",
    "tok\nX-Injected: 1",
    "tok\rX-Injected",
    "tok\x00en",
    "tok\x7fen",
    "tok\ten",
    "tok en",
    "tokén",
    "",
]


def _custom_providers(bad: str) -> list[Any]:
    class Vault:
        def fetch_token(self) -> Token:
            return Token(bad, expires_at=None)

    return [
        Vault(),
        lambda: Token(bad),
        lambda: Token("fine-token", token_type=bad or "\r\n"),
    ]


class TestUnsafeTokens:
    @pytest.mark.parametrize("bad", UNSAFE, ids=repr)
    def test_never_reaches_a_header(
        self,
        clients: Callable[..., Client],
        api_server: APIServer,
        clock: FakeClock,
        bad: str,
    ) -> None:
        for provider in _custom_providers(bad):
            client = clients(TokenManager(provider, clock=clock))
            with pytest.raises(TokenError) as info:
                client.get(f"{api_server.base_url}/x")
            assert isinstance(info.value, InvalidTokenResponse)
            message = str(info.value)
            assert "header" in message
            if bad:
                assert bad not in message
            assert "X-Injected" not in message
        assert api_server.calls == 0

    def test_a_non_string_token(self, clients: Callable[..., Client], clock: FakeClock) -> None:
        client = clients(TokenManager(lambda: Token(b"bytes-token"), clock=clock))  # type: ignore[arg-type]
        with pytest.raises(InvalidTokenResponse, match="bytes"):
            client.get("http://127.0.0.1:9/x")


# -- an API that refuses every token ----------------------------------------------------------


class TestRefusedEveryToken:
    def test_costs_one_token_request_per_window_not_per_request(
        self,
        clients: Callable[..., Client],
        api_server: APIServer,
        clock: FakeClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.INFO, logger="alf_session")
        # Tokens from another issuer: the API refuses every one of them.
        with TokenServer(CLIENT_ID, CLIENT_SECRET, clock=clock) as stranger:
            provider = ClientCredentials(stranger.token_url, CLIENT_ID, CLIENT_SECRET)
            manager = TokenManager(provider, clock=clock, failure_ttl=30)
            client = clients(manager)
            for _ in range(30):
                assert client.get(f"{api_server.base_url}/x").status_code == 401
                clock.advance(1)
            # Two requests with a retry each (two refused replacements make a
            # loop), then none: 4 token requests for 30 API requests, not 31.
            assert stranger.count == 4
            assert api_server.calls == 32
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1
            assert "refuse every token" in warnings[0].getMessage()
            clock.advance(31)  # a quiet window: the next 401 is tried once more
            assert client.get(f"{api_server.base_url}/x").status_code == 401
            assert stranger.count == 5
            issued = [t.access_token for t in (manager.get_token(),)]
            for record in caplog.records:
                for secret in [CLIENT_SECRET, *issued]:
                    assert secret not in record.getMessage()

    def test_a_refused_token_is_still_replaced_once(
        self,
        clients: Callable[..., Client],
        make_manager: Maker,
        token_server: TokenServer,
        api_server: APIServer,
        clock: FakeClock,
    ) -> None:
        # The bound does not stop the ordinary case: revoked again and again,
        # within the window, each time one replacement that the API accepts.
        client = clients(make_manager(failure_ttl=60))
        client.manager.get_token()
        for round_ in range(3):
            token_server.revoke()
            response = client.get(f"{api_server.base_url}/x")
            assert response.status_code == 200, round_
            assert client.get(f"{api_server.base_url}/y").status_code == 200
            clock.advance(1)
        assert token_server.count == 4


# -- a change in requests' internals ----------------------------------------------------------


class TestPrivateInternalsFallback:
    def test_probe_refuses_a_reworked_case_insensitive_dict(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        class Reworked(requests.structures.CaseInsensitiveDict):  # type: ignore[type-arg]
            # As a future requests might keep it: no (name, value) pairs in _store.
            def __setitem__(self, key: str, value: Any) -> None:
                self._store[key.lower()] = value

            def __getitem__(self, key: str) -> Any:
                return self._store[key.lower()]

            def __iter__(self) -> Iterator[str]:
                return iter(self._store)

        assert _flow._fast_headers_work() is True
        monkeypatch.setattr(_flow, "CaseInsensitiveDict", Reworked)
        assert _flow._fast_headers_work() is False

    def test_every_door_works_on_the_public_api(
        self,
        clients: Callable[..., Client],
        make_manager: Maker,
        token_server: TokenServer,
        api_server: APIServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(_flow, "FAST_HEADERS", False)
        manager = make_manager()
        client = clients(manager)
        assert client.get(f"{api_server.base_url}/a").status_code == 200
        old = manager.get_token()
        token_server.revoke()
        response = client.get(f"{api_server.base_url}/b")
        assert response.status_code == 200
        assert api_server.seen == [
            old.header_value,
            old.header_value,
            response.request.headers["Authorization"],
        ]
        if client.kind != "auth":  # an auth sets its header whatever the call says
            client.get(f"{api_server.base_url}/c", headers={"Authorization": "Bearer mine"})
            assert api_server.seen[-1] == "Bearer mine"


# -- keyword typos ----------------------------------------------------------------------------


class TestKeywordTypos:
    def test_tokensession_names_itself(self, token_server: TokenServer) -> None:
        with pytest.raises(TypeError, match=r"TokenSession\(\).*'leewy'.*'leeway'"):
            TokenSession(token_server.token_url, CLIENT_ID, CLIENT_SECRET, leewy=5)  # type: ignore[call-arg]

    def test_other_constructors(self, make_manager: Maker) -> None:
        manager = make_manager()
        with pytest.raises(TypeError, match="BearerAuth"):
            BearerAuth(manager, token_host=["x"])  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="TokenAdapter"):
            TokenAdapter(manager, token_host=["x"])  # type: ignore[call-arg]


class TestUpgradeRedirect:
    def test_https_upgrade_keeps_the_token_only_where_token_hosts_allows(
        self, make_manager: Maker
    ) -> None:
        # requests keeps the header on an http -> https redirect to the same
        # host; the token is dropped there when token_hosts names port 80 only.
        manager = make_manager()
        for hosts, kept in ((["api.example"], True), (["api.example:80"], False)):
            with TokenSession(token_manager=manager, token_hosts=hosts) as session:
                first = session.prepare_request(requests.Request("GET", "http://api.example/x"))
                response = requests.Response()
                response.request = first
                response.status_code = 302
                hop = first.copy()
                hop.url = "https://api.example/x"
                session.rebuild_auth(hop, response)
                expected = manager.get_token().header_value if kept else None
                assert hop.headers.get("Authorization") == expected


def test_adapter_pickles_with_its_manager_and_hosts(token_server: TokenServer) -> None:
    import pickle

    manager = TokenManager(ClientCredentials(token_server.token_url, CLIENT_ID, CLIENT_SECRET))
    adapter = TokenAdapter(manager, token_hosts=["Bücher.example"], pool_maxsize=3)
    manager.get_token()  # the cached token travels with it
    again = pickle.loads(pickle.dumps(adapter))  # noqa: S301 - our own data
    assert again.token_hosts == {"xn--bcher-kva.example"}
    assert again.manager.get_token() == adapter.manager.get_token()
    assert again._pool_maxsize == 3
