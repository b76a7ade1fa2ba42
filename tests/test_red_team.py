"""Red-team tests: attacks from the public documentation, against real loopback
servers, that once leaked a token or a secret.

Each server here is a raw socket server that answers exactly what the test
says (a lying token endpoint, an API that records what reached it), so that
nothing in the library's own test servers can soften the attack.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import types
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import requests

from alf_session import (
    BearerAuth,
    ClientCredentials,
    ConfigurationError,
    Token,
    TokenAdapter,
    TokenError,
    TokenManager,
    TokenSession,
)

from .helpers import CLIENT_ID, CLIENT_SECRET

ACCESS = "AT-red-team-6c1f0e"
REFRESH = "RT-red-team-93ab2d"

Handler = Callable[[bytes], bytes]


def _answer(status: int, body: Any = b"", headers: dict[str, str] | None = None) -> bytes:
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
        head += f"{name}: {value}\r\n"
    return head.encode() + b"\r\n" + body


class RawServer:
    """A loopback HTTP/1.1 server: ``handler(request_bytes)`` returns the whole
    answer; every request received is kept in ``requests``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[bytes] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self._closed = threading.Event()
        self.port: int = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(5)
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    while len(body) < length:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        body += chunk
                    request = head + b"\r\n\r\n" + body
                    self.requests.append(request)
                    self.serve_connection(conn, request)
                except OSError:
                    pass

    def serve_connection(self, conn: socket.socket, request: bytes) -> None:
        conn.sendall(self.handler(request))

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._sock.close()

    def tokens_received(self) -> list[bytes]:
        return [r for r in self.requests if ACCESS.encode() in r]


@pytest.fixture
def raw_server() -> Iterator[Callable[[Handler], RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Handler) -> RawServer:
        server = RawServer(handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _secret_spellings() -> set[str]:
    found = {ACCESS, REFRESH}
    for secret in (CLIENT_SECRET,):
        found |= {secret, quote(secret, safe=""), quote_plus(secret, safe="")}
    for pair in (
        f"{CLIENT_ID}:{CLIENT_SECRET}",
        f"{quote_plus(CLIENT_ID)}:{quote_plus(CLIENT_SECRET)}",
    ):
        found.add(base64.b64encode(pair.encode()).decode().rstrip("="))
    return found


def _reachable_secrets(root: object, needles: set[str], max_depth: int = 8) -> list[str]:
    """Paths of the strings reachable from ``root`` (attributes, items, the
    exception chain, str and repr) that hold one of ``needles``."""
    found: list[str] = []
    seen: set[int] = set()
    todo: deque[tuple[object, str, int]] = deque([(root, "exc", 0)])
    atoms = (int, float, bool, type(None), type, types.ModuleType, types.FunctionType)
    while todo and len(seen) < 100_000:
        obj, path, depth = todo.popleft()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (str, bytes, bytearray)):
            text = obj if isinstance(obj, str) else bytes(obj).decode("latin-1")
            found += [f"{path}: {n}" for n in needles if n in text]
            continue
        if isinstance(obj, atoms) or depth >= max_depth:
            continue
        children: list[tuple[str, object]] = []
        if isinstance(obj, BaseException):
            children += [("str()", str(obj)), ("repr()", repr(obj))]
            children += [(".__cause__", obj.__cause__), (".__context__", obj.__context__)]
        if isinstance(obj, dict):
            children += [(f"[{k!r}]", v) for k, v in obj.items()]
            children += [(f"<key {k!r}>", k) for k in obj]
        elif isinstance(obj, (list, tuple, set, frozenset, deque)):
            children += [(f"[{i}]", v) for i, v in enumerate(obj)]
        else:
            try:
                children += [(f".{k}", v) for k, v in vars(obj).items()]
            except TypeError:
                pass
            if isinstance(obj, requests.structures.CaseInsensitiveDict):
                children += [(f"[{k!r}]", v) for k, v in obj.items()]
        todo.extend((child, path + name, depth + 1) for name, child in children)
    return found


# -- token_hosts: the host urllib3 connects to, not the one urllib.parse reads ------------


@pytest.mark.parametrize("how", ["session", "adapter", "auth"])
def test_backslash_url_does_not_take_the_token_outside_token_hosts(
    raw_server: Callable[[Handler], RawServer], how: str
) -> None:
    """``http://evil\\@api/`` is ``api`` to ``urllib.parse`` and ``evil`` to
    urllib3 (requests makes it ``http://evil/%5C@api/``): the token must not go
    to ``evil`` because ``api`` is allowed."""
    token_server = raw_server(lambda _: _answer(200, {"access_token": ACCESS, "expires_in": 600}))
    allowed = raw_server(lambda _: _answer(200, {"ok": True}))
    evil = raw_server(lambda _: _answer(200, {"ok": True}))
    hosts = [f"127.0.0.1:{allowed.port}"]
    provider = ClientCredentials(f"{token_server.url}/token", CLIENT_ID, CLIENT_SECRET)
    session: requests.Session
    if how == "session":
        session = TokenSession(token_manager=TokenManager(provider), token_hosts=hosts)
    elif how == "adapter":
        session = requests.Session()
        session.mount("http://", TokenAdapter(TokenManager(provider), token_hosts=hosts))
    else:
        session = requests.Session()
        session.auth = BearerAuth(TokenManager(provider), token_hosts=hosts)
    with session:
        session.get(f"{allowed.url}/ok")  # the token does go where it is allowed
        assert len(allowed.tokens_received()) == 1
        for url in (
            f"http://127.0.0.1:{evil.port}\\@127.0.0.1:{allowed.port}/",
            f"http://127.0.0.1:{evil.port}\\\\@127.0.0.1:{allowed.port}/x",
            f"http://127.0.0.1:{evil.port}\\x@127.0.0.1:{allowed.port}/",
        ):
            session.get(url)
    assert len(evil.requests) == 3  # the attack reached the other server...
    assert evil.tokens_received() == []  # ...without the token


# -- the response an error carries ----------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        # A token the server did issue, refused by us for another field: the
        # body must not hand it (or its refresh token) to whoever logs the error.
        _answer(200, {"access_token": ACCESS, "refresh_token": REFRESH, "expires_in": "soon"}),
        _answer(200, {"access_token": ACCESS, "refresh_token": REFRESH, "expires_in": -5}),
        _answer(200, {"access_token": ACCESS, "token_type": 7, "expires_in": 60}),
        _answer(200, {"access_token": ACCESS, "refresh_token": 12, "expires_in": 60}),
        _answer(200, {"access_token": ACCESS, "error": "server_error"}),
        _answer(200, {"access_token": ACCESS + "\r\nX-Injected: 1", "expires_in": 60}),
        _answer(200, [ACCESS]),
        _answer(200, json.dumps(ACCESS)),
        _answer(200, f"<html>{ACCESS}</html>", {"Content-Type": "text/html"}),
        _answer(
            200,
            f"access_token={ACCESS}&expires_in=x&refresh_token={REFRESH}",
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
        # A server that echoes the credentials it was sent.
        _answer(401, {"error": "invalid_client", "error_description": f"bad {CLIENT_SECRET}"}),
        _answer(
            401,
            {"error": "invalid_client", "sent": quote_plus(CLIENT_SECRET), "id": CLIENT_SECRET},
        ),
        _answer(
            500,
            f"<pre>client_secret={quote_plus(CLIENT_SECRET)}</pre>",
            {"Content-Type": "text/html"},
        ),
        _answer(
            400,
            "Authorization: Basic "
            + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode(),
            {"Content-Type": "text/plain"},
        ),
    ],
)
def test_error_hands_out_no_token_or_secret_in_the_response_body(
    raw_server: Callable[[Handler], RawServer], answer: bytes
) -> None:
    token_server = raw_server(lambda _: answer)
    api = raw_server(lambda _: _answer(200, {"ok": True}))
    with TokenSession(
        f"{token_server.url}/token", CLIENT_ID, CLIENT_SECRET, auth_method="client_secret_post"
    ) as session:
        with pytest.raises(TokenError) as info:
            session.get(api.url)
    assert api.requests == []
    response = info.value.response
    assert response is not None
    assert ACCESS not in response.text and REFRESH not in response.text
    assert _reachable_secrets(info.value, _secret_spellings()) == []


# -- custom providers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        Token(ACCESS + "\r\nX-Injected: 1"),
        Token(ACCESS + "\n"),
        Token(ACCESS, token_type="Bearer\r\nX-Injected: 1"),
        Token(ACCESS + " extra"),
        Token(""),
    ],
)
def test_custom_provider_token_that_cannot_be_a_header_is_a_token_error(
    raw_server: Callable[[Handler], RawServer], token: Token
) -> None:
    """A Token built by hand was sent as it was: http.client refused the CR/LF
    with a ValueError (not a TokenError) quoting the header, token included."""
    api = raw_server(lambda _: _answer(200, {"ok": True}))
    with TokenSession(token_manager=TokenManager(lambda: token)) as session:
        with pytest.raises(TokenError) as info:
            session.get(api.url)
    assert api.requests == []
    assert _reachable_secrets(info.value, {ACCESS}) == []


# -- token_hosts spellings that named the right host and got no token -----------------------


@pytest.mark.parametrize("how", ["session", "adapter", "auth"])
@pytest.mark.parametrize(
    ("entry", "url"),
    [
        ("bücher.example", "http://bücher.example/"),
        ("BÜCHER.example", "http://xn--bcher-kva.example/"),
        ("\uff41\uff50\uff49.example", "http://api.example/"),  # fullwidth "api"
        ("[::1]", "http://[::1]:8080/"),
        ("[::1]:8080", "http://[::1]:8080/"),
    ],
)
def test_token_hosts_entry_matches_the_host_requests_connects_to(
    raw_server: Callable[[Handler], RawServer], how: str, entry: str, url: str
) -> None:
    """An IDNA or bracketed IPv6 entry never matched the prepared URL (which
    requests IDNA-encodes), so the API got no token and answered 401. The
    request goes through a forward proxy that records what it was sent, so no
    name has to resolve."""
    proxy = raw_server(lambda _: _answer(200, {"ok": True}))
    manager = TokenManager(lambda: ACCESS)
    session: requests.Session
    if how == "session":
        session = TokenSession(token_manager=manager, token_hosts=[entry])
    elif how == "adapter":
        session = requests.Session()
        session.mount("http://", TokenAdapter(manager, token_hosts=[entry]))
    else:
        session = requests.Session()
        session.auth = BearerAuth(manager, token_hosts=[entry])
    with session:
        session.get(url, proxies={"http": proxy.url})
        session.get("http://other.example/", proxies={"http": proxy.url})
    assert len(proxy.requests) == 2
    assert len(proxy.tokens_received()) == 1
    assert proxy.requests[0] in proxy.tokens_received()


def test_token_hosts_entry_that_is_no_host_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        TokenSession(
            token_manager=TokenManager(lambda: ACCESS), token_hosts=["\u00fc" * 70 + ".example"]
        )


# -- a 401 with an endless body --------------------------------------------------------------


def _endless_401(start: Callable[[Handler], RawServer]) -> tuple[RawServer, list[int]]:
    """An API that answers 401 and then sends 1 MiB chunks until the client
    lets go (at most 256 MiB); the list gets the chunks sent per request."""
    chunks_sent: list[int] = []
    chunk = b"A" * (1 << 20)
    api = start(lambda _: b"HTTP/1.1 401 X\r\nContent-Type: text/plain\r\n\r\n")

    def serve(conn: socket.socket, request: bytes) -> None:
        conn.sendall(api.handler(request))
        sent = 0
        try:
            for _ in range(256):
                conn.sendall(chunk)
                sent += 1
        except OSError:
            pass
        chunks_sent.append(sent)

    api.serve_connection = serve  # type: ignore[method-assign]
    return api, chunks_sent


def _assert_retried_unread(api: RawServer, token_server: RawServer, chunks_sent: list[int]) -> None:
    assert len(api.requests) == 2  # the retry was made
    assert len(token_server.requests) == 2  # with a new token
    pause = threading.Event()
    for _ in range(100):
        if len(chunks_sent) == 2:
            break
        pause.wait(0.1)
    assert len(chunks_sent) == 2
    assert max(chunks_sent) < 64  # neither body was read to its end


@pytest.mark.parametrize("how", ["session", "adapter", "auth"])
def test_401_with_an_endless_body_is_not_read_before_the_retry(
    raw_server: Callable[[Handler], RawServer], how: str
) -> None:
    """With ``stream=True`` plain requests hands a 401 back without reading its
    body; the retry read all of it first (memory and time without bound: an
    API sending 3 GB held the caller a minute and took 5.8 GB)."""
    token_server = raw_server(lambda _: _answer(200, {"access_token": ACCESS, "expires_in": 600}))
    api, chunks_sent = _endless_401(raw_server)
    manager = TokenManager(ClientCredentials(f"{token_server.url}/token", CLIENT_ID, CLIENT_SECRET))
    session: requests.Session
    if how == "session":
        session = TokenSession(token_manager=manager)
    elif how == "adapter":
        session = requests.Session()
        session.mount("http://", TokenAdapter(manager))
    else:
        session = requests.Session()
        session.auth = BearerAuth(manager)
    with session:
        response = session.get(api.url, stream=True, timeout=10)
        response.close()
    assert response.status_code == 401
    _assert_retried_unread(api, token_server, chunks_sent)


def test_aiohttp_401_with_an_endless_body_is_not_read_before_the_retry(
    raw_server: Callable[[Handler], RawServer],
) -> None:
    """aiohttp never reads a body unasked; the middleware read the whole 401
    before its retry (2 GB sent: 10 s and 3.8 GB)."""
    aiohttp = pytest.importorskip("aiohttp")
    from alf_session.aiohttp import TokenMiddleware

    token_server = raw_server(lambda _: _answer(200, {"access_token": ACCESS, "expires_in": 600}))
    api, chunks_sent = _endless_401(raw_server)
    manager = TokenManager(ClientCredentials(f"{token_server.url}/token", CLIENT_ID, CLIENT_SECRET))

    async def call() -> int:
        async with aiohttp.ClientSession(middlewares=(TokenMiddleware(manager),)) as client:
            async with client.get(api.url) as response:
                return int(response.status)

    assert asyncio.run(call()) == 401
    _assert_retried_unread(api, token_server, chunks_sent)


@pytest.mark.parametrize(
    "answer",
    [
        # Go's encoding/json writes & < > as \u0026 \u003c \u003e (Dex, Hydra, gateways).
        _answer(400, json.dumps({"message": f"bad {CLIENT_SECRET}"}).replace("&", "\\u0026")),
        _answer(
            401,
            json.dumps({"error": "invalid_client", "error_description": CLIENT_SECRET}).replace(
                "&", "\\u0026"
            ),
        ),
        # PHP's json_encode writes / as \/.
        _answer(400, json.dumps({"message": f"bad {CLIENT_SECRET}"}).replace("/", "\\/")),
        # An HTML page escapes & as &amp;.
        _answer(
            500, f"<p>{CLIENT_SECRET.replace('&', '&amp;')}</p>", {"Content-Type": "text/html"}
        ),
    ],
)
def test_secret_echoed_with_the_servers_escapes_is_masked(
    raw_server: Callable[[Handler], RawServer], answer: bytes
) -> None:
    """The body was quoted in the message (and kept in exc.response) with the
    secret under a JSON or HTML escape that the masking did not know."""
    token_server = raw_server(lambda _: answer)
    provider = ClientCredentials(
        f"{token_server.url}/token",
        CLIENT_ID,
        CLIENT_SECRET,
        retry=0,
        auth_method="client_secret_post",
    )
    with pytest.raises(TokenError) as info:
        TokenManager(provider).get_token()
    tail = CLIENT_SECRET[-12:]  # a part no escape changes
    assert tail not in str(info.value)
    assert info.value.response is not None
    assert tail not in info.value.response.text
    assert _reachable_secrets(info.value, {tail}) == []


# -- what a hostile token endpoint writes into our messages ---------------------------------


def test_server_text_in_an_error_message_has_no_control_characters(
    raw_server: Callable[[Handler], RawServer],
) -> None:
    """``error``, ``error_description`` and ``error_uri`` were quoted with their
    CR, LF and ESC: a token endpoint could forge log lines, or drive the
    terminal of whoever prints the error (``alf-session token`` does)."""
    fields = {
        "error": "invalid_scope\r\nFAKE",
        "error_description": "bad\n2026-12-02 CRITICAL root: forged\x1b[31m\x00",
        "error_uri": "https://idp.example/\r\nx",
    }
    token_server = raw_server(lambda _: _answer(400, fields))
    reason_server = raw_server(
        lambda _: (
            b"HTTP/1.1 503 Busy\x1b[2J\x1b[31m\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    )
    for server, quoted in ((token_server, "forged"), (reason_server, "Busy")):
        provider = ClientCredentials(f"{server.url}/token", CLIENT_ID, CLIENT_SECRET, retry=0)
        with pytest.raises(TokenError) as info:
            TokenManager(provider).get_token()
        message = str(info.value)
        assert quoted in message  # still quoted, on one line
        assert message.isprintable(), repr(message)
