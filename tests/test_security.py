"""Where secrets may go: transport rules for the token endpoint, and a full life
cycle (failures included) after which no secret or token is found in any log
record, repr, str or exception message."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus

import pytest

from alf_session import (
    ClientCredentials,
    ConfigurationError,
    InsecureTransportError,
    InvalidClient,
    InvalidGrant,
    PasswordCredentials,
    Token,
    TokenError,
    TokenHTTPError,
    TokenManager,
    TokenRequestError,
    TokenSession,
)
from alf_session._servers import APIServer, TokenServer

from .helpers import CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME, FakeClock

# -- transport security -------------------------------------------------------------------


class TestInsecureTransport:
    @pytest.mark.parametrize(
        "url",
        [
            "http://idp.example/oauth/token",
            "http://10.0.0.8/token",
            "http://192.168.1.1:8080/token",
            "HTTP://IDP.EXAMPLE/token",
            "http://localhost.evil.example/token",
            "http://127.0.0.1.nip.io/token",
        ],
    )
    def test_plain_http_to_a_remote_host_is_refused_at_construction(self, url: str) -> None:
        with pytest.raises(InsecureTransportError) as info:
            ClientCredentials(url, CLIENT_ID, CLIENT_SECRET)
        assert isinstance(info.value, TokenError)
        assert isinstance(info.value, ConfigurationError)
        assert "allow_insecure_http=True" in str(info.value)
        assert CLIENT_SECRET not in str(info.value)
        with pytest.raises(InsecureTransportError):
            TokenSession(url, CLIENT_ID, CLIENT_SECRET)

    def test_explicit_opt_in(self) -> None:
        provider = ClientCredentials(
            "http://idp.internal/token", CLIENT_ID, CLIENT_SECRET, allow_insecure_http=True
        )
        assert provider.token_endpoint == "http://idp.internal/token"
        session = TokenSession(
            "http://idp.internal/token", CLIENT_ID, CLIENT_SECRET, allow_insecure_http=True
        )
        session.close()

    @pytest.mark.parametrize(
        "url",
        [
            "https://idp.example/token",
            "http://127.0.0.1:8080/token",
            "http://127.9.9.9/token",
            "http://localhost/token",
            "http://LOCALHOST:9/token",
            "http://auth.localhost/token",
            "http://[::1]:8080/token",
        ],
    )
    def test_https_and_loopback_are_allowed(self, url: str) -> None:
        assert ClientCredentials(url, CLIENT_ID, CLIENT_SECRET).token_endpoint == url


# -- no secret anywhere ---------------------------------------------------------------------


class RecordingTokenServer(TokenServer):
    """A TokenServer that keeps every answer it sent, to know every token issued."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers: list[dict[str, Any]] = []

    def _grant(self, form: dict[str, str], authorization: str | None) -> tuple[int, Any]:
        status, answer = super()._grant(form, authorization)
        with self._lock:
            self.answers.append(dict(answer))
        return status, answer


@pytest.fixture
def recording_server(clock: FakeClock) -> Iterator[RecordingTokenServer]:
    server = RecordingTokenServer(CLIENT_ID, CLIENT_SECRET, users={USERNAME: PASSWORD}, clock=clock)
    server.issue_refresh_tokens = True
    server.start()
    yield server
    server.stop()


WRONG_SECRET = "wrong-secret-7c1f9e33"
WRONG_PASSWORD = "wrong-password-55e0a1"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def join_refreshers() -> None:
    for thread in threading.enumerate():
        if thread.name == "alf-session-refresh":
            thread.join(10)


def test_no_secret_or_token_in_logs_reprs_or_errors(
    recording_server: RecordingTokenServer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: every logger, urllib3's too
    server = recording_server
    api = APIServer(server)
    api.start()
    shown: list[object] = []  # everything whose repr and str must be clean
    errors: list[BaseException] = []

    def expect(cls: type[BaseException], call: Any) -> None:
        with pytest.raises(cls) as info:
            call()
        errors.append(info.value)

    try:
        # Fetch, background refresh (refresh_token grant), 401 and retry,
        # foreground refresh, a refused refresh token and the fallback grant.
        session = TokenSession(
            server.token_url,
            CLIENT_ID,
            CLIENT_SECRET,
            scope="orders",
            token_retry=0,
            clock=clock,
            leeway=10,
            refresh_ahead=0.5,
            refresh_jitter=0,
        )
        manager = session.token_manager
        shown += [session, manager, manager.provider]
        url = f"{api.base_url}/orders"
        assert session.get(url).status_code == 200
        clock.advance(2000)
        assert session.get(url).status_code == 200
        join_refreshers()
        server.revoke()
        response = session.get(url)
        assert response.status_code == 200
        shown += [response, *response.history]
        clock.advance(3600)
        assert session.get(url).status_code == 200
        refresh_token = manager.get_token().refresh_token
        clock.advance(3600)
        server.fail_next(
            400,
            {"error": "invalid_grant", "error_description": f"refresh token {refresh_token} spent"},
        )
        assert session.get(url).status_code == 200
        # A background refresh that fails (logged as a warning).
        clock.advance(2000)
        server.fail_next(
            500, f"<html><head><title>No {CLIENT_SECRET}</title></head><body>x</body></html>"
        )
        assert session.get(url).status_code == 200
        join_refreshers()
        shown += [manager.get_token(), manager.stats]
        assert server.count >= 7

        # Wrong secret, hit twice (the second time from the failure cache).
        wrong = TokenSession(server.token_url, CLIENT_ID, WRONG_SECRET, clock=clock)
        shown += [wrong, wrong.token_manager]
        expect(InvalidClient, lambda: wrong.get(url))
        expect(InvalidClient, lambda: wrong.get(url))

        # The password grant: wrong password, a server that echoes the
        # password, then a working one with refresh tokens.
        for password in (WRONG_PASSWORD, PASSWORD):
            provider = PasswordCredentials(
                server.token_url, CLIENT_ID, CLIENT_SECRET, USERNAME, password, retry=0
            )
            shown.append(provider)
            if password == WRONG_PASSWORD:
                expect(InvalidGrant, provider.fetch_token)
        server.fail_next(
            400, {"error": "invalid_grant", "error_description": f"password {PASSWORD} refused"}
        )
        expect(InvalidGrant, provider.fetch_token)
        password_manager = TokenManager(provider, clock=clock, refresh_ahead=None)
        shown += [password_manager, password_manager.get_token()]
        clock.advance(3600)
        shown.append(password_manager.get_token())

        # An HTML 500 and a plain one that echo the client secret and the form.
        plain = ClientCredentials(server.token_url, CLIENT_ID, CLIENT_SECRET, retry=0)
        server.fail_next(
            500,
            f"<html><head><title>Bad {CLIENT_SECRET}</title></head><body>{CLIENT_SECRET}</body>",
            headers={"Content-Type": "text/html"},
        )
        expect(TokenHTTPError, plain.fetch_token)
        server.fail_next(
            500,
            "could not parse grant_type=client_credentials&client_secret="
            + quote_plus(CLIENT_SECRET),
        )
        expect(TokenHTTPError, plain.fetch_token)
        server.fail_next(200, {"access_token": "at-in-a-bad-answer", "expires_in": "never"})
        expect(TokenError, plain.fetch_token)

        # Transport errors: nothing listening, and the post body option.
        for method in ("client_secret_basic", "client_secret_post"):
            down = ClientCredentials(
                f"http://127.0.0.1:{closed_port()}/token",
                CLIENT_ID,
                CLIENT_SECRET,
                retry=0,
                auth_method=method,
            )
            shown.append(down)
            expect(TokenRequestError, TokenManager(down, clock=clock).get_token)
    finally:
        api.stop()

    issued = [
        value
        for answer in server.answers
        for key in ("access_token", "refresh_token")
        if isinstance(value := answer.get(key), str)
    ]
    assert len(issued) >= 10  # the life cycle above really issued tokens
    secrets = [CLIENT_SECRET, WRONG_SECRET, PASSWORD, WRONG_PASSWORD, *issued]
    secrets.append("at-in-a-bad-answer")

    texts: list[tuple[str, str]] = []
    for record in caplog.records:
        texts.append((f"log record {record.name}", record.getMessage()))
    texts.append(("formatted log", caplog.text))
    for obj in shown:
        texts += [(f"repr of {type(obj).__name__}", repr(obj)), (f"str of {obj!r}", str(obj))]
    for error in errors:
        chain: BaseException | None = error
        while chain is not None:
            texts += [
                (f"{type(chain).__name__} message", str(chain)),
                (f"{type(chain).__name__} repr", repr(chain)),
            ]
            chain = chain.__cause__ or chain.__context__
    assert len(errors) == 9
    assert any("refresh" in r.getMessage() for r in caplog.records)
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    for where, text in texts:
        for secret in secrets:
            assert secret not in text, f"a secret in the {where}: {text[:300]!r}"
            assert quote_plus(secret) not in text, f"a form-encoded secret in the {where}"


def test_token_request_does_not_follow_a_redirect(token_server: TokenServer) -> None:
    # The request carries the client secret: a 3xx must not send it elsewhere.
    with TokenServer(CLIENT_ID, CLIENT_SECRET) as elsewhere:
        token_server.fail_next(307, "", headers={"Location": elsewhere.token_url})
        provider = ClientCredentials(token_server.token_url, CLIENT_ID, CLIENT_SECRET, retry=0)
        with pytest.raises(TokenHTTPError, match="not followed"):
            provider.fetch_token()
        assert elsewhere.count == 0


def test_token_never_sent_to_a_host_outside_token_hosts(
    make_session: Any, token_server: TokenServer, api_server: APIServer
) -> None:
    session = make_session(token_hosts=["api.example.com"])
    response = session.get(f"{api_server.base_url}/x")
    assert response.status_code == 401
    assert api_server.seen == [None]
    assert token_server.count == 0


def test_token_value_has_no_public_str() -> None:
    token = Token("at-visible-nowhere", refresh_token="rt-visible-nowhere")
    for text in (str(token), repr(token), format(token), "%s" % (token,)):  # noqa: UP031
        assert "visible-nowhere" not in text
    assert "at-visible-nowhere" in token.header_value  # where it belongs
