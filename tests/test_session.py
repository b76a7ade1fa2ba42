"""TokenSession, BearerAuth and TokenAdapter against a real token server and API.

The behaviour all three share (token on the request, one retry on 401, body
replay, no token on a redirect to another host, ~/.netrc never in the way)
runs once per way of wiring the token in: the ``client`` fixture.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from alf_session import (
    BearerAuth,
    ClientCredentials,
    ConfigurationError,
    InvalidClient,
    TokenAdapter,
    TokenError,
    TokenManager,
    TokenSession,
)
from alf_session._servers import APIServer, TokenServer

from .front_doors import KINDS, Client
from .helpers import CLIENT_ID, CLIENT_SECRET, FakeClock, run_threads

Maker = Callable[..., TokenManager]


@pytest.fixture(params=KINDS)
def client(request: pytest.FixtureRequest, make_manager: Maker) -> Iterator[Client]:
    made = Client(request.param, make_manager())
    yield made
    made.session.close()


def other_host(api_server: APIServer, path: str = "/elsewhere") -> str:
    """The same API under another origin: ``localhost`` instead of ``127.0.0.1``."""
    return f"http://localhost:{api_server.port}{path}"


@pytest.fixture
def netrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """``netrc(host)``: a ~/.netrc (via $NETRC) with credentials for ``host``."""

    def write(host: str) -> None:
        path = tmp_path / "netrc"
        path.write_text(f"machine {host} login netrc-user password netrc-pass\n")
        path.chmod(0o600)
        monkeypatch.setenv("NETRC", str(path))

    return write


NETRC_BASIC = "Basic bmV0cmMtdXNlcjpuZXRyYy1wYXNz"  # netrc-user:netrc-pass


# -- shared behaviour -------------------------------------------------------------------


class TestAllClients:
    def test_token_on_the_request(
        self, client: Client, token_server: TokenServer, api_server: APIServer
    ) -> None:
        response = client.get(f"{api_server.base_url}/orders")
        assert response.status_code == 200
        assert response.json()["path"] == "/orders"
        token = client.manager.get_token()
        assert api_server.seen == [f"Bearer {token.access_token}"]
        assert token_server.count == 1

    def test_many_requests_one_token_request(
        self, client: Client, token_server: TokenServer, api_server: APIServer
    ) -> None:
        for i in range(25):
            assert client.get(f"{api_server.base_url}/n/{i}").status_code == 200
        assert token_server.count == 1
        assert api_server.calls == 25
        assert len(set(api_server.seen)) == 1

    def test_32_threads_one_token_request(
        self, client: Client, token_server: TokenServer, api_server: APIServer
    ) -> None:
        token_server.delay = 0.2
        responses = run_threads(32, lambda: client.get(f"{api_server.base_url}/x"))
        assert [r.status_code for r in responses] == [200] * 32
        assert token_server.count == 1
        assert api_server.calls == 32

    def test_one_401_one_retry_one_token_request(
        self, client: Client, token_server: TokenServer, api_server: APIServer
    ) -> None:
        assert client.get(f"{api_server.base_url}/a").status_code == 200
        old = client.manager.get_token()
        token_server.revoke()
        response = client.get(f"{api_server.base_url}/b")
        assert response.status_code == 200
        assert api_server.calls == 3  # /a, the refused /b and its one retry
        assert api_server.unauthorized == 1
        assert token_server.count == 2
        new = client.manager.get_token()
        assert new != old
        assert api_server.seen[1:] == [old.header_value, new.header_value]
        assert [r.status_code for r in response.history] == [401]
        assert client.manager.stats.retries_on_401 == 1

    def test_a_second_401_is_returned_as_it_is(
        self, kind: str, api_server: APIServer, clock: FakeClock
    ) -> None:
        # Tokens from another issuer: the API refuses every one of them.
        with TokenServer(CLIENT_ID, CLIENT_SECRET) as stranger:
            provider = ClientCredentials(stranger.token_url, CLIENT_ID, CLIENT_SECRET)
            client = Client(kind, TokenManager(provider, clock=clock))
            response = client.get(f"{api_server.base_url}/c")
            client.session.close()
            assert response.status_code == 401
            assert response.json()["error"] == "invalid_token"
            assert len(response.history) == 1
            assert api_server.calls == 2
            assert stranger.count == 2

    @pytest.mark.parametrize(
        ("body", "length"),
        [
            (lambda: {"data": b"\x00raw bytes\xff"}, 11),
            (lambda: {"data": "text body"}, len("text body")),
            (lambda: {"data": {"a": "1", "b": "2"}}, len("a=1&b=2")),
            (lambda: {"json": {"k": [1, 2, 3]}}, len(json.dumps({"k": [1, 2, 3]}))),
            (lambda: {"data": io.BytesIO(b"0123456789" * 100)}, 1000),
            (lambda: {"files": {"f": ("f.txt", b"content")}}, None),
        ],
        ids=["bytes", "str", "dict", "json", "seekable", "multipart"],
    )
    def test_401_retry_replays_the_body(
        self,
        client: Client,
        token_server: TokenServer,
        api_server: APIServer,
        body: Callable[[], dict[str, Any]],
        length: int | None,
    ) -> None:
        client.manager.get_token()
        token_server.revoke()
        response = client.post(f"{api_server.base_url}/upload", **body())
        assert response.status_code == 200
        assert [r.status_code for r in response.history] == [401]
        first, retried = response.history[0].request, response.request
        assert first.headers.get("Content-Length") == retried.headers.get("Content-Length")
        if length is not None:
            assert response.json()["body_length"] == length
        else:
            assert response.json()["body_length"] == int(retried.headers["Content-Length"])
        assert api_server.calls == 2
        assert token_server.count == 2

    def test_401_retry_replays_a_file_body(
        self, client: Client, token_server: TokenServer, api_server: APIServer, tmp_path: Path
    ) -> None:
        path = tmp_path / "payload.bin"
        path.write_bytes(b"x" * 5000)
        client.manager.get_token()
        token_server.revoke()
        with path.open("rb") as f:
            f.read(1000)  # a file handed over part-way: replayed from where it was
            response = client.post(f"{api_server.base_url}/upload", data=f)
        assert response.status_code == 200
        assert response.json()["body_length"] == 4000
        assert api_server.calls == 2

    def test_generator_body_is_not_retried(
        self, client: Client, token_server: TokenServer, api_server: APIServer
    ) -> None:
        client.manager.get_token()
        token_server.revoke()

        def chunks() -> Iterator[bytes]:
            yield b"first"
            yield b"second"

        response = client.post(f"{api_server.base_url}/stream", data=chunks())
        assert response.status_code == 401
        assert response.history == []
        assert api_server.calls == 1
        assert token_server.count == 1
        # The refused token was dropped all the same: the next request gets a
        # new one at once instead of another 401.
        following = client.get(f"{api_server.base_url}/next")
        assert following.status_code == 200
        assert following.history == []
        assert api_server.calls == 2
        assert token_server.count == 2

    def test_32_threads_refused_together_make_one_token_request(
        self, client: Client, token_server: TokenServer, api_server: APIServer
    ) -> None:
        old = client.manager.get_token()
        token_server.revoke()
        responses = run_threads(32, lambda: client.get(f"{api_server.base_url}/x"))
        assert [r.status_code for r in responses] == [200] * 32
        assert token_server.count == 2  # the first token and one replacement
        assert api_server.unauthorized == api_server.seen.count(old.header_value)
        assert api_server.calls == 32 + api_server.unauthorized

    def test_cross_host_redirect_carries_no_token(
        self, client: Client, token_server: TokenServer, api_server: APIServer
    ) -> None:
        target = other_host(api_server)
        response = client.get(f"{api_server.base_url}/redirect", params={"to": target})
        token = client.manager.get_token()
        assert api_server.seen == [token.header_value, None]
        assert response.url == target
        assert response.status_code == 401  # the other origin got no token...
        assert api_server.calls == 2  # ...and the chain was not replayed
        assert token_server.count == 1

    def test_same_host_redirect_keeps_the_token(
        self, client: Client, api_server: APIServer
    ) -> None:
        response = client.get(f"{api_server.base_url}/redirect", params={"to": "/landed"})
        assert response.status_code == 200
        assert response.json()["path"] == "/landed"
        token = client.manager.get_token()
        assert api_server.seen == [token.header_value, token.header_value]

    def test_401_after_a_same_host_redirect_is_retried_once(
        self, client: Client, token_server: TokenServer, api_server: APIServer
    ) -> None:
        old = client.manager.get_token()
        token_server.revoke()  # /redirect answers regardless; /landed refuses
        response = client.get(f"{api_server.base_url}/redirect", params={"to": "/landed"})
        new = client.manager.get_token()
        assert response.status_code == 200
        assert response.json()["path"] == "/landed"
        assert new != old
        # the hop that was refused is sent once more, with the new token
        assert api_server.seen == [old.header_value, old.header_value, new.header_value]
        assert api_server.unauthorized == 1
        assert token_server.count == 2
        assert client.manager.stats.retries_on_401 == 1

    def test_401_after_a_cross_host_redirect_is_not_retried(
        self, client: Client, token_server: TokenServer, api_server: APIServer
    ) -> None:
        client.manager.get_token()
        token_server.revoke()
        target = other_host(api_server, "/landed")
        response = client.get(f"{api_server.base_url}/redirect", params={"to": target})
        assert response.status_code == 401  # the other origin got no token of ours
        assert api_server.calls == 2
        assert token_server.count == 1
        assert client.manager.stats.retries_on_401 == 0

    def test_netrc_never_displaces_the_token(
        self, client: Client, api_server: APIServer, netrc: Callable[[str], None]
    ) -> None:
        netrc("127.0.0.1")
        response = client.get(f"{api_server.base_url}/orders")
        assert response.status_code == 200
        assert api_server.seen == [client.manager.get_token().header_value]

    def test_no_token_no_request(
        self, make_manager: Maker, make_provider: Any, api_server: APIServer, kind: str
    ) -> None:
        client = Client(kind, make_manager(make_provider(client_secret="wrong")))
        with pytest.raises(InvalidClient):
            client.get(f"{api_server.base_url}/orders")
        assert api_server.calls == 0
        client.session.close()

    @pytest.fixture(params=KINDS)
    def kind(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)


# -- TokenSession ----------------------------------------------------------------------------


class TestTokenSession:
    def test_credentials_form(
        self, make_session: Callable[..., TokenSession], api_server: APIServer
    ) -> None:
        with make_session(scope=["read", "write"]) as session:
            assert session.get(f"{api_server.base_url}/x").status_code == 200
        assert api_server.tokens.requests[0].form["scope"] == "read write"

    def test_session_headers_are_never_written(
        self, make_session: Callable[..., TokenSession], api_server: APIServer
    ) -> None:
        session = make_session()
        session.get(f"{api_server.base_url}/x")
        assert "Authorization" not in session.headers

    def test_explicit_header_wins_and_fetches_nothing(
        self,
        make_session: Callable[..., TokenSession],
        token_server: TokenServer,
        api_server: APIServer,
    ) -> None:
        session = make_session()
        response = session.get(f"{api_server.base_url}/x", headers={"Authorization": "Bearer mine"})
        assert response.status_code == 401
        assert response.history == []  # not our token: not our 401 to retry
        assert api_server.seen == ["Bearer mine"]
        assert token_server.count == 0

    def test_session_level_header_wins(
        self,
        make_session: Callable[..., TokenSession],
        token_server: TokenServer,
        api_server: APIServer,
    ) -> None:
        session = make_session()
        session.headers["Authorization"] = "Bearer from-session"
        session.get(f"{api_server.base_url}/x")
        assert api_server.seen == ["Bearer from-session"]
        assert token_server.count == 0

    def test_explicit_auth_wins(
        self,
        make_session: Callable[..., TokenSession],
        token_server: TokenServer,
        api_server: APIServer,
    ) -> None:
        session = make_session()
        session.get(f"{api_server.base_url}/x", auth=("user", "pw"))
        assert api_server.seen == ["Basic dXNlcjpwdw=="]
        assert token_server.count == 0

    def test_netrc_does_not_displace_the_token_on_a_same_host_redirect(
        self,
        make_session: Callable[..., TokenSession],
        api_server: APIServer,
        netrc: Callable[[str], None],
    ) -> None:
        netrc("127.0.0.1")
        session = make_session()
        response = session.get(f"{api_server.base_url}/redirect", params={"to": "/landed"})
        token = session.token_manager.get_token()
        assert api_server.seen == [token.header_value, token.header_value]
        assert response.status_code == 200

    def test_netrc_still_serves_hosts_without_a_token(
        self,
        make_session: Callable[..., TokenSession],
        api_server: APIServer,
        netrc: Callable[[str], None],
    ) -> None:
        netrc("localhost")
        session = make_session(token_hosts=["127.0.0.1"])
        session.get(other_host(api_server))
        assert api_server.seen == [NETRC_BASIC]

    def test_cross_host_redirect_with_netrc_for_the_other_host(
        self,
        make_session: Callable[..., TokenSession],
        api_server: APIServer,
        netrc: Callable[[str], None],
    ) -> None:
        netrc("localhost")
        session = make_session()
        session.get(f"{api_server.base_url}/redirect", params={"to": other_host(api_server)})
        token = session.token_manager.get_token()
        assert api_server.seen == [token.header_value, NETRC_BASIC]

    @pytest.mark.parametrize(
        ("hosts", "to_127", "to_localhost"),
        [
            (None, True, True),
            (["127.0.0.1"], True, False),
            ("127.0.0.1", True, False),
            (["LOCALHOST"], False, True),
            (["localhost.", "nothing.example"], False, True),
            (["127.0.0.1:{port}"], True, False),
            (["127.0.0.1:1"], False, False),
            (["localhost:{port}", "127.0.0.1:{port}"], True, True),
        ],
    )
    def test_token_hosts(
        self,
        make_session: Callable[..., TokenSession],
        token_server: TokenServer,
        api_server: APIServer,
        hosts: Any,
        to_127: bool,
        to_localhost: bool,
    ) -> None:
        if isinstance(hosts, list):
            hosts = [h.format(port=api_server.port) for h in hosts]
        session = make_session(token_hosts=hosts)
        session.get(f"{api_server.base_url}/x")
        session.get(other_host(api_server))
        sent = [value is not None for value in api_server.seen]
        assert sent == [to_127, to_localhost]
        assert token_server.count == (1 if (to_127 or to_localhost) else 0)

    def test_bad_token_hosts(self, make_session: Callable[..., TokenSession]) -> None:
        with pytest.raises(ConfigurationError, match="token_hosts"):
            make_session(token_hosts=["https://api.example.com/"])

    def test_drop_in_for_requests_session(
        self, make_session: Callable[..., TokenSession], api_server: APIServer
    ) -> None:
        seen_by_hook: list[int] = []
        with make_session() as session:
            assert isinstance(session, requests.Session)
            session.hooks["response"].append(lambda r, **kw: seen_by_hook.append(r.status_code))
            session.params = {"page": "2"}
            session.headers["X-Trace"] = "t-1"
            session.verify = False
            session.mount(f"{api_server.base_url}/", HTTPAdapter(max_retries=1))
            response = session.put(f"{api_server.base_url}/thing", json={"a": 1})
            assert response.json()["method"] == "PUT"
            assert response.request.headers["X-Trace"] == "t-1"
            assert response.url.endswith("/thing?page=2")
            assert session.delete(f"{api_server.base_url}/thing").status_code == 200
            assert session.patch(f"{api_server.base_url}/thing").status_code == 200
            assert session.head(f"{api_server.base_url}/thing").status_code == 501
        assert seen_by_hook == [200, 200, 200, 501]

    def test_401_retry_with_a_stream(
        self,
        make_session: Callable[..., TokenSession],
        token_server: TokenServer,
        api_server: APIServer,
    ) -> None:
        session = make_session()
        session.token_manager.get_token()
        token_server.revoke()
        response = session.get(f"{api_server.base_url}/x", stream=True)
        assert response.status_code == 200
        assert response.json()["ok"] is True
        assert api_server.calls == 2

    def test_token_manager_or_credentials_not_both(
        self, make_manager: Maker, token_server: TokenServer
    ) -> None:
        manager = make_manager()
        with pytest.raises(ConfigurationError, match="not both"):
            TokenSession(token_server.token_url, token_manager=manager)
        with pytest.raises(ConfigurationError, match="TokenManager"):
            TokenSession(token_manager="nope")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="token_endpoint and client_id"):
            TokenSession()

    @pytest.mark.parametrize(
        "option",
        [
            {"token_timeout": 3},
            {"auth_method": "client_secret_post"},
            {"allow_insecure_http": True},
            {"leeway": 5},
        ],
    )
    def test_options_that_a_token_manager_would_ignore_are_refused(
        self, make_manager: Maker, option: dict[str, Any]
    ) -> None:
        with pytest.raises(ConfigurationError, match=next(iter(option))):
            TokenSession(token_manager=make_manager(), **option)

    def test_pickle_round_trip(self, token_server: TokenServer, api_server: APIServer) -> None:
        # requests.Session pickles (for a spawned worker, say); so does TokenSession.
        session = TokenSession(
            token_server.token_url, CLIENT_ID, CLIENT_SECRET, token_hosts=["127.0.0.1"]
        )
        session.get(f"{api_server.base_url}/x")
        again = pickle.loads(pickle.dumps(session))  # noqa: S301 - our own data
        assert again.token_hosts == session.token_hosts
        assert again.token_manager.get_token() == session.token_manager.get_token()
        assert again.get(f"{api_server.base_url}/y").status_code == 200
        assert token_server.count == 1  # the cached token travelled with it
        again.token_manager.invalidate()
        assert again.get(f"{api_server.base_url}/z").status_code == 200
        assert token_server.count == 2
        again.close()
        session.close()

    def test_manager_options_pass_through(
        self, make_session: Callable[..., TokenSession], clock: FakeClock
    ) -> None:
        session = make_session(leeway=5, failure_ttl=1)
        assert session.token_manager.leeway == 5
        assert session.token_manager.failure_ttl == 1
        with pytest.raises(TypeError):
            make_session(no_such_option=1)

    def test_shared_manager_between_sessions(
        self, make_manager: Maker, token_server: TokenServer, api_server: APIServer
    ) -> None:
        manager = make_manager()
        one, two = TokenSession(token_manager=manager), TokenSession(token_manager=manager)
        one.get(f"{api_server.base_url}/1")
        two.get(f"{api_server.base_url}/2")
        assert token_server.count == 1
        one.close()
        two.close()

    def test_repr_has_no_secret(self, make_session: Callable[..., TokenSession]) -> None:
        assert CLIENT_SECRET not in repr(make_session())


# -- BearerAuth ------------------------------------------------------------------------


class TestBearerAuth:
    def test_auth_on_one_call(
        self, make_manager: Maker, token_server: TokenServer, api_server: APIServer
    ) -> None:
        manager = make_manager()
        response = requests.get(f"{api_server.base_url}/x", auth=BearerAuth(manager), timeout=10)
        assert response.status_code == 200
        assert api_server.seen == [manager.get_token().header_value]

    def test_token_hosts(
        self, make_manager: Maker, token_server: TokenServer, api_server: APIServer
    ) -> None:
        auth = BearerAuth(make_manager(), token_hosts=["127.0.0.1"])
        with requests.Session() as session:
            session.get(other_host(api_server), auth=auth, timeout=10)
        assert api_server.seen == [None]
        assert token_server.count == 0

    def test_equality(self, make_manager: Maker) -> None:
        manager = make_manager()
        assert BearerAuth(manager) == BearerAuth(manager)
        assert hash(BearerAuth(manager)) == hash(BearerAuth(manager))
        assert BearerAuth(manager) != BearerAuth(make_manager())
        assert CLIENT_SECRET not in repr(BearerAuth(manager))


# -- TokenAdapter ----------------------------------------------------------------------


class TestTokenAdapter:
    def test_explicit_header_wins(
        self, make_manager: Maker, token_server: TokenServer, api_server: APIServer
    ) -> None:
        with requests.Session() as session:
            session.mount("http://", TokenAdapter(make_manager()))
            session.get(
                f"{api_server.base_url}/x", headers={"Authorization": "Bearer mine"}, timeout=10
            )
        assert api_server.seen == ["Bearer mine"]
        assert token_server.count == 0

    def test_mounted_on_a_prefix_only(
        self, make_manager: Maker, token_server: TokenServer, api_server: APIServer
    ) -> None:
        with requests.Session() as session:
            session.mount(f"{api_server.base_url}/api/", TokenAdapter(make_manager()))
            session.get(f"{api_server.base_url}/api/x", timeout=10)
            session.get(f"{api_server.base_url}/public", timeout=10)
        assert [v is not None for v in api_server.seen] == [True, False]

    def test_token_hosts(
        self, make_manager: Maker, token_server: TokenServer, api_server: APIServer
    ) -> None:
        with requests.Session() as session:
            session.mount("http://", TokenAdapter(make_manager(), token_hosts="127.0.0.1"))
            session.get(other_host(api_server), timeout=10)
            session.get(f"{api_server.base_url}/x", timeout=10)
        assert [v is not None for v in api_server.seen] == [False, True]

    def test_netrc_does_not_displace_the_token_on_a_same_host_redirect(
        self, make_manager: Maker, api_server: APIServer, netrc: Callable[[str], None]
    ) -> None:
        netrc("127.0.0.1")
        manager = make_manager()
        with requests.Session() as session:
            session.mount("http://", TokenAdapter(manager))
            response = session.get(
                f"{api_server.base_url}/redirect", params={"to": "/landed"}, timeout=10
            )
        assert response.status_code == 200
        assert api_server.seen == [manager.get_token().header_value] * 2

    def test_netrc_of_another_host_gets_its_own_credentials_not_the_token(
        self, make_manager: Maker, api_server: APIServer, netrc: Callable[[str], None]
    ) -> None:
        netrc("localhost")
        manager = make_manager()
        with requests.Session() as session:
            session.mount("http://", TokenAdapter(manager))
            session.get(
                f"{api_server.base_url}/redirect", params={"to": other_host(api_server)}, timeout=10
            )
        assert api_server.seen == [manager.get_token().header_value, NETRC_BASIC]

    def test_httpadapter_options(self, make_manager: Maker) -> None:
        adapter = TokenAdapter(make_manager(), pool_maxsize=3, max_retries=2)
        assert adapter.max_retries.total == 2
        assert adapter._pool_maxsize == 3

    def test_token_error_raised_before_sending(
        self, make_manager: Maker, make_provider: Any, api_server: APIServer
    ) -> None:
        with requests.Session() as session:
            session.mount("http://", TokenAdapter(make_manager(make_provider(client_secret="x"))))
            with pytest.raises(TokenError):
                session.get(f"{api_server.base_url}/x", timeout=10)
        assert api_server.calls == 0
