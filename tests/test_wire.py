"""The token request on the wire, attacked: where its bytes may go, how long it
may take, what an error may carry, and how a failure is remembered.

Every test here runs against real servers on loopback (a token endpoint, a
recording proxy, servers that trickle or echo); each would fail on 0.1.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import pickle
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from alf_session import (
    ClientCredentials,
    ConfigurationError,
    InsecureTransportError,
    InvalidClient,
    InvalidGrant,
    InvalidTokenResponse,
    OAuthError,
    PasswordCredentials,
    Token,
    TokenError,
    TokenHTTPError,
    TokenManager,
    TokenRequestError,
    TokenRequestTimeout,
    TokenSession,
    TokenTimeout,
)
from alf_session._servers import APIServer, TokenServer

from .helpers import CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME, FakeClock

# -- real servers of our own ---------------------------------------------------------------


class RawServer:
    """A TCP server on loopback (or ``host``) running ``handle(conn, server)``
    per connection, and recording every byte it received."""

    def __init__(
        self, handle: Callable[[socket.socket, RawServer], None], host: str = "127.0.0.1"
    ) -> None:
        self.handle = handle
        self.received = bytearray()
        self.connections = 0
        self.closed_by_peer = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with outer._lock:
                    outer.connections += 1
                outer.handle(self.request, outer)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.host = host
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def record(self, data: bytes) -> None:
        with self._lock:
            self.received += data

    def __enter__(self) -> RawServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def read_request(conn: socket.socket, server: RawServer) -> bytes:
    """Read one HTTP request (headers and a Content-Length body)."""
    conn.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        server.record(chunk)
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        server.record(chunk)
        body += chunk
    return head + b"\r\n\r\n" + body


def proxy_handler(conn: socket.socket, server: RawServer) -> None:
    """A proxy that records what it is asked and forwards nothing."""
    read_request(conn, server)
    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@pytest.fixture
def proxy() -> Iterator[RawServer]:
    with RawServer(proxy_handler) as server:
        yield server


@pytest.fixture
def env_proxy(monkeypatch: pytest.MonkeyPatch, proxy: RawServer) -> RawServer:
    """Every proxy variable of the environment points at ``proxy``; none exempts loopback."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy.url)
        monkeypatch.setenv(name.lower(), proxy.url)
    return proxy


def spellings(secret: str, client_id: str = CLIENT_ID) -> set[str]:
    """Ways a secret may show up: raw, form- and percent-encoded, HTTP Basic."""
    pairs = [
        f"{quote_plus(client_id, safe='')}:{quote_plus(secret, safe='')}",
        f"{client_id}:{secret}",
    ]
    basic = {base64.b64encode(p.encode()).decode() for p in pairs}
    return {secret, quote_plus(secret, safe=""), quote(secret, safe=""), *basic}


def request_texts(exc: BaseException) -> list[str]:
    """The headers and bodies of every request object reachable from ``exc``."""
    texts: list[str] = []
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        response = getattr(err, "response", None)
        for request in (getattr(err, "request", None), getattr(response, "request", None)):
            if request is not None:
                texts.append(repr(dict(request.headers)))
                body = request.body
                texts.append(body.decode() if isinstance(body, bytes) else str(body))
        todo += [err.__cause__, err.__context__]
    return texts


def assert_no_secret(texts: list[str], *secrets: str) -> None:
    for secret in secrets:
        for form in spellings(secret):
            for text in texts:
                assert form not in text, f"a spelling of a secret in {text[:200]!r}"


# -- 1. the plain-http rule, judged as the transport connects --------------------------------

HOSTILE_URLS = [
    # urllib.parse reads these as *.localhost or 127.0.0.1; urllib3 connects to evil.example
    "http://evil.example\\.localhost/token",
    "http://evil.example\\x.localhost/token",
    "http://evil.example\\@127.0.0.1/token",
    # percent-escapes and odd bytes in a name that only looks local
    "http://evil.example%5c.localhost/token",
    "http://evil.example%2f.localhost/token",
    "http://evil.example%00.localhost/token",
    "http://evil.example\x00.localhost/token",
    # userinfo tricks
    "http://127.0.0.1@evil.example/token",
    "http://127.0.0.1:80@evil.example/token",
    "http://localhost:x@evil.example/token",
    # whitespace and control characters
    "http://127.0.0.1\t.evil.example/token",
    "http://evil.example\n.localhost/token",
    "http://127.0.0.1 .evil.example/token",
    # lookalike names, scheme case, IDNA
    "http://localhost.evil.example/token",
    "HTTP://127.0.0.1.nip.io/token",
    "hTtP://localhost.evil.example/token",
    "http://l\u043ecalhost/token",  # Cyrillic o
    "http://localhost\u3002evil.example/token",  # ideographic full stop
    # other spellings of an address: refused rather than guessed
    "http://2130706433/token",
    "http://0x7f000001/token",
    "http://0177.0.0.1/token",
    "http://127.1/token",
    "http://localhost./token",
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_a_lookalike_plain_http_endpoint_is_refused_before_any_byte(
    url: str, env_proxy: RawServer
) -> None:
    with pytest.raises(ConfigurationError) as info:
        ClientCredentials(url, CLIENT_ID, CLIENT_SECRET)
    assert CLIENT_SECRET not in str(info.value)
    with pytest.raises(ConfigurationError):
        TokenSession(url, CLIENT_ID, CLIENT_SECRET)
    # Nothing went anywhere: not even to a proxy that would have forwarded it.
    assert env_proxy.connections == 0


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (the interface of a route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address  # noqa: S104


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", ["auth.localhost", "localhost", "idp.dev.localhost"])
def test_a_local_name_that_resolves_elsewhere_gets_no_byte(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A hostile resolver (or /etc/hosts) sends a "local" name to another
    # machine: the connection is made, its peer judged, nothing is sent.
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")

    def hold(conn: socket.socket, server: RawServer) -> None:
        read_request(conn, server)
        conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 23\r\n\r\n{"access_token": "abc"}')

    with RawServer(hold, host=address) as remote:
        real = socket.getaddrinfo

        def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host == name:
                host = address
            return real(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", resolve)
        provider = ClientCredentials(f"http://{name}:{remote.port}/token", CLIENT_ID, CLIENT_SECRET)
        with pytest.raises(InsecureTransportError, match="not a loopback address") as info:
            provider.fetch_token()
        assert CLIENT_SECRET not in str(info.value)
        deadline = time.monotonic() + 5
        while remote.connections == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert remote.connections >= 1  # the connection was made ...
        assert bytes(remote.received) == b""  # ... and not one byte crossed it

        # With the explicit opt-in, the same endpoint is used as asked.
        trusted = ClientCredentials(
            f"http://{name}:{remote.port}/token",
            CLIENT_ID,
            CLIENT_SECRET,
            allow_insecure_http=True,
        )
        assert trusted.fetch_token().access_token == "abc"
        assert b"POST /token" in bytes(remote.received)


@pytest.mark.parametrize(
    "spelling",
    [
        "http://127.0.0.1:{port}/token",
        "HTTP://LOCALHOST:{port}/token",
        "  http://localhost:{port}/token\n",
    ],
)
def test_loopback_spellings_still_reach_the_endpoint(
    spelling: str, token_server: TokenServer, env_proxy: RawServer
) -> None:
    provider = ClientCredentials(spelling.format(port=token_server.port), CLIENT_ID, CLIENT_SECRET)
    assert provider.fetch_token().access_token
    assert token_server.count == 1


# -- 2. loopback is reached directly, never through a proxy ----------------------------------


def test_loopback_endpoint_bypasses_environment_proxies(
    token_server: TokenServer, api_server: APIServer, env_proxy: RawServer, clock: FakeClock
) -> None:
    with TokenSession(token_server.token_url, CLIENT_ID, CLIENT_SECRET, clock=clock) as session:
        session.trust_env = False  # the API request itself is not under test here
        assert session.get(api_server.base_url + "/data").status_code == 200
    assert token_server.count == 1
    assert env_proxy.connections == 0
    assert bytes(env_proxy.received) == b""


def test_loopback_endpoint_ignores_an_explicit_proxy_too(
    token_server: TokenServer, proxy: RawServer
) -> None:
    provider = ClientCredentials(
        token_server.token_url, CLIENT_ID, CLIENT_SECRET, proxies={"http": proxy.url}
    )
    assert provider.fetch_token().access_token
    assert proxy.connections == 0


def test_a_remote_endpoint_still_goes_through_the_environment_proxy(env_proxy: RawServer) -> None:
    provider = ClientCredentials("https://idp.example/token", CLIENT_ID, CLIENT_SECRET, retry=0)
    with pytest.raises(TokenRequestError):
        provider.fetch_token()
    # The proxy was asked to tunnel; TLS never started, so no secret reached it.
    assert bytes(env_proxy.received).startswith(b"CONNECT idp.example:443")
    assert_no_secret([bytes(env_proxy.received).decode("latin-1")], CLIENT_SECRET)


# -- 3. token_timeout bounds the whole request -----------------------------------------------


def trickler(status_line_first: bool) -> Callable[[socket.socket, RawServer], None]:
    """A server that answers one byte every 50 ms, for ever: the headers
    (``status_line_first=False``) or the body after complete headers."""

    def handle(conn: socket.socket, server: RawServer) -> None:
        # Everything in the try: on a loaded machine the caller's budget can
        # run out before the headers go (or, over TLS, during the handshake's
        # end), and this socket must be closed and the peer's close seen then
        # too (an SSLSocket left open warns at some later test's GC).
        try:
            read_request(conn, server)
            if status_line_first:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
                conn.sendall(b"Content-Length: 100000\r\n\r\n")
                drip = b" " * 100000
            else:
                drip = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100000
            for byte in drip:
                conn.sendall(bytes([byte]))
                time.sleep(0.05)
        except OSError:
            server.closed_by_peer.set()
            return
        finally:
            conn.close()

    return handle


@pytest.mark.timeout(30)
@pytest.mark.parametrize("body", [True, False], ids=["trickled-body", "trickled-headers"])
def test_a_trickling_server_cannot_hold_the_caller(body: bool) -> None:
    with RawServer(trickler(body)) as server:
        provider = ClientCredentials(
            server.url + "/token", CLIENT_ID, CLIENT_SECRET, timeout=0.5, retry=0
        )
        with pytest.raises(TokenRequestTimeout) as info:
            provider.fetch_token()
        assert isinstance(info.value, TokenTimeout)
        assert isinstance(info.value, requests.Timeout)
        assert "did not answer within 0.5s" in str(info.value)
        # The connection was closed under the server, which sees its writes fail.
        assert server.closed_by_peer.wait(10)


@pytest.mark.timeout(30)
def test_a_trickling_tls_server_cannot_hold_the_caller(tmp_path: Any) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    drip = trickler(True)

    def handle(conn: socket.socket, server: RawServer) -> None:
        try:
            tls = context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            # The caller's budget ran out during the handshake (a loaded
            # machine): it closed the connection under the server all the same.
            server.closed_by_peer.set()
            return
        drip(tls, server)

    with RawServer(handle) as server:
        provider = ClientCredentials(
            f"https://127.0.0.1:{server.port}/token",
            CLIENT_ID,
            CLIENT_SECRET,
            timeout=0.5,
            retry=0,
            verify=str(ca_file),
        )
        with pytest.raises(TokenRequestTimeout):
            provider.fetch_token()
        assert server.closed_by_peer.wait(10)


@pytest.mark.timeout(40)
def test_a_trickling_server_does_not_hold_the_threads_behind_the_single_flight(
    clock: FakeClock,
) -> None:
    with RawServer(trickler(True)) as server:
        provider = ClientCredentials(
            server.url + "/token", CLIENT_ID, CLIENT_SECRET, timeout=0.5, retry=2
        )
        manager = TokenManager(provider, clock=clock)
        errors: list[BaseException] = []

        def call() -> None:
            try:
                manager.get_token()
            except TokenError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=call) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert not any(thread.is_alive() for thread in threads)
        assert len(errors) == 5
        assert all(isinstance(e, TokenRequestTimeout) for e in errors)
        assert server.connections == 1  # one fetch; the others got its remembered failure
        assert server.closed_by_peer.wait(10)


def test_no_retry_is_made_that_the_budget_has_no_room_for(token_server: TokenServer) -> None:
    # Retry-After: 5 does not fit in a 1 s token_timeout: the 503 is the answer.
    token_server.fail_next(503, "down", times=5, headers={"Retry-After": "5"})
    provider = ClientCredentials(token_server.token_url, CLIENT_ID, CLIENT_SECRET, timeout=1)
    with pytest.raises(TokenHTTPError) as info:
        provider.fetch_token()
    assert info.value.status_code == 503
    assert token_server.count == 1


# -- 4. an error carries no credential -------------------------------------------------------

REFRESH = "rt-refresh-token-9f8e7d6c"


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
@pytest.mark.parametrize(
    "answer",
    [
        (401, {"error": "invalid_client"}),
        (400, {"error": "invalid_grant"}),
        (500, "<html><title>oops</title></html>"),
        (200, "not json"),
    ],
)
def test_the_request_reachable_from_an_error_is_scrubbed(
    token_server: TokenServer, auth_method: str, answer: tuple[int, Any]
) -> None:
    token_server.fail_next(*answer, times=10)
    provider = PasswordCredentials(
        token_server.token_url,
        CLIENT_ID,
        CLIENT_SECRET,
        USERNAME,
        PASSWORD,
        auth_method=auth_method,
        retry=0,
    )
    with pytest.raises(TokenError) as info:
        provider.fetch_token()
    exc = info.value
    assert exc.response is not None
    assert exc.request is exc.response.request
    texts = request_texts(exc)
    assert texts, "the error should still carry the (scrubbed) request"
    assert_no_secret(texts, CLIENT_SECRET, PASSWORD)
    assert "***" in "".join(texts)
    # The scrubbed copy says what was asked, without the secrets.
    assert "grant_type=password" in "".join(texts)
    # What went on the wire was the real thing.
    sent = token_server.requests[-1]
    assert sent.form.get("password") == PASSWORD


def test_the_refresh_token_is_scrubbed_from_a_refused_refresh(token_server: TokenServer) -> None:
    token_server.fail_next(400, {"error": "invalid_grant"})
    provider = ClientCredentials(token_server.token_url, CLIENT_ID, CLIENT_SECRET, retry=0)
    with pytest.raises(InvalidGrant) as info:
        provider.refresh(Token("at", refresh_token=REFRESH))
    assert_no_secret(request_texts(info.value), CLIENT_SECRET, REFRESH)


def test_a_transport_error_chain_is_scrubbed() -> None:
    def slam(conn: socket.socket, server: RawServer) -> None:
        read_request(conn, server)
        conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{"acc')
        conn.close()  # broken off mid-body

    with RawServer(slam) as server:
        provider = ClientCredentials(
            server.url + "/token",
            CLIENT_ID,
            CLIENT_SECRET,
            auth_method="client_secret_post",
            retry=0,
        )
        with pytest.raises(TokenRequestError, match="broke off") as info:
            provider.fetch_token()
    assert isinstance(info.value.__cause__, requests.RequestException)
    texts = request_texts(info.value)
    assert len(texts) >= 4  # the error's request and the chained one's
    assert_no_secret(texts, CLIENT_SECRET)


def echo_handler(conn: socket.socket, server: RawServer) -> None:
    """A token endpoint that echoes what it got in every error field."""
    request = read_request(conn, server).decode("latin-1")
    head, _, body = request.partition("\r\n\r\n")
    auth = next(
        (
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("authorization:")
        ),
        "",
    )
    answer = json.dumps(
        {
            "error": f"bad {body}",
            "error_description": f"header {auth} body {body}",
            "error_uri": f"https://idp.example/help?{body}&auth={auth}",
        }
    ).encode()
    conn.sendall(
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(answer)}\r\nConnection: close\r\n\r\n".encode()
        + answer
    )
    conn.close()


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
def test_secrets_echoed_in_any_spelling_are_redacted(
    auth_method: str, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cr+t/with:odd&chars=%"
    with RawServer(echo_handler) as server:
        provider = ClientCredentials(
            server.url + "/token", CLIENT_ID, secret, auth_method=auth_method, retry=0
        )
        with pytest.raises(OAuthError) as info:
            provider.refresh(Token("at", refresh_token=REFRESH))
        manager = TokenManager(provider, clock=clock)
        with pytest.raises(OAuthError) as again:
            manager.get_token()
    for exc in (info.value, again.value):
        texts = [str(exc), repr(exc), exc.error, exc.error_description or "", exc.error_uri or ""]
        assert_no_secret(texts, secret, REFRESH)
        assert "***" in exc.error_description  # type: ignore[operator]
    assert_no_secret([caplog.text], secret, REFRESH)


# -- 5. TokenError is a requests.RequestException --------------------------------------------


def test_token_errors_are_request_exceptions(
    token_server: TokenServer, api_server: APIServer, clock: FakeClock
) -> None:
    token_server.fail_next(401, {"error": "invalid_client"})
    with TokenSession(token_server.token_url, CLIENT_ID, CLIENT_SECRET, clock=clock) as session:
        try:
            session.get(api_server.base_url + "/data")
        except requests.RequestException as exc:  # what code around requests catches
            caught: BaseException = exc
        else:
            pytest.fail("no error")
    assert isinstance(caught, InvalidClient)
    assert caught.response is not None and caught.response.status_code == 401
    assert caught.request is caught.response.request
    assert caught.response.url == token_server.token_url
    for cls in (TokenError, ConfigurationError, InvalidTokenResponse, TokenRequestTimeout):
        assert issubclass(cls, requests.RequestException)
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(TokenRequestTimeout, requests.Timeout)
    copy = pickle.loads(pickle.dumps(InvalidClient("m", error="invalid_client")))  # noqa: S301
    assert (str(copy), copy.error) == ("m", "invalid_client")
    assert str(TokenError("two words")) == "two words"


# -- 6. a secret the auth method needs ------------------------------------------------------


@pytest.mark.parametrize("secret", [None, ""])
@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
def test_a_missing_secret_is_a_configuration_error(
    secret: str | None, auth_method: str, token_server: TokenServer
) -> None:
    url = token_server.token_url
    builders: list[Callable[[], object]] = [
        lambda: ClientCredentials(url, CLIENT_ID, secret, auth_method=auth_method),
        lambda: PasswordCredentials(
            url, CLIENT_ID, secret, USERNAME, PASSWORD, auth_method=auth_method
        ),
        lambda: TokenSession(url, CLIENT_ID, secret, auth_method=auth_method),
    ]
    for build in builders:
        with pytest.raises(ConfigurationError, match=r"client_secret is (missing|empty)") as info:
            build()
        assert auth_method in str(info.value)
        assert "auth_method='none'" in str(info.value)
    assert token_server.count == 0


def test_a_public_client_says_so(token_server: TokenServer) -> None:
    provider = ClientCredentials(token_server.token_url, CLIENT_ID, None, auth_method="none")
    with pytest.raises(InvalidClient):
        provider.fetch_token()  # the test server wants a secret; what was sent is the point
    sent = token_server.requests[-1]
    assert sent.form == {"grant_type": "client_credentials", "client_id": CLIENT_ID}
    assert "Authorization" not in sent.headers
    with pytest.raises(ConfigurationError, match="auth_method='none'"):
        ClientCredentials(token_server.token_url, CLIENT_ID, CLIENT_SECRET, auth_method="none")


# -- 7. failure memory: refusals for failure_ttl, outages with backoff -----------------------


@pytest.fixture
def remembering(token_server: TokenServer, clock: FakeClock) -> Callable[..., TokenManager]:
    def make(**options: Any) -> TokenManager:
        provider = ClientCredentials(
            token_server.token_url, CLIENT_ID, CLIENT_SECRET, retry=0, clock=clock
        )
        options.setdefault("failure_ttl", 30)
        return TokenManager(provider, clock=clock, **options)

    return make


@pytest.mark.parametrize(
    "answer",
    [
        (401, {"error": "invalid_client"}),
        (400, {"error": "invalid_grant"}),
        (400, {"error": "unauthorized_client"}),
        (400, {"error": "invalid_scope"}),
        (400, {"error": "unsupported_grant_type"}),
        (400, {"error": "invalid_request"}),
        (404, "no such page"),
    ],
)
def test_a_refusal_is_remembered_for_failure_ttl(
    answer: tuple[int, Any],
    token_server: TokenServer,
    clock: FakeClock,
    remembering: Callable[..., TokenManager],
) -> None:
    token_server.fail_next(*answer, times=100)
    manager = remembering()
    start = clock()
    with pytest.raises(TokenError) as first:
        manager.get_token()
    assert first.value.remembered_until is None
    assert "remembered" not in str(first.value)
    for _ in range(3):
        clock.advance(9.0)  # 27 s: still within failure_ttl=30
        with pytest.raises(type(first.value)) as again:
            manager.get_token()
        assert again.value.remembered_until == start + 30
        assert "remembered from a token request" in str(again.value)
        assert "no new token request until" in str(again.value)
    assert token_server.count == 1
    clock.advance(3.1)
    with pytest.raises(TokenError):
        manager.get_token()
    assert token_server.count == 2


@pytest.mark.parametrize(
    "answer",
    [
        (503, "busy"),
        (500, {"error": "server_error"}),
        (400, {"error": "temporarily_unavailable"}),
        (429, "slow down"),
        (502, "<html>bad gateway</html>"),
    ],
)
def test_an_outage_is_remembered_with_a_backoff_that_grows_and_resets(
    answer: tuple[int, Any],
    token_server: TokenServer,
    clock: FakeClock,
    remembering: Callable[..., TokenManager],
) -> None:
    manager = remembering(failure_ttl=10)
    holds = []
    for _ in range(6):
        token_server.fail_next(*answer)
        before = token_server.count
        with pytest.raises(TokenError):
            manager.get_token()
        assert token_server.count == before + 1
        with pytest.raises(TokenError) as again:
            manager.get_token()  # remembered: no request
        assert token_server.count == before + 1
        until = again.value.remembered_until
        assert until is not None
        holds.append(until - clock())
        clock.advance(until - clock())
    assert holds == [1, 2, 4, 8, 10, 10]
    assert manager.get_token().access_token  # the outage is over ...
    clock.advance(4000)  # ... the token expires; the next outage starts at 1 s again
    token_server.fail_next(*answer)
    with pytest.raises(TokenError):
        manager.get_token()
    with pytest.raises(TokenError) as fresh:
        manager.get_token()
    assert fresh.value.remembered_until == clock() + 1


@pytest.mark.parametrize("retry_after", ["7", "Wed, 21 Oct 2037 07:28:07 GMT"])
def test_an_outage_honours_retry_after(
    retry_after: str,
    token_server: TokenServer,
    clock: FakeClock,
    remembering: Callable[..., TokenManager],
) -> None:
    from email.utils import parsedate_to_datetime

    if not retry_after.isdigit():
        clock.advance(parsedate_to_datetime(retry_after).timestamp() - 20 - clock())
    manager = remembering(failure_ttl=10)
    token_server.fail_next(503, "busy", headers={"Retry-After": retry_after})
    with pytest.raises(TokenHTTPError):
        manager.get_token()
    with pytest.raises(TokenHTTPError) as again:
        manager.get_token()
    expected = 7.0 if retry_after.isdigit() else 20.0
    assert again.value.remembered_until == pytest.approx(clock() + expected)
    assert token_server.count == 1


@pytest.mark.timeout(30)
def test_a_connection_error_is_an_outage(clock: FakeClock) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = ClientCredentials(
        f"http://127.0.0.1:{port}/token", CLIENT_ID, CLIENT_SECRET, retry=0
    )
    manager = TokenManager(provider, clock=clock, failure_ttl=60)
    with pytest.raises(TokenRequestError):
        manager.get_token()
    with pytest.raises(TokenRequestError) as again:
        manager.get_token()
    assert again.value.remembered_until == clock() + 1


# -- 8. absurd expiries never become a fetch per request -------------------------------------


@pytest.mark.parametrize(
    "expires_at",
    [float("nan"), float("-inf"), float("inf"), 1e300, -1e300, 0.0, -5.0, 1.0],
)
def test_a_custom_providers_absurd_expiry_is_not_a_fetch_per_request(
    expires_at: float, clock: FakeClock
) -> None:
    calls = []

    def provider() -> Token:
        calls.append(1)
        return Token(f"at-{len(calls)}", expires_at=expires_at, issued_at=clock())

    manager = TokenManager(provider, clock=clock)
    for _ in range(50):
        try:
            manager.get_token()
        except TokenError:
            pass
    assert len(calls) == 1


@pytest.mark.parametrize(
    "expires_in", ["NaN", "Infinity", "-Infinity", "-1", "1e300", "1e400", "99999999999999"]
)
def test_an_absurd_expires_in_from_a_server_is_not_a_fetch_per_request(
    expires_in: str, token_server: TokenServer, clock: FakeClock
) -> None:
    body = '{"access_token": "abc", "expires_in": ' + expires_in + "}"
    token_server.failure = (200, body.encode())
    provider = ClientCredentials(token_server.token_url, CLIENT_ID, CLIENT_SECRET, retry=0)
    manager = TokenManager(provider, clock=clock)
    for _ in range(20):
        with pytest.raises(InvalidTokenResponse):
            manager.get_token()
    assert token_server.count == 1


@pytest.mark.parametrize("exp", [1e300, -1, 0, "NaN", 10**30, 1e12 * 1000])
def test_an_absurd_jwt_exp_is_ignored(exp: object, clock: FakeClock) -> None:
    claims = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).decode().rstrip("=")
    token = Token.from_response(
        {"access_token": f"e30.{claims}.sig"}, now=clock(), default_lifetime=600
    )
    assert token.expires_at == clock() + 600


_TEN_YEARS = 10 * 365 * 24 * 3600.0
NOW = st.floats(min_value=0, max_value=4e9)
EXPIRES_IN = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.text(max_size=20),
    st.from_regex(r"\s*[-+]?[0-9]{0,40}(\.[0-9]*)?([eE][-+]?[0-9]{1,4})?\s*", fullmatch=True),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e308", "1e309", "-0"]),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(expires_in=EXPIRES_IN, now=NOW)
def test_expires_in_gives_a_finite_plan_or_a_typed_error(expires_in: object, now: float) -> None:
    try:
        token = Token.from_response(
            {"access_token": "abc", "expires_in": expires_in}, now=now, default_lifetime=600
        )
    except InvalidTokenResponse:
        return
    assert token.expires_at is not None
    assert math.isfinite(token.expires_at)
    assert now <= token.expires_at <= now + _TEN_YEARS


@settings(max_examples=300, deadline=None)
@given(exp=st.one_of(st.none(), st.floats(), st.integers(), st.text(max_size=10)), now=NOW)
def test_jwt_exp_gives_a_finite_plan_in_the_coming_ten_years(exp: object, now: float) -> None:
    claims = json.dumps({"exp": exp}).encode()
    payload = base64.urlsafe_b64encode(claims).decode().rstrip("=")
    token = Token.from_response({"access_token": f"e30.{payload}.x"}, now=now, default_lifetime=600)
    assert token.expires_at is not None
    assert now < token.expires_at <= now + _TEN_YEARS


@settings(max_examples=100, deadline=None)
@given(
    expires_at=st.one_of(st.floats(), st.floats(min_value=-1e6, max_value=1e6)),
    issued=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
)
def test_no_expiry_a_provider_returns_makes_a_fetch_per_request(
    expires_at: float, issued: float | None
) -> None:
    clock = FakeClock()
    calls: list[int] = []

    def provider() -> Token:
        calls.append(1)
        start = clock()
        return Token(
            "at",
            expires_at=start + expires_at,
            issued_at=None if issued is None else start + issued,
        )

    manager = TokenManager(provider, clock=clock)
    for _ in range(20):
        try:
            manager.get_token()
        except TokenError:
            pass
    assert len(calls) == 1
