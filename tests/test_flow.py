"""The request flow without a network: ``alf_session._flow`` driven by hand.

A toy HTTP library (:class:`Req`, :class:`Resp`, :class:`ToyWire`) stands in
for requests, httpx or aiohttp, so these tests show what a new driver can
rely on: the flow decides, the driver only sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from alf_session import ConfigurationError, Token, TokenManager
from alf_session._flow import (
    RequestFlow,
    canonical_host,
    host_allowed,
    normalize_hosts,
    url_origin,
)

from .helpers import FakeClock


@dataclass
class Req:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    retry: bool = False


@dataclass
class Resp:
    status: int
    request: Req | None = None


class ToyWire:
    def origin(self, request: Req) -> tuple[str, str, int | None]:
        return url_origin(request.url)

    def authorization(self, request: Req) -> str | None:
        return request.headers.get("Authorization")

    def set_authorization(self, request: Req, value: str) -> None:
        request.headers["Authorization"] = value

    def status(self, response: Resp) -> int:
        return response.status

    def request_of(self, response: Resp) -> Req | None:
        return response.request

    def replayable(self, request: Req) -> bool:
        return not hasattr(request.body, "__next__")

    def resend(self, request: Req, response: Resp, header: str) -> Req:
        return Req(request.url, {**request.headers, "Authorization": header}, request.body, True)

    def is_retry(self, request: Req) -> bool:
        return request.retry


class Tokens:
    """A provider handing out tok-1, tok-2, …"""

    def __init__(self) -> None:
        self.count = 0

    def fetch_token(self) -> Token:
        self.count += 1
        return Token(f"tok-{self.count}", expires_at=None)


@pytest.fixture
def provider() -> Tokens:
    return Tokens()


@pytest.fixture
def manager(provider: Tokens, clock: FakeClock) -> TokenManager:
    return TokenManager(provider, clock=clock)


def flow_of(manager: TokenManager, hosts: Any = None) -> RequestFlow[Req, Resp]:
    return RequestFlow(manager, normalize_hosts(hosts), ToyWire())


class TestAuthFlowGenerator:
    def test_200_one_request(self, manager: TokenManager) -> None:
        flow = flow_of(manager)
        steps = flow.auth_flow(Req("https://api.example/x"))
        sent = next(steps)
        assert sent.headers == {"Authorization": "Bearer tok-1"}
        with pytest.raises(StopIteration):
            steps.send(Resp(200, sent))

    def test_401_one_retry_with_a_new_token(self, manager: TokenManager, provider: Tokens) -> None:
        flow = flow_of(manager)
        steps = flow.auth_flow(Req("https://api.example/x", body=b"data"))
        sent = next(steps)
        retry = steps.send(Resp(401, sent))
        assert retry.headers["Authorization"] == "Bearer tok-2"
        assert retry.body == b"data"
        assert retry is not sent
        with pytest.raises(StopIteration):
            steps.send(Resp(401, retry))  # never a second retry
        assert provider.count == 2
        assert manager.stats.retries_on_401 == 1

    def test_host_not_allowed_no_token_no_retry(
        self, manager: TokenManager, provider: Tokens
    ) -> None:
        flow = flow_of(manager, ["api.example"])
        steps = flow.auth_flow(Req("https://api.example.evil.example/x"))
        sent = next(steps)
        assert sent.headers == {}
        with pytest.raises(StopIteration):
            steps.send(Resp(401, sent))
        assert provider.count == 0


class TestRetryFor:
    def test_only_401(self, manager: TokenManager) -> None:
        flow = flow_of(manager)
        request = Req("https://api.example/x")
        flow.attach(request)
        for status in (200, 302, 403, 500):
            assert flow.retry_for(request, Resp(status, request)) is None

    def test_not_our_token(self, manager: TokenManager, provider: Tokens) -> None:
        flow = flow_of(manager)
        request = Req("https://api.example/x", {"Authorization": "Bearer the-callers"})
        assert flow.retry_for(request, Resp(401, request)) is None
        assert provider.count == 0

    def test_a_hop_that_lost_the_header(self, manager: TokenManager) -> None:
        flow = flow_of(manager)
        request = Req("https://api.example/x")
        flow.attach(request)
        hop = Req("https://elsewhere.example/x")
        assert flow.retry_for(request, Resp(401, hop)) is None

    def test_a_hop_with_another_header(self, manager: TokenManager) -> None:
        flow = flow_of(manager)
        request = Req("https://api.example/x")
        flow.attach(request)
        hop = Req("https://api.example/y", {"Authorization": "Basic bmV0cmM6cGFzcw=="})
        assert flow.retry_for(request, Resp(401, hop)) is None

    def test_a_hop_that_kept_our_token_resends_the_request(self, manager: TokenManager) -> None:
        flow = flow_of(manager)
        request = Req("https://api.example/x")
        flow.attach(request)
        hop = Req("https://api.example/y", dict(request.headers))
        retry = flow.retry_for(request, Resp(401, hop))
        assert retry is not None
        assert retry.url == "https://api.example/x"
        assert retry.headers["Authorization"] == "Bearer tok-2"

    def test_a_retry_is_never_retried(self, manager: TokenManager, provider: Tokens) -> None:
        flow = flow_of(manager)
        request = Req("https://api.example/x", retry=True)
        flow.attach(request)
        assert flow.retry_for(request, Resp(401, request)) is None
        assert provider.count == 1

    def test_unreplayable_body_drops_the_token_without_retry(
        self, manager: TokenManager, provider: Tokens
    ) -> None:
        flow = flow_of(manager)
        request = Req("https://api.example/x", body=iter([b"a"]))
        flow.attach(request)
        assert flow.retry_for(request, Resp(401, request)) is None
        assert provider.count == 1
        assert manager.get_token().access_token == "tok-2"  # the refused one is gone

    def test_driver_that_cannot_resend(self, manager: TokenManager, provider: Tokens) -> None:
        flow = flow_of(manager)
        request = Req("https://api.example/x")
        flow.attach(request)
        assert flow.retry_for(request, Resp(401, request), resend=False) is None
        assert manager.get_token().access_token == "tok-2"

    def test_only_the_refused_token_is_dropped(
        self, manager: TokenManager, provider: Tokens
    ) -> None:
        flow = flow_of(manager)
        old_request = Req("https://api.example/x")
        flow.attach(old_request)
        manager.force_refresh()  # another thread renewed meanwhile: tok-2
        retry = flow.retry_for(old_request, Resp(401, old_request))
        assert retry is not None
        assert retry.headers["Authorization"] == "Bearer tok-2"
        assert provider.count == 2  # tok-2 kept, nothing fetched for the 401

    def test_a_401_loop_is_bounded(
        self, manager: TokenManager, provider: Tokens, clock: FakeClock
    ) -> None:
        flow = flow_of(manager)
        retries = 0
        for _ in range(20):
            steps = flow.auth_flow(Req("https://api.example/x"))
            sent = next(steps)
            try:
                retry = steps.send(Resp(401, sent))
            except StopIteration:
                continue
            retries += 1
            with pytest.raises(StopIteration):
                steps.send(Resp(401, retry))
        # tok-1 refused, tok-2 refused on its retry (bad luck, dropped); tok-3
        # refused, tok-4 refused on its retry: a loop, tok-4 kept.
        assert retries == 2
        assert provider.count == 4
        assert manager.get_token().access_token == "tok-4"
        clock.advance(manager.failure_ttl + 0.5)  # quiet for a window: try again
        steps = flow.auth_flow(Req("https://api.example/x"))
        assert steps.send(Resp(401, next(steps))).headers["Authorization"] == "Bearer tok-5"

    def test_one_refused_retry_is_not_a_loop(
        self, manager: TokenManager, provider: Tokens, clock: FakeClock
    ) -> None:
        # A token revoked while the retry was on its way: dropped, and the next
        # 401 (to a token revoked later) is retried as usual.
        flow = flow_of(manager)
        for n in (2, 4):
            steps = flow.auth_flow(Req("https://api.example/x"))
            retry = steps.send(Resp(401, next(steps)))
            assert retry.headers["Authorization"] == f"Bearer tok-{n}"
            with pytest.raises(StopIteration):
                steps.send(Resp(401, retry))
            clock.advance(manager.failure_ttl + 0.5)
        assert provider.count == 4

    def test_refusals_reported_late_are_not_a_loop(
        self, manager: TokenManager, provider: Tokens
    ) -> None:
        # Two requests under load: A's replacement tok-2 is refused on its
        # retry, but A is held up before it reports that; meanwhile B's first
        # try with tok-2 is refused and B's replacement tok-3 too. tok-3 was
        # taken before A's refusal was known: tokens revoked one after the
        # other, not an API refusing every fresh token.
        flow = flow_of(manager)
        steps_a = flow.auth_flow(Req("https://api.example/x"))
        retry_a = steps_a.send(Resp(401, next(steps_a)))
        assert retry_a.headers["Authorization"] == "Bearer tok-2"
        steps_b = flow.auth_flow(Req("https://api.example/y"))
        retry_b = steps_b.send(Resp(401, next(steps_b)))
        assert retry_b.headers["Authorization"] == "Bearer tok-3"
        with pytest.raises(StopIteration):
            steps_a.send(Resp(401, retry_a))
        with pytest.raises(StopIteration):
            steps_b.send(Resp(401, retry_b))
        # tok-3 is dropped, not kept as a loop's token: the next 401 is retried.
        steps = flow.auth_flow(Req("https://api.example/z"))
        sent = next(steps)
        assert sent.headers["Authorization"] == "Bearer tok-4"
        assert steps.send(Resp(401, sent)).headers["Authorization"] == "Bearer tok-5"
        assert provider.count == 5


class TestHosts:
    @pytest.mark.parametrize(
        ("host", "canonical"),
        [
            ("API.Example.COM", "api.example.com"),
            ("api.example.com.", "api.example.com"),
            ("api.example.com..", "api.example.com."),  # not the same name
            ("bücher.example", "xn--bcher-kva.example"),
            ("0:0:0:0:0:0:0:1", "::1"),
            ("::FFFF:7F00:1", "::ffff:127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("0x7f.0.0.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("1.2.3.4.5", "1.2.3.4.5"),
        ],
    )
    def test_canonical_host(self, host: str, canonical: str) -> None:
        assert canonical_host(host) == canonical

    @pytest.mark.parametrize(
        ("url", "origin"),
        [
            ("https://api.example/x", ("https", "api.example", 443)),
            ("HTTP://API.example:8080/x", ("http", "api.example", 8080)),
            ("http://[::1]/x", ("http", "::1", 80)),
            ("http://evil.example%2f@api.example/x", ("http", "api.example", 80)),
            ("http://api.example:99999/x", ("http", "", None)),
            ("http://api.example:x/x", ("http", "", None)),
        ],
    )
    def test_url_origin(self, url: str, origin: tuple[str, str, int | None]) -> None:
        assert url_origin(url) == origin

    def test_host_allowed(self) -> None:
        hosts = normalize_hosts(["api.example", "[::1]:8443", "localhost:80"])
        assert hosts is not None
        assert host_allowed(("https", "api.example", 443), hosts)
        assert host_allowed(("http", "::1", 8443), hosts)
        assert not host_allowed(("http", "::1", 8444), hosts)
        assert host_allowed(("http", "localhost", 80), hosts)
        assert not host_allowed(("https", "localhost", 443), hosts)
        assert not host_allowed(("http", "", 80), hosts)

    def test_normalize_errors_name_the_entry_and_the_reason(self) -> None:
        with pytest.raises(ConfigurationError, match=r"'api\.example/v1'.*'/'"):
            normalize_hosts(["api.example/v1"])
        with pytest.raises(ConfigurationError, match="port"):
            normalize_hosts("api.example:70000")
        with pytest.raises(ConfigurationError, match="IDNA"):
            normalize_hosts("bad\u2603idna.example")
        with pytest.raises(ConfigurationError, match="list"):
            normalize_hosts(42)  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_aauth_flow_same_steps_in_an_event_loop(
    manager: TokenManager, provider: Tokens, anyio_backend: str
) -> None:
    flow = flow_of(manager)
    steps = flow.aauth_flow(Req("https://api.example/x", body=b"data"))
    sent = await steps.__anext__()
    assert sent.headers == {"Authorization": "Bearer tok-1"}
    retry = await steps.asend(Resp(401, sent))
    assert retry.headers["Authorization"] == "Bearer tok-2"
    with pytest.raises(StopAsyncIteration):
        await steps.asend(Resp(401, retry))
    assert provider.count == 2
    other = flow_of(manager, ["elsewhere.example"]).aauth_flow(Req("https://api.example/y"))
    assert (await other.__anext__()).headers == {}
    await other.aclose()
