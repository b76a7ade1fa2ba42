"""Discovery of the token endpoint from ``issuer=``, against a real metadata server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from alf_session import DiscoveryError, InsecureTransportError, ServerMetadata, discover
from alf_session._servers import TokenServer
from alf_session.discovery import clear_cache, metadata_urls

from .helpers import CLIENT_ID, CLIENT_SECRET, FakeClock


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def idp(clock: FakeClock) -> Iterator[TokenServer]:
    with TokenServer(CLIENT_ID, CLIENT_SECRET, clock=clock) as server:
        yield server


def test_metadata_urls_insert_the_path_for_rfc8414() -> None:
    assert metadata_urls("https://idp.example") == [
        "https://idp.example/.well-known/openid-configuration",
        "https://idp.example/.well-known/oauth-authorization-server",
    ]
    assert metadata_urls("https://idp.example/tenant/v2/") == [
        "https://idp.example/tenant/v2/.well-known/openid-configuration",
        "https://idp.example/.well-known/oauth-authorization-server/tenant/v2",
    ]


def test_openid_configuration_first(idp: TokenServer) -> None:
    metadata = discover(idp.issuer)
    assert isinstance(metadata, ServerMetadata)
    assert metadata.token_endpoint == idp.token_url
    assert metadata.url.endswith("/.well-known/openid-configuration")
    assert metadata.token_endpoint_auth_methods_supported is not None
    assert "private_key_jwt" in metadata.token_endpoint_auth_methods_supported
    assert idp.metadata_requests == 1


def test_rfc8414_with_path_insertion(idp: TokenServer) -> None:
    idp.issuer_path = "/realms/orders"
    idp.metadata_at = ("oauth",)
    metadata = discover(idp.issuer)
    assert metadata.url == f"{idp.base_url}/.well-known/oauth-authorization-server/realms/orders"
    assert metadata.issuer == idp.issuer
    assert idp.metadata_requests == 2  # the OIDC place answered 404 first


def test_fetched_once_then_cached(idp: TokenServer) -> None:
    results = []
    for _ in range(5):
        results.append(discover(idp.issuer))
    assert idp.metadata_requests == 1
    assert all(r is results[0] for r in results)
    discover(idp.issuer, use_cache=False)
    assert idp.metadata_requests == 2


def test_issuer_must_be_equal(idp: TokenServer) -> None:
    idp.metadata = {"issuer": "https://attacker.example"}
    with pytest.raises(DiscoveryError, match=r"RFC 8414 §3\.3") as info:
        discover(idp.issuer)
    assert "https://attacker.example" in str(info.value)


def test_trailing_slash_mismatch_says_what_to_pass(idp: TokenServer) -> None:
    idp.issuer_path = "/"
    with pytest.raises(DiscoveryError, match="trailing slash"):
        discover(idp.base_url)
    assert discover(idp.base_url + "/").issuer == idp.base_url + "/"


@pytest.mark.parametrize(
    "endpoint",
    ["http://idp.example/token", "ftp://idp.example/token", None, 42, "https://u:p@idp.example/t"],
)
def test_discovered_endpoints_obey_the_transport_rule(idp: TokenServer, endpoint: Any) -> None:
    idp.metadata = {"token_endpoint": endpoint}
    with pytest.raises(DiscoveryError) as info:
        discover(idp.issuer)
    if endpoint == "http://idp.example/token":
        assert "insecure endpoint" in str(info.value)
    assert "u:p@" not in str(info.value) or "credentials" in str(info.value)


def test_insecure_mtls_alias_is_refused(idp: TokenServer) -> None:
    idp.metadata = {"mtls_endpoint_aliases": {"token_endpoint": "http://mtls.example/token"}}
    with pytest.raises(DiscoveryError, match="insecure endpoint"):
        discover(idp.issuer)
    idp.metadata = {"mtls_endpoint_aliases": {"token_endpoint": "https://mtls.example/token"}}
    metadata = discover(idp.issuer)
    assert metadata.token_endpoint_for(mtls=True) == "https://mtls.example/token"
    assert metadata.token_endpoint_for(mtls=False) == idp.token_url


def test_no_document_anywhere(idp: TokenServer) -> None:
    idp.metadata_at = ()
    with pytest.raises(DiscoveryError) as info:
        discover(idp.issuer)
    message = str(info.value)
    assert "openid-configuration answered HTTP 404" in message
    assert "oauth-authorization-server answered HTTP 404" in message
    assert "give token_endpoint instead" in message


def test_issuer_transport_rule() -> None:
    with pytest.raises(InsecureTransportError):
        discover("http://idp.example")
    with pytest.raises(DiscoveryError.__mro__[1]):  # TokenError
        discover("https://idp.example/?tenant=1")


class _Silent:
    """A server that accepts connections and sends a status line, then nothing."""

    def __init__(self, payload: bytes = b"") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.payload = payload
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            # Read the whole request head first: closing with unread bytes
            # resets the connection, and the client sees a ConnectionError
            # instead of the payload (it did, under load).
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received += chunk
            if self.payload:
                conn.sendall(self.payload)
                conn.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_a_silent_server_is_bounded_by_the_timeout() -> None:
    silent = _Silent()
    try:
        with pytest.raises(DiscoveryError, match="could not fetch metadata"):
            discover(silent.url, timeout=0.5)
    finally:
        silent.close()


def test_an_oversized_document_is_refused() -> None:
    body = b"{" + b" " * (1024 * 1024 + 10) + b"}"
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    server = _Silent(head + body)
    try:
        with pytest.raises(DiscoveryError, match="over 1024 KiB"):
            discover(server.url, timeout=5)
    finally:
        server.close()


def test_redirect_is_not_followed(idp: TokenServer) -> None:
    head = b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n"
    server = _Silent(head % (idp.base_url.encode() + b"/.well-known/openid-configuration"))
    try:
        with pytest.raises(DiscoveryError, match="a redirect, not followed"):
            discover(server.url, timeout=5)
    finally:
        server.close()
    assert idp.metadata_requests == 0
