"""httpx (sync and async) and aiohttp front doors, against the real loopback servers.

Every test runs for each door through one uniform async call (:class:`Door`):
``httpx`` (:class:`TokenClient`, called from a worker thread), ``httpx-async``
(:class:`AsyncTokenClient`) and ``aiohttp`` (:class:`TokenMiddleware` on a
``ClientSession``). The rules are the request flow's (``tests/test_flow.py``
checks them without a network); these tests check that each driver applies
them on the wire: the header, the one retry on 401 with exact counts,
``token_hosts``, redirects, body replay and typed errors.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import httpx
import pytest

from alf_session import (
    ClientCredentials,
    ConfigurationError,
    InvalidClient,
    TokenError,
    TokenManager,
    TokenSession,
)
from alf_session._servers import APIServer, TokenServer
from alf_session.aiohttp import TokenMiddleware
from alf_session.httpx import AsyncTokenClient, TokenAuth, TokenClient

from .helpers import CLIENT_ID, CLIENT_SECRET, FakeClock, run_threads

pytestmark = pytest.mark.anyio

DOORS = ["httpx", "httpx-async", "aiohttp"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio only; trio is tested apart below


@dataclass
class Answer:
    """What a door's call returned, the same for every library."""

    status: int
    history: list[int] = field(default_factory=list)
    body: Any = None


class Door:
    """One front door on ``manager``, with a uniform ``await door.request(...)``."""

    def __init__(
        self, kind: str, manager: TokenManager, token_hosts: Any = None, **options: Any
    ) -> None:
        self.kind = kind
        self.manager = manager
        self.token_hosts = token_hosts
        self.options = options
        self._client: Any = None

    async def __aenter__(self) -> Door:
        if self.kind == "httpx":
            self._client = TokenClient(
                token_manager=self.manager, token_hosts=self.token_hosts, **self.options
            )
        elif self.kind == "httpx-async":
            self._client = AsyncTokenClient(
                token_manager=self.manager, token_hosts=self.token_hosts, **self.options
            )
        else:
            middleware = TokenMiddleware(self.manager, token_hosts=self.token_hosts)
            self._client = aiohttp.ClientSession(middlewares=(middleware,), **self.options)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.kind == "httpx":
            self._client.close()
        elif self.kind == "httpx-async":
            await self._client.aclose()
        else:
            await self._client.close()

    async def request(self, method: str, url: str, **kwargs: Any) -> Answer:
        if self.kind == "aiohttp":
            if "content" in kwargs:
                kwargs["data"] = kwargs.pop("content")
            if "follow_redirects" in kwargs:
                kwargs["allow_redirects"] = kwargs.pop("follow_redirects")
            async with self._client.request(method, url, **kwargs) as response:
                body = await response.json() if response.status == 200 else None
                return Answer(response.status, [r.status for r in response.history], body)
        kwargs.setdefault("follow_redirects", True)
        if self.kind == "httpx":
            client = self._client
            response = await anyio.to_thread.run_sync(lambda: client.request(method, url, **kwargs))
        else:
            response = await self._client.request(method, url, **kwargs)
        body = response.json() if response.status_code == 200 else None
        return Answer(response.status_code, [r.status_code for r in response.history], body)

    async def get(self, url: str, **kwargs: Any) -> Answer:
        return await self.request("GET", url, **kwargs)


@pytest.fixture(params=DOORS)
def door_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_door(door_kind: str, make_manager: Callable[..., TokenManager]) -> Callable[..., Door]:
    """``make_door(manager=None, token_hosts=None, **client_options)``."""

    def make(manager: TokenManager | None = None, token_hosts: Any = None, **options: Any) -> Door:
        return Door(door_kind, manager or make_manager(), token_hosts, **options)

    return make


@pytest.fixture
def other_api(token_server: TokenServer) -> Iterator[APIServer]:
    """A second API on another port: another origin."""
    with APIServer(token_server) as server:
        yield server


def _host(server: APIServer) -> str:
    return f"127.0.0.1:{server.port}"


# -- the header ------------------------------------------------------------------


async def test_header_on_every_request_one_token(
    make_door: Callable[..., Door], token_server: TokenServer, api_server: APIServer
) -> None:
    async with make_door() as door:
        for path in ("/a", "/b", "/c"):
            answer = await door.get(api_server.base_url + path)
            assert answer.status == 200 and answer.body["path"] == path
    assert token_server.count == 1
    assert len(set(api_server.seen)) == 1
    assert api_server.seen[0] is not None and api_server.seen[0].startswith("Bearer at-")


async def test_a_header_the_caller_set_wins_and_is_never_retried(
    make_door: Callable[..., Door], token_server: TokenServer, api_server: APIServer
) -> None:
    async with make_door() as door:
        answer = await door.get(
            api_server.base_url + "/x", headers={"Authorization": "Bearer callers-own"}
        )
    assert answer.status == 401 and answer.history == []
    assert api_server.seen == ["Bearer callers-own"]
    assert token_server.count == 0


# -- 401 ----------------------------------------------------------------------------


async def test_401_retried_once_with_a_new_token(
    make_door: Callable[..., Door], token_server: TokenServer, api_server: APIServer
) -> None:
    async with make_door() as door:
        assert (await door.get(api_server.base_url + "/a")).status == 200
        token_server.revoke()
        calls, fetched = api_server.calls, token_server.count
        answer = await door.get(api_server.base_url + "/b")
        assert answer.status == 200
        assert (api_server.calls - calls, token_server.count - fetched) == (2, 1)
        assert api_server.seen[-2] != api_server.seen[-1]
        if door.kind != "aiohttp":  # aiohttp's history holds redirects only
            assert answer.history == [401]
        # The new token is cached: the next call is one API call, no token request.
        assert (await door.get(api_server.base_url + "/c")).status == 200
        assert (api_server.calls - calls, token_server.count - fetched) == (3, 1)
    assert door.manager.stats.retries_on_401 == 1


async def test_an_api_that_refuses_every_token_costs_what_it_costs_token_session(
    make_door: Callable[..., Door],
    make_manager: Callable[..., TokenManager],
    token_server: TokenServer,
    api_server: APIServer,
) -> None:
    """The 401 loop bound is the flow's: each door counts as ``TokenSession`` does."""

    def refuse_all(token: str, cert: str | None = None) -> str:
        return "audience mismatch"

    async def run(call: Callable[[str], Any]) -> list[tuple[int, int, int]]:
        await call(api_server.base_url + "/warm")
        original = token_server.check
        token_server.check = refuse_all  # type: ignore[method-assign]
        steps = []
        try:
            for _ in range(5):
                calls, fetched = api_server.calls, token_server.count
                status = await call(api_server.base_url + "/x")
                steps.append((status, api_server.calls - calls, token_server.count - fetched))
        finally:
            token_server.check = original  # type: ignore[method-assign]
        return steps

    session = TokenSession(token_manager=make_manager())
    try:
        expected = await run(
            lambda url: anyio.to_thread.run_sync(lambda: session.get(url, timeout=10).status_code)
        )
    finally:
        session.close()
    async with make_door() as door:

        async def status_of(url: str) -> int:
            return (await door.get(url)).status

        steps = await run(status_of)
    assert steps == expected
    assert all(step[:2] == (401, 2) for step in steps[:1])  # the first one is retried
    assert steps[-1][2] == 0  # and the bound holds: no token request per request


async def test_many_tasks_refused_at_once_make_one_token_request(
    make_door: Callable[..., Door], token_server: TokenServer, api_server: APIServer
) -> None:
    async with make_door() as door:
        await door.get(api_server.base_url + "/warm")
        token_server.revoke()
        answers: list[Answer] = []

        async def one() -> None:
            answers.append(await door.get(api_server.base_url + "/x"))

        async with anyio.create_task_group() as tasks:
            for _ in range(30):
                tasks.start_soon(one)
    assert [a.status for a in answers] == [200] * 30
    assert token_server.count == 2
    assert door.manager.stats.retries_on_401 == api_server.unauthorized


# -- bodies ---------------------------------------------------------------------------


async def test_a_bytes_body_is_sent_again(
    make_door: Callable[..., Door], token_server: TokenServer, api_server: APIServer
) -> None:
    async with make_door() as door:
        await door.get(api_server.base_url + "/a")
        token_server.revoke()
        answer = await door.request("POST", api_server.base_url + "/up", content=b"x" * 1000)
    assert answer.status == 200 and answer.body["body_length"] == 1000
    assert api_server.unauthorized == 1


async def test_a_streamed_body_is_not_sent_again_but_the_token_is_dropped(
    make_door: Callable[..., Door], token_server: TokenServer, api_server: APIServer
) -> None:
    async with make_door() as door:
        await door.get(api_server.base_url + "/a")
        token_server.revoke()
        calls = api_server.calls
        if door.kind == "httpx":

            def chunks() -> Iterator[bytes]:
                yield b"part1"
                yield b"part2"

            body: Any = chunks()
        else:

            async def achunks() -> AsyncIterator[bytes]:
                yield b"part1"
                yield b"part2"

            body = achunks()
        answer = await door.request("POST", api_server.base_url + "/up", content=body)
        assert answer.status == 401
        assert api_server.calls - calls == 1
        # The refused token was dropped: the next request has a new one at once.
        answer = await door.get(api_server.base_url + "/b")
        assert answer.status == 200 and api_server.calls - calls == 2
    assert token_server.count == 2


# -- where the token goes --------------------------------------------------------------


async def test_token_hosts_keeps_the_token_from_other_hosts(
    make_door: Callable[..., Door],
    token_server: TokenServer,
    api_server: APIServer,
    other_api: APIServer,
) -> None:
    async with make_door(token_hosts=[_host(api_server)]) as door:
        assert (await door.get(other_api.base_url + "/x")).status == 401
        assert other_api.seen == [None]
        assert token_server.count == 0  # not even fetched
        assert (await door.get(api_server.base_url + "/x")).status == 200
    assert token_server.count == 1


async def test_a_lookalike_host_is_not_an_allowed_host(
    make_door: Callable[..., Door], token_server: TokenServer, api_server: APIServer
) -> None:
    async with make_door(token_hosts=[_host(api_server)]) as door:
        # "localhost" is the same machine, but not the host name allowed.
        url = api_server.base_url.replace("127.0.0.1", "localhost") + "/x"
        assert (await door.get(url)).status == 401
    assert api_server.seen == [None] and token_server.count == 0


async def test_a_same_origin_redirect_keeps_the_token(
    make_door: Callable[..., Door], api_server: APIServer
) -> None:
    async with make_door() as door:
        answer = await door.get(api_server.base_url + "/redirect?to=/orders")
    assert answer.status == 200 and answer.history == [302]
    assert api_server.seen[0] is not None and api_server.seen[0] == api_server.seen[1]


async def test_no_token_across_a_change_of_origin(
    make_door: Callable[..., Door], api_server: APIServer, other_api: APIServer
) -> None:
    """Even when the other origin is an allowed host: a hop never gets the token."""
    hosts = [_host(api_server), _host(other_api)]
    async with make_door(token_hosts=hosts) as door:
        answer = await door.get(
            api_server.base_url + "/redirect?to=" + other_api.base_url + "/elsewhere"
        )
        assert answer.status == 401 and answer.history == [302]
        assert other_api.seen == [None]
        # ... and a later request of the same task to that origin gets it.
        assert (await door.get(other_api.base_url + "/direct")).status == 200
    assert other_api.seen[-1] == api_server.seen[0]


async def test_an_unfollowed_redirect_does_not_cost_the_next_request_its_token(
    make_door: Callable[..., Door], api_server: APIServer, other_api: APIServer
) -> None:
    async with make_door() as door:
        answer = await door.get(
            api_server.base_url + "/redirect?to=" + other_api.base_url + "/x",
            follow_redirects=False,
        )
        assert answer.status == 302
        # The caller follows it by hand: a request of its own, with the token.
        assert (await door.get(other_api.base_url + "/x")).status == 200


# -- errors -----------------------------------------------------------------------------


async def test_bad_credentials_raise_a_typed_error_and_send_nothing(
    door_kind: str,
    make_manager: Callable[..., TokenManager],
    make_provider: Callable[..., ClientCredentials],
    api_server: APIServer,
) -> None:
    manager = make_manager(make_provider(client_secret="wrong-secret-5ee1"))
    async with Door(door_kind, manager) as door:
        with pytest.raises(InvalidClient) as caught:
            await door.get(api_server.base_url + "/x")
    assert api_server.calls == 0
    assert "wrong-secret-5ee1" not in str(caught.value)
    assert isinstance(caught.value, TokenError)


async def test_token_endpoint_down_raises_token_error(
    make_door: Callable[..., Door],
    make_manager: Callable[..., TokenManager],
    make_provider: Callable[..., ClientCredentials],
    token_server: TokenServer,
    api_server: APIServer,
) -> None:
    token_server.failure = (503, "maintenance")
    async with make_door(make_manager(make_provider(retry=0))) as door:
        with pytest.raises(TokenError, match="503"):
            await door.get(api_server.base_url + "/x")
    assert api_server.calls == 0


# -- one manager, every kind of caller ---------------------------------------------------


async def test_threads_and_tasks_on_one_manager_make_one_token_request(
    door_kind: str, token_server: TokenServer, api_server: APIServer, clock: FakeClock
) -> None:
    """A TokenSession in threads and an async door in tasks, cold, at once."""
    token_server.delay = 0.3
    manager = TokenManager(
        ClientCredentials(token_server.token_url, CLIENT_ID, CLIENT_SECRET), clock=clock
    )
    session = TokenSession(token_manager=manager)
    results: list[Any] = []
    worker = threading.Thread(
        target=lambda: results.extend(
            run_threads(8, lambda: session.get(api_server.base_url + "/t", timeout=10))
        )
    )
    try:
        async with Door(door_kind, manager) as door:
            answers: list[Answer] = []

            async def one() -> None:
                answers.append(await door.get(api_server.base_url + "/a"))

            async with anyio.create_task_group() as tasks:
                worker.start()
                for _ in range(20):
                    tasks.start_soon(one)
    finally:
        worker.join(30)
        session.close()
    assert [a.status for a in answers] == [200] * 20
    assert [r.status_code for r in results] == [200] * 8
    assert token_server.count == 1


# -- construction ------------------------------------------------------------------------


async def test_clients_take_token_session_keywords_and_their_own(
    token_server: TokenServer, api_server: APIServer
) -> None:
    async with AsyncTokenClient(
        token_server.token_url,
        CLIENT_ID,
        CLIENT_SECRET,
        scope="orders:read",
        auth_method="client_secret_post",
        leeway=5,
        base_url=api_server.base_url,
        timeout=10,
    ) as client:
        assert (await client.get("/orders")).status_code == 200
        assert client.token_manager.leeway == 5
        assert client.token_hosts is None
    assert token_server.requests[0].form["scope"] == "orders:read"
    assert token_server.requests[0].form["client_id"] == CLIENT_ID  # client_secret_post
    with TokenClient(
        token_server.token_url, CLIENT_ID, CLIENT_SECRET, base_url=api_server.base_url
    ) as sync_client:
        assert sync_client.get("/orders").status_code == 200


def test_construction_errors_say_what_is_wrong(token_server: TokenServer) -> None:
    manager = TokenManager(ClientCredentials(token_server.token_url, CLIENT_ID, CLIENT_SECRET))
    with pytest.raises(ConfigurationError, match="not both"):
        AsyncTokenClient(token_manager=manager, client_id="x")
    with pytest.raises(ConfigurationError, match="AsyncTokenClient needs token_endpoint"):
        AsyncTokenClient()
    with pytest.raises(ConfigurationError, match="puts its token on requests itself"):
        TokenClient(token_manager=manager, auth=("user", "pass"))
    with pytest.raises(ConfigurationError, match="TokenManager"):
        TokenAuth("not a manager")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="TokenManager"):
        TokenMiddleware(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="token_hosts"):
        TokenAuth(manager, token_hosts=["https://api.example.com/"])
    with pytest.raises(TypeError):
        TokenClient(token_manager=manager, no_such_option=1)


def test_reprs_show_no_secret(token_server: TokenServer) -> None:
    manager = TokenManager(ClientCredentials(token_server.token_url, CLIENT_ID, CLIENT_SECRET))
    manager.get_token()
    with TokenClient(token_manager=manager) as client:
        texts = [repr(client), repr(client.token_auth), repr(TokenMiddleware(manager))]
    for text in texts:
        assert CLIENT_SECRET not in text
        assert manager.get_token().access_token not in text


# -- wire details (httpx.MockTransport: no server) -----------------------------------------


async def test_httpx_retry_carries_the_cookies_the_401_set() -> None:
    from alf_session.testing import StaticTokenProvider

    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers["authorization"] == "Bearer old":
            return httpx.Response(401, headers={"Set-Cookie": "session=s1; Path=/"})
        return httpx.Response(200, json={"ok": True})

    manager = TokenManager(StaticTokenProvider("old", "new"))
    async with AsyncTokenClient(
        token_manager=manager, transport=httpx.MockTransport(handle)
    ) as client:
        response = await client.post("https://api.example/x", json={"a": 1})
    assert response.status_code == 200 and [r.status_code for r in response.history] == [401]
    assert [r.headers["authorization"] for r in seen] == ["Bearer old", "Bearer new"]
    assert seen[1].headers["cookie"] == "session=s1"
    assert seen[1].content == seen[0].content == b'{"a":1}'


async def test_httpx_token_hosts_judges_the_host_httpx_connects_to() -> None:
    from alf_session.testing import StaticTokenProvider

    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    manager = TokenManager(StaticTokenProvider("t"))
    async with AsyncTokenClient(
        token_manager=manager,
        token_hosts=["api.example.com"],
        transport=httpx.MockTransport(handle),
    ) as client:
        for url in (
            "https://api.example.com.evil.example/",
            "https://evil.example/?api.example.com",
            "https://user:pw@evil.example/api.example.com",
            "https://API.EXAMPLE.COM./x",
        ):
            await client.get(url)
    assert [r.headers.get("authorization") for r in seen] == [None, None, None, "Bearer t"]


# -- trio -------------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_async_token_client_under_trio(
    token_server: TokenServer, api_server: APIServer, make_manager: Callable[..., TokenManager]
) -> None:
    async with AsyncTokenClient(token_manager=make_manager()) as client:
        async with anyio.create_task_group() as tasks:
            for _ in range(20):
                tasks.start_soon(client.get, api_server.base_url + "/x")
        token_server.revoke()
        response = await client.get(api_server.base_url + "/y")
    assert response.status_code == 200 and [r.status_code for r in response.history] == [401]
    assert token_server.count == 2


# -- aiohttp: middlewares run for every redirect hop ------------------------------------


async def test_aiohttp_two_middlewares_each_keep_their_token_off_a_cross_origin_hop(
    token_server: TokenServer,
    api_server: APIServer,
    other_api: APIServer,
    make_manager: Callable[..., TokenManager],
) -> None:
    first = TokenMiddleware(make_manager(), token_hosts=[_host(api_server)])
    second = TokenMiddleware(make_manager(), token_hosts=[_host(other_api)])
    async with aiohttp.ClientSession(middlewares=(first, second)) as session:
        url = api_server.base_url + "/redirect?to=" + other_api.base_url + "/x"
        async with session.get(url) as response:
            assert response.status == 401
        # Each middleware put its token on the first request only where allowed.
        assert api_server.seen[0] is not None and other_api.seen == [None]
        async with session.get(other_api.base_url + "/y") as response:
            assert response.status == 200  # the second middleware's own host
    assert token_server.count == 2


async def test_aiohttp_without_a_call_marker_fails_closed(
    monkeypatch: pytest.MonkeyPatch,
    make_manager: Callable[..., TokenManager],
    api_server: APIServer,
    other_api: APIServer,
) -> None:
    """If aiohttp stops telling a hop from the next call, hops still get no token."""
    import alf_session.aiohttp as module

    monkeypatch.setattr(module, "_call_of", lambda request: module._ANY_CALL)
    async with aiohttp.ClientSession(middlewares=(TokenMiddleware(make_manager()),)) as session:
        url = api_server.base_url + "/redirect?to=" + other_api.base_url + "/x"
        async with session.get(url) as response:
            assert response.status == 401
        assert other_api.seen == [None]
        async with session.get(api_server.base_url + "/redirect?to=/same") as response:
            assert response.status == 200  # within the origin, the hop keeps it
    assert api_server.seen[-1] == api_server.seen[0]


async def test_aiohttp_a_file_body_is_sent_again(
    make_manager: Callable[..., TokenManager],
    token_server: TokenServer,
    api_server: APIServer,
    tmp_path: Any,
) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"y" * 5000)
    async with aiohttp.ClientSession(middlewares=(TokenMiddleware(make_manager()),)) as session:
        async with session.get(api_server.base_url + "/a"):
            pass
        token_server.revoke()
        with upload.open("rb") as body:
            async with session.post(api_server.base_url + "/up", data=body) as response:
                assert response.status == 200
                assert (await response.json())["body_length"] == 5000
    assert api_server.unauthorized == 1


# -- lookalike URLs, judged on where the bytes went ---------------------------------------

LOOKALIKE_URLS = [
    "http://evil.example\\@api.example.com/x",
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
    "http://api.example.com/x",  # the allowed one: it must get the token
]


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A recording HTTP proxy: it sees each request's absolute URL and its header."""
    from .recording import Recorder

    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with Recorder("127.0.0.1") as recorder:
        yield recorder


@pytest.mark.parametrize("url", LOOKALIKE_URLS)
async def test_through_a_proxy_only_the_allowed_host_gets_the_token(
    door_kind: str, make_manager: Callable[..., TokenManager], proxy: Any, url: str
) -> None:
    manager = make_manager()
    options = {"proxy": proxy.url}
    async with Door(door_kind, manager, ["api.example.com:80"], **options) as door:
        try:
            await door.get(url, follow_redirects=False)
        except (httpx.HTTPError, aiohttp.ClientError, ValueError):
            pass  # the library refused the URL: nothing went anywhere
    for seen in proxy.seen:
        # (A URL's own user:password becomes Basic auth, as in requests.)
        if (seen.authorization or "").startswith("Bearer"):
            # A token only ever travels towards api.example.com on port 80.
            assert seen.target_host == "api.example.com", seen
            assert seen.target.startswith("http://api.example.com/"), seen
    if url == "http://api.example.com/x":
        assert proxy.authorizations == [manager.get_token().header_value]


# -- the herd, through a door ---------------------------------------------------------


@pytest.mark.parametrize("door_kind", ["httpx-async", "aiohttp"])
async def test_200_cold_tasks_through_a_door_make_one_token_request_and_the_loop_runs(
    door_kind: str,
    make_manager: Callable[..., TokenManager],
    token_server: TokenServer,
    api_server: APIServer,
) -> None:
    """As tests/test_async.py shows for ``aget_token``, through each async door.

    A probe ticks while the token request is held at the server (arrived, not
    yet answered): a door that blocked the loop for the fetch would let no
    tick run then.
    """
    token_server.delay = 0.3
    manager = make_manager()
    in_flight = 0
    done = False

    async def probe() -> None:
        nonlocal in_flight
        while not done:
            await anyio.sleep(0.005)
            if token_server.count == 1 and manager.stats.fetches == 0:
                in_flight += 1

    answers: list[Answer] = []
    async with Door(door_kind, manager) as door:

        async def one() -> None:
            answers.append(await door.get(api_server.base_url + "/x"))

        async with anyio.create_task_group() as outer:
            outer.start_soon(probe)
            async with anyio.create_task_group() as herd:
                for _ in range(200):
                    herd.start_soon(one)
            done = True
    assert [a.status for a in answers] == [200] * 200
    assert token_server.count == 1
    assert in_flight >= 1


async def test_aiohttp_token_errors_stay_typed_and_are_client_errors_too(
    make_manager: Callable[..., TokenManager],
    make_provider: Callable[..., ClientCredentials],
    api_server: APIServer,
) -> None:
    """aiohttp turns an OSError out of a middleware into ClientOSError; a TokenError
    (a requests.RequestException, so an OSError) must come out as itself."""
    import pickle

    manager = make_manager(make_provider(client_secret="wrong-secret-1f0d"))
    async with aiohttp.ClientSession(middlewares=(TokenMiddleware(manager),)) as session:
        with pytest.raises(InvalidClient) as caught:
            await session.get(api_server.base_url + "/x")
        with pytest.raises(aiohttp.ClientError):  # code that catches aiohttp's errors
            await session.get(api_server.base_url + "/x")
    error = caught.value
    assert not isinstance(error, aiohttp.ClientOSError)
    assert type(error).__name__ == "InvalidClient" and error.error == "invalid_client"
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert type(copy) is InvalidClient and str(copy) == str(error)
    assert "wrong-secret-1f0d" not in str(error) + repr(error)
    assert api_server.calls == 0


# -- httpx keeps the header on an http -> https redirect to the same host ---------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_httpx_clients_keep_token_hosts_on_an_https_upgrade_redirect(kind: str) -> None:
    """httpx carries Authorization from http://host to https://host without asking the
    auth; a token_hosts entry with a port must still hold on that hop."""
    from alf_session.testing import StaticTokenProvider

    seen: list[tuple[str, str | None]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("authorization")))
        if request.url.scheme == "http":
            return httpx.Response(302, headers={"Location": "https://api.example.com/next"})
        return httpx.Response(200)

    manager = TokenManager(StaticTokenProvider("t"))
    options: dict[str, Any] = {
        "token_manager": manager,
        "token_hosts": ["api.example.com:80"],
        "transport": httpx.MockTransport(handle),
        "follow_redirects": True,
        "event_hooks": {"request": []},  # the caller's own hooks are kept
    }
    if kind == "sync":
        with TokenClient(**options) as client:
            client.get("http://api.example.com/start")
    else:
        async with AsyncTokenClient(**options) as client:
            await client.get("http://api.example.com/start")
    assert seen == [
        ("http://api.example.com/start", "Bearer t"),
        ("https://api.example.com/next", None),
    ]
    # With every host allowed there is nothing to guard: the header goes on.
    seen.clear()
    async with AsyncTokenClient(
        token_manager=manager, transport=httpx.MockTransport(handle), follow_redirects=True
    ) as client:
        await client.get("http://api.example.com/start")
    assert [header for _, header in seen] == ["Bearer t", "Bearer t"]
