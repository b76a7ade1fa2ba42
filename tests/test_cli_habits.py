"""The command line keeps the habits of curl and httpie.

``-i/--include``, ``--cacert`` and ``-k/--insecure`` against a real HTTPS
API on loopback, ``--retries`` against an API that answers 503, a trailing
newline on a terminal (a real pty), a malformed URL as a usage error before
any token request, errors that point to the help of the command used, and
``-v`` saying where the token came from.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import pty
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from alf_session import TokenManager
from alf_session.testing import APIServer, StaticTokenProvider, TokenServer

from .test_cli import cli, creds, one_line

# -- servers ------------------------------------------------------------------------


def _make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 and localhost signed by it (PEM files)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alf-session test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


class TLSAPIServer(APIServer):
    """The loopback API, over HTTPS with a certificate of a private CA."""

    def __init__(self, tokens: TokenServer, cert: Path, key: Path) -> None:
        super().__init__(tokens)
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(cert, key)

    def start(self, port: int = 0) -> None:
        super().start(port)
        httpd = self._httpd
        assert httpd is not None
        # Same file descriptor, so the running serve_forever accepts TLS from here on.
        httpd.socket = self._context.wrap_socket(httpd.socket, server_side=True)

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


@pytest.fixture
def tls_api(alf_token_server: TokenServer, tmp_path: Path) -> Iterator[tuple[TLSAPIServer, Path]]:
    ca, cert, key = _make_certificates(tmp_path)
    server = TLSAPIServer(alf_token_server, cert, key)
    server.start()
    try:
        yield server, ca
    finally:
        server.stop()


class FlakyAPI:
    """An API that answers 503 to its first ``failures`` requests, then 200."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[str] = []
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                flaky.calls.append(self.command)
                failing = len(flaky.calls) <= flaky.failures
                body = b"busy" if failing else b"done"
                self.send_response(503 if failing else 200)
                if failing:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/work"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def flaky_api() -> Iterator[Any]:
    made: list[FlakyAPI] = []

    def make(failures: int) -> FlakyAPI:
        made.append(FlakyAPI(failures))
        return made[-1]

    yield make
    for api in made:
        api.close()


# -- -i / --include -----------------------------------------------------------------


def test_include_prints_the_status_line_and_headers_then_the_body(
    alf_token_server: TokenServer, alf_api_server: APIServer
) -> None:
    result = cli(
        "request", "-i", "GET", f"{alf_api_server.base_url}/orders", env=creds(alf_token_server)
    )
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition("\n\n")
    lines = head.splitlines()
    assert lines[0] == "HTTP/1.1 200 OK"
    assert "Content-Type: application/json" in lines[1:]
    assert all(": " in line for line in lines[1:])
    assert body.startswith('{"ok": true, "path": "/orders"')
    assert result.stderr == ""  # the status line went to stdout instead


def test_include_shows_an_error_answer_and_exits_1(
    alf_token_server: TokenServer, alf_api_server: APIServer
) -> None:
    result = cli(
        "request", "--include", "GET", f"{alf_api_server.base_url}/x",
        "-H", "Authorization: Bearer nope", env=creds(alf_token_server),
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout.startswith("HTTP/1.1 401 Unauthorized\n")
    assert "WWW-Authenticate: Bearer" in result.stdout
    assert alf_token_server.count == 0  # the caller's header: no token asked for


# -- --cacert and -k ------------------------------------------------------------------


def test_an_api_with_an_unknown_ca_fails_and_says_what_to_do(
    alf_token_server: TokenServer, tls_api: tuple[TLSAPIServer, Path]
) -> None:
    api, _ = tls_api
    result = cli("request", "GET", f"{api.base_url}/orders", env=creds(alf_token_server))
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "could not verify" in line
    assert "--cacert" in line
    assert api.calls == 0  # no request (and so no token) went over the failed handshake


def test_cacert_trusts_the_given_ca(
    alf_token_server: TokenServer, tls_api: tuple[TLSAPIServer, Path]
) -> None:
    api, ca = tls_api
    result = cli(
        "request", "--cacert", str(ca), "GET", f"{api.base_url}/orders",
        env=creds(alf_token_server),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "HTTP 200 OK"
    assert api.calls == 1
    sent = api.seen[0]
    assert sent is not None
    assert alf_token_server.check(sent.removeprefix("Bearer ")) is None


def test_insecure_skips_verification_and_says_so_once(
    alf_token_server: TokenServer, tls_api: tuple[TLSAPIServer, Path]
) -> None:
    api, _ = tls_api
    result = cli("request", "-k", "GET", f"{api.base_url}/orders", env=creds(alf_token_server))
    assert result.returncode == 0, result.stderr
    warning, status = result.stderr.strip().splitlines()
    assert warning.startswith("python -m alf_session: warning: --insecure")
    assert status == "HTTP 200 OK"
    assert "InsecureRequestWarning" not in result.stderr
    assert api.calls == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--cacert", "ca.pem", "-k"), "not allowed with argument"),
        (("--cacert", "/nonexistent/ca.pem"), "--cacert /nonexistent/ca.pem: no such file"),
    ],
)
def test_tls_option_mistakes_are_usage_errors(
    args: tuple[str, ...], message: str, alf_token_server: TokenServer
) -> None:
    result = cli("request", *args, "GET", "https://127.0.0.1:9/", env=creds(alf_token_server))
    assert result.returncode == 2
    assert message in one_line(result.stderr)
    assert alf_token_server.count == 0


# -- --retries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "failures", "retries", "status", "calls"),
    [
        ("GET", 1, 0, 503, 1),  # the default: no retry
        ("GET", 1, 1, 200, 2),
        ("GET", 2, 1, 503, 2),  # out of retries: the last answer is printed
        ("POST", 1, 3, 503, 1),  # a POST that reached the server is not sent twice
    ],
)
def test_retries_transient_answers(
    method: str,
    failures: int,
    retries: int,
    status: int,
    calls: int,
    alf_token_server: TokenServer,
    flaky_api: Any,
) -> None:
    api = flaky_api(failures)
    result = cli("request", "--retries", str(retries), method, api.url, env=creds(alf_token_server))
    assert api.calls == [method] * calls
    assert result.stderr.strip().startswith(f"HTTP {status}")
    assert result.returncode == (0 if status == 200 else 1)
    assert result.stdout == ("done" if status == 200 else "busy")
    assert alf_token_server.count == 1


def test_retries_is_bounded(alf_token_server: TokenServer) -> None:
    result = cli("request", "--retries", "11", "GET", "http://127.0.0.1:9/")
    assert result.returncode == 2
    assert "not between 0 and 10" in one_line(result.stderr)


# -- a trailing newline on a terminal ---------------------------------------------------


def _run_on_a_terminal(*args: str, env: dict[str, str]) -> bytes:
    """Run the command with stdout on a pty (as in a terminal); what it printed there."""
    primary, secondary = pty.openpty()
    base = {k: v for k, v in os.environ.items() if not k.startswith("ALF_")}
    base["NO_PROXY"] = "127.0.0.1"
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "alf_session", *args],
            stdout=secondary,
            stderr=subprocess.DEVNULL,
            env={**base, **env},
        )
        os.close(secondary)
        output = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(timeout=60) == 0
    finally:
        os.close(primary)
    return output.replace(b"\r\n", b"\n")  # the pty's line discipline


def test_a_body_without_a_newline_gets_one_on_a_terminal_only(
    alf_token_server: TokenServer, alf_api_server: APIServer
) -> None:
    url = f"{alf_api_server.base_url}/orders"
    on_terminal = _run_on_a_terminal("request", "GET", url, env=creds(alf_token_server))
    assert on_terminal.endswith(b'"body_length": 0}\n')
    piped = cli("request", "GET", url, env=creds(alf_token_server))
    assert piped.stdout.endswith('"body_length": 0}')  # byte for byte what the API sent


# -- malformed URLs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("api.example.com/orders", "is not an http:// or https:// URL"),
        ("ftp://api.example.com/orders", "is not an http:// or https:// URL"),
        ("http:/api.example.com", "is not an http:// or https:// URL"),
        ("http://", "is not a valid URL"),
        ("http:///orders", "is not a valid URL"),
        ("http://api example.com/", "is not a valid URL"),
        ("http://127.0.0.1:99999/", "is not a valid URL"),
        ("http://127.0.0.1:port/", "is not a valid URL"),
        ("http://[::1/", "is not a valid URL"),
    ],
)
def test_a_malformed_url_is_a_usage_error_before_any_token_request(
    url: str, message: str, alf_token_server: TokenServer
) -> None:
    result = cli("request", "GET", url, env=creds(alf_token_server))
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert message in line
    assert line.endswith("(see 'python -m alf_session request --help')")
    assert alf_token_server.count == 0


# -- errors point to the command's help ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "help_of"),
    [
        (("token", "--bogus"), "token"),
        (("token", "--show-refresh-token"), "token"),
        (("request", "GET"), "request"),
        (("request", "GET", "http://127.0.0.1:9/", "--json", "{"), "request"),
        (("demo", "--workers", "99"), "demo"),
        (("bogus",), None),
    ],
)
def test_usage_errors_point_to_the_help_of_the_command_used(
    args: tuple[str, ...], help_of: str | None, alf_token_server: TokenServer
) -> None:
    result = cli(*args, env=creds(alf_token_server))
    assert result.returncode == 2
    where = "python -m alf_session" + (f" {help_of}" if help_of else "")
    assert one_line(result.stderr).endswith(f"(see '{where} --help')")


def test_missing_credentials_point_to_the_help_of_the_command() -> None:
    line = one_line(cli("token").stderr)
    assert line.endswith("(see 'python -m alf_session token --help')")


# -- -v: where the token came from --------------------------------------------------------


def test_verbose_says_the_token_came_from_the_endpoint_then_the_storage(
    alf_token_server: TokenServer, alf_api_server: APIServer, tmp_path: Path
) -> None:
    env = creds(alf_token_server, ALF_STORAGE=(tmp_path / "tokens").as_uri())
    first = cli("-v", "token", env=env)
    assert first.returncode == 0, first.stderr
    assert f"came from the token endpoint {alf_token_server.token_url}" in first.stderr
    second = cli("request", "-v", "GET", f"{alf_api_server.base_url}/orders", env=env)
    assert second.returncode == 0, second.stderr
    assert "came from the storage FileStorage(" in second.stderr
    assert alf_token_server.count == 1
    token = first.stdout.strip()
    for output in (first.stderr, second.stderr):
        assert token not in output
        assert alf_token_server.client_secret not in output


def test_verbose_says_a_token_came_from_memory(caplog: pytest.LogCaptureFixture) -> None:
    from alf_session.cli import _obtain

    manager = TokenManager(StaticTokenProvider("t0k3n-value"))
    with caplog.at_level(logging.INFO, logger="alf_session.cli"):
        first = _obtain(manager, refresh=False)
        second = _obtain(manager, refresh=False)
    assert first == second
    sources = [r.getMessage().split(" came from ")[1].split(";")[0] for r in caplog.records]
    assert sources == ["the token endpoint", "memory"]  # a custom provider has no URL
    assert "t0k3n-value" not in caplog.text
