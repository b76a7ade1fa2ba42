"""Providers: the token request on the wire, the answers servers give, retries and timeouts.

Behaviour runs against the real loopback ``token_server``; requests-mock is
used only where the exact bytes on the wire are the point.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests_mock
from urllib3 import HTTPResponse
from urllib3.util.retry import Retry

from alf_session import (
    CallableProvider,
    ClientCredentials,
    ConfigurationError,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTokenResponse,
    OAuthError,
    PasswordCredentials,
    Token,
    TokenError,
    TokenHTTPError,
    TokenRequestError,
    TokenSession,
    UnauthorizedClient,
    UnsupportedGrantType,
    default_retry,
)
from alf_session._servers import APIServer, TokenServer
from alf_session.providers import as_provider

from .helpers import CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME, FakeClock

IDP = "https://idp.example/oauth/token"
# CLIENT_ID and CLIENT_SECRET form-url-encoded (RFC 6749 §2.3.1, Appendix B),
# written out by hand rather than computed the way the code under test does it.
ENCODED_ID = "svc%3Aorders+api"
ENCODED_SECRET = "s3cr%2Bt%2Fwith%3Aodd%26chars%3D%2520-7f1c9a2be04d"
TOKEN_JSON = {"access_token": "at-1", "token_type": "bearer", "expires_in": 300}


# -- the wire (requests-mock) -------------------------------------------------


class TestWireFormat:
    def test_client_secret_basic_form_url_encodes_id_and_secret(self) -> None:
        provider = ClientCredentials(IDP, CLIENT_ID, CLIENT_SECRET)
        with requests_mock.Mocker() as mock:
            mock.post(IDP, json=TOKEN_JSON)
            token = provider.fetch_token()
        sent = mock.last_request
        expected = base64.b64encode(f"{ENCODED_ID}:{ENCODED_SECRET}".encode()).decode()
        assert sent.headers["Authorization"] == f"Basic {expected}"
        assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert sent.headers["Accept"] == "application/json"
        assert sent.method == "POST"
        assert sent.body == "grant_type=client_credentials"
        assert token.access_token == "at-1"
        assert token.token_type == "Bearer"

    def test_exact_form_body_with_scope_list_audience_and_extra_params(self) -> None:
        provider = ClientCredentials(
            IDP,
            CLIENT_ID,
            CLIENT_SECRET,
            scope=["orders:read", "orders:write"],
            audience="https://api.example/",
            extra_params={"resource": "r&d"},
        )
        with requests_mock.Mocker() as mock:
            mock.post(IDP, json=TOKEN_JSON)
            provider.fetch_token()
        assert mock.last_request.body == (
            "grant_type=client_credentials&scope=orders%3Aread+orders%3Awrite"
            "&audience=https%3A%2F%2Fapi.example%2F&resource=r%26d"
        )

    def test_client_secret_post_puts_credentials_in_the_body_only(self) -> None:
        provider = ClientCredentials(
            IDP, CLIENT_ID, CLIENT_SECRET, scope="a b", auth_method="client_secret_post"
        )
        with requests_mock.Mocker() as mock:
            mock.post(IDP, json=TOKEN_JSON)
            provider.fetch_token()
        sent = mock.last_request
        assert "Authorization" not in sent.headers
        assert parse_qs(sent.body, strict_parsing=True) == {
            "grant_type": ["client_credentials"],
            "scope": ["a b"],
            "client_id": [CLIENT_ID],
            "client_secret": [CLIENT_SECRET],
        }

    def test_public_client_sends_client_id_without_secret(self) -> None:
        provider = ClientCredentials(IDP, CLIENT_ID, None, auth_method="none")
        with requests_mock.Mocker() as mock:
            mock.post(IDP, json=TOKEN_JSON)
            provider.fetch_token()
        assert "Authorization" not in mock.last_request.headers
        assert parse_qs(mock.last_request.body) == {
            "grant_type": ["client_credentials"],
            "client_id": [CLIENT_ID],
        }

    def test_password_grant_body(self) -> None:
        provider = PasswordCredentials(
            IDP, CLIENT_ID, CLIENT_SECRET, USERNAME, PASSWORD, scope="profile"
        )
        with requests_mock.Mocker() as mock:
            mock.post(IDP, json=TOKEN_JSON)
            provider.fetch_token()
        assert parse_qs(mock.last_request.body) == {
            "grant_type": ["password"],
            "username": [USERNAME],
            "password": [PASSWORD],
            "scope": ["profile"],
        }

    def test_refresh_grant_body_and_kept_refresh_token(self) -> None:
        provider = ClientCredentials(IDP, CLIENT_ID, CLIENT_SECRET, scope="s")
        with requests_mock.Mocker() as mock:
            mock.post(IDP, json=TOKEN_JSON)  # no refresh_token in the answer
            new = provider.refresh(Token("old", refresh_token="rt-123"))
        assert parse_qs(mock.last_request.body) == {
            "grant_type": ["refresh_token"],
            "refresh_token": ["rt-123"],
            "scope": ["s"],
        }
        assert new.access_token == "at-1"
        assert new.refresh_token == "rt-123"

    def test_refresh_needs_a_refresh_token(self) -> None:
        provider = ClientCredentials(IDP, CLIENT_ID, CLIENT_SECRET)
        with pytest.raises(ValueError, match="refresh_token"):
            provider.refresh(Token("old"))

    def test_form_encoded_response_is_read(self) -> None:
        # GitHub and some older servers answer application/x-www-form-urlencoded.
        provider = ClientCredentials(IDP, CLIENT_ID, CLIENT_SECRET)
        with requests_mock.Mocker() as mock:
            mock.post(
                IDP,
                text="access_token=gho_abc&token_type=bearer&scope=repo",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            token = provider.fetch_token()
        assert (token.access_token, token.token_type, token.scope) == ("gho_abc", "Bearer", "repo")

    def test_netrc_credentials_never_reach_the_token_request(
        self, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        netrc = tmp_path / "netrc"
        netrc.write_text("machine idp.example login netrc-user password netrc-pass\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        provider = ClientCredentials(
            IDP, CLIENT_ID, CLIENT_SECRET, auth_method="client_secret_post"
        )
        with requests_mock.Mocker() as mock:
            mock.post(IDP, json=TOKEN_JSON)
            provider.fetch_token()
        assert "Authorization" not in mock.last_request.headers


# -- a real token server --------------------------------------------------------


class TestAgainstTokenServer:
    def test_client_credentials_basic(
        self, token_server: TokenServer, make_provider: Callable[..., ClientCredentials]
    ) -> None:
        token = make_provider(scope="read").fetch_token()
        assert token_server.check(token.access_token) is None
        assert token.scope == "read"
        assert token.expires_at is not None
        assert token_server.count == 1
        assert token_server.requests[0].grant_type == "client_credentials"
        assert token_server.requests[0].headers["Authorization"].startswith("Basic ")

    def test_client_credentials_post(
        self, token_server: TokenServer, make_provider: Callable[..., ClientCredentials]
    ) -> None:
        token = make_provider(auth_method="client_secret_post").fetch_token()
        assert token_server.check(token.access_token) is None
        assert "Authorization" not in token_server.requests[0].headers
        assert token_server.requests[0].form["client_secret"] == CLIENT_SECRET

    def test_expires_in_counted_from_the_providers_clock(
        self, token_server: TokenServer, clock: FakeClock
    ) -> None:
        token_server.expires_in = 120
        provider = ClientCredentials(token_server.token_url, CLIENT_ID, CLIENT_SECRET, clock=clock)
        clock.advance(1000)
        token = provider.fetch_token()
        assert token.issued_at == clock()
        assert token.expires_at == clock() + 120

    def test_password_grant_and_refresh(self, token_server: TokenServer) -> None:
        provider = PasswordCredentials(
            token_server.token_url, CLIENT_ID, CLIENT_SECRET, USERNAME, PASSWORD
        )
        token = provider.fetch_token()
        assert token.refresh_token is not None
        renewed = provider.refresh(token)
        assert renewed != token
        assert token_server.check(renewed.access_token) is None
        assert [r.grant_type for r in token_server.requests] == ["password", "refresh_token"]
        assert token_server.requests[1].form["refresh_token"] == token.refresh_token

    def test_wrong_password_is_invalid_grant(self, token_server: TokenServer) -> None:
        provider = PasswordCredentials(
            token_server.token_url, CLIENT_ID, CLIENT_SECRET, USERNAME, "wrong-password"
        )
        with pytest.raises(InvalidGrant) as info:
            provider.fetch_token()
        assert info.value.error == "invalid_grant"
        assert "wrong-password" not in str(info.value)

    def test_password_credentials_repr_and_cache_key(self, token_server: TokenServer) -> None:
        alice = PasswordCredentials(token_server.token_url, "c", "s", "alice", "pw-alice")
        bob = PasswordCredentials(token_server.token_url, "c", "s", "bob", "pw-bob")
        assert "pw-alice" not in repr(alice)
        assert "alice" in repr(alice)
        assert alice.cache_key != bob.cache_key

    def test_wrong_secret_is_invalid_client(
        self, token_server: TokenServer, make_provider: Callable[..., ClientCredentials]
    ) -> None:
        with pytest.raises(InvalidClient) as info:
            make_provider(client_secret="wrong-secret").fetch_token()
        err = info.value
        assert err.error == "invalid_client"
        assert err.error_description == "Client authentication failed"
        assert err.response is not None
        assert err.response.status_code == 401
        assert "Check client_id, the credential (client_secret" in str(err)
        assert token_server.token_url in str(err)
        assert token_server.count == 1  # a 401 from the token endpoint is not retried

    def test_400_invalid_scope_is_invalid_scope_not_http_error(
        self, token_server: TokenServer, make_provider: Callable[..., ClientCredentials]
    ) -> None:
        with pytest.raises(InvalidScope) as info:
            make_provider(scope="forbidden").fetch_token()
        assert not isinstance(info.value, TokenHTTPError)
        assert info.value.error_description == "scope not allowed"
        assert info.value.response is not None
        assert info.value.response.status_code == 400

    @pytest.mark.parametrize(
        ("code", "cls", "status"),
        [
            ("invalid_request", InvalidRequest, 400),
            ("invalid_client", InvalidClient, 401),
            ("invalid_grant", InvalidGrant, 400),
            ("unauthorized_client", UnauthorizedClient, 400),
            ("unsupported_grant_type", UnsupportedGrantType, 400),
            ("invalid_scope", InvalidScope, 400),
            ("invalid_scope", InvalidScope, 200),  # a 200 that carries "error"
            ("invalid_client", InvalidClient, 200),
        ],
    )
    def test_each_rfc6749_error_code_has_its_class(
        self,
        token_server: TokenServer,
        make_provider: Callable[..., ClientCredentials],
        code: str,
        cls: type[OAuthError],
        status: int,
    ) -> None:
        token_server.fail_next(
            status,
            {"error": code, "error_description": "told you so", "error_uri": "https://doc/e"},
        )
        with pytest.raises(OAuthError) as info:
            make_provider().fetch_token()
        err = info.value
        assert type(err) is cls
        assert (err.error, err.error_description, err.error_uri) == (
            code,
            "told you so",
            "https://doc/e",
        )
        assert code in str(err)
        assert "told you so" in str(err)
        assert cls.hint in str(err)
        assert token_server.count == 1

    def test_unknown_error_code_is_plain_oauth_error(
        self, token_server: TokenServer, make_provider: Callable[..., ClientCredentials]
    ) -> None:
        token_server.fail_next(400, {"error": "access_denied"})
        with pytest.raises(OAuthError) as info:
            make_provider().fetch_token()
        assert type(info.value) is OAuthError
        assert info.value.error == "access_denied"
        assert info.value.error_description is None

    @pytest.mark.parametrize(
        ("status", "body", "headers", "cls", "words"),
        [
            (
                500,
                "<!DOCTYPE html><html><head><title>Internal Server Error</title></head>"
                "<body>boom</body></html>",
                {"Content-Type": "text/html"},
                TokenHTTPError,
                ["HTTP 500", "an HTML page titled 'Internal Server Error'"],
            ),
            (
                200,
                "<html><body>Please log in</body></html>",
                {"Content-Type": "text/html"},
                InvalidTokenResponse,
                ["HTTP 200", "not JSON", "is the URL the token endpoint?"],
            ),
            (
                200,
                {"token_type": "Bearer", "expires_in": 60},
                {},
                InvalidTokenResponse,
                ["no usable 'access_token'", "expires_in, token_type"],
            ),
            (
                200,
                {"access_token": "at-nonnumeric", "expires_in": "one hour"},
                {},
                InvalidTokenResponse,
                ["non-numeric 'expires_in'", "'one hour'"],
            ),
            (200, "", {}, InvalidTokenResponse, ["an empty body"]),
            (500, "", {}, TokenHTTPError, ["HTTP 500", "empty body"]),
            (502, "upstream down", {}, TokenHTTPError, ["HTTP 502", "'upstream down'"]),
            (200, "[1, 2]", {"Content-Type": "application/json"}, InvalidTokenResponse, ["array"]),
            (
                302,
                "",
                {"Location": "https://elsewhere.example/token"},
                TokenHTTPError,
                ["HTTP 302", "redirect to 'https://elsewhere.example/token'", "not followed"],
            ),
        ],
    )
    def test_bad_answers_are_token_errors_with_clear_messages(
        self,
        token_server: TokenServer,
        make_provider: Callable[..., ClientCredentials],
        status: int,
        body: Any,
        headers: dict[str, str],
        cls: type[TokenError],
        words: list[str],
    ) -> None:
        token_server.fail_next(status, body, headers=headers)
        with pytest.raises(TokenError) as info:
            make_provider(retry=0).fetch_token()
        assert type(info.value) is cls
        for word in words:
            assert word in str(info.value)
        assert token_server.token_url in str(info.value)
        assert info.value.response is not None
        assert info.value.response.status_code == status
        assert token_server.count == 1
        assert "at-nonnumeric" not in str(info.value)

    def test_oversized_body_is_refused(
        self, token_server: TokenServer, make_provider: Callable[..., ClientCredentials]
    ) -> None:
        token_server.fail_next(200, b"x" * (1024 * 1024 + 10))
        with pytest.raises(TokenHTTPError, match="over 1024 KiB"):
            make_provider(retry=0).fetch_token()

    def test_error_body_quote_is_bounded_and_redacted(
        self, token_server: TokenServer, make_provider: Callable[..., ClientCredentials]
    ) -> None:
        token_server.fail_next(500, f"echo of the request: client_secret={CLIENT_SECRET} " * 20)
        with pytest.raises(TokenHTTPError) as info:
            make_provider(retry=0).fetch_token()
        message = str(info.value)
        assert CLIENT_SECRET not in message
        assert "***" in message
        assert len(message) < 400


# -- retries and timeouts -----------------------------------------------------------


class TestRetry:
    def test_default_retry_retries_503_then_succeeds(
        self, token_server: TokenServer, make_provider: Callable[..., ClientCredentials]
    ) -> None:
        token_server.fail_next(503, "busy")
        token = make_provider().fetch_token()
        assert token_server.check(token.access_token) is None
        assert token_server.count == 2

    def test_user_retry_without_allowed_methods_still_retries_the_post(
        self, token_server: TokenServer, make_provider: Callable[..., ClientCredentials]
    ) -> None:
        # The alf README's Retry, minus the backoff: urllib3 alone would not
        # retry a POST with it, because POST is not in its default allowed_methods.
        retry = Retry(total=5, status_forcelist=[500], backoff_factor=0)
        assert "POST" not in (retry.allowed_methods or ())
        token_server.fail_next(500, "oops", times=3)
        token = make_provider(retry=retry).fetch_token()
        assert token_server.check(token.access_token) is None
        assert token_server.count == 4

    def test_exhausted_retry_hands_back_the_last_answer(
        self, token_server: TokenServer, make_provider: Callable[..., ClientCredentials]
    ) -> None:
        token_server.fail_next(500, "oops", times=5)
        with pytest.raises(TokenHTTPError) as info:
            make_provider(retry=Retry(total=2, status_forcelist=[500])).fetch_token()
        assert info.value.status_code == 500
        assert token_server.count == 3

    def test_retry_zero_does_not_retry(
        self, token_server: TokenServer, make_provider: Callable[..., ClientCredentials]
    ) -> None:
        token_server.fail_next(503, "busy")
        with pytest.raises(TokenHTTPError):
            make_provider(retry=0).fetch_token()
        assert token_server.count == 1

    def test_oauth_errors_are_not_retried(
        self, token_server: TokenServer, make_provider: Callable[..., ClientCredentials]
    ) -> None:
        with pytest.raises(InvalidClient):
            make_provider(client_secret="nope").fetch_token()
        assert token_server.count == 1

    def test_retry_after_is_honoured(
        self, token_server: TokenServer, make_provider: Callable[..., ClientCredentials]
    ) -> None:
        token_server.fail_next(429, "slow down", headers={"Retry-After": "1"})
        make_provider().fetch_token()
        first, second = token_server.requests
        # A lower bound only: urllib3 slept at least as long as the server asked.
        assert second.time - first.time >= 0.9

    def test_retry_after_is_capped(self) -> None:
        asked = HTTPResponse(body=b"", headers={"Retry-After": "3600"}, status=503)
        assert default_retry().get_retry_after(asked) == 10.0
        short = HTTPResponse(body=b"", headers={"Retry-After": "2"}, status=503)
        assert default_retry().get_retry_after(short) == 2.0

    def test_default_retry_covers_post_429_and_5xx(self) -> None:
        retry = default_retry()
        assert retry.total == 3
        assert retry.allowed_methods is None
        assert set(retry.status_forcelist or ()) >= {429, 500, 502, 503, 504}
        assert retry.respect_retry_after_header is True

    def test_connection_refused_is_token_request_error(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        provider = ClientCredentials(
            f"http://127.0.0.1:{port}/token", CLIENT_ID, CLIENT_SECRET, retry=0
        )
        with pytest.raises(TokenRequestError, match="could not reach token endpoint"):
            provider.fetch_token()


@pytest.fixture
def hanging_endpoint() -> Iterator[str]:
    """A token URL whose server accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/token"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.mark.timeout(15)
def test_hanging_endpoint_gives_token_request_error_within_the_timeout(
    hanging_endpoint: str,
) -> None:
    provider = ClientCredentials(hanging_endpoint, CLIENT_ID, CLIENT_SECRET, timeout=0.5, retry=0)
    with pytest.raises(TokenRequestError) as info:
        provider.fetch_token()
    assert str(info.value) == (
        f"token endpoint {hanging_endpoint} did not answer within 0.5s; "
        "check that it is up, or raise token_timeout"
    )


# -- custom providers and configuration ------------------------------------------------


class TestCustomProviders:
    def test_callable_returning_a_token(self) -> None:
        token = Token("custom", expires_at=time.time() + 60)
        assert CallableProvider(lambda: token).fetch_token() is token

    def test_callable_returning_a_mapping_or_a_string(self) -> None:
        clock = FakeClock(1_000_000)
        mapped = CallableProvider(
            lambda: {"access_token": "m", "expires_in": 30}, clock=clock
        ).fetch_token()
        assert (mapped.access_token, mapped.expires_at) == ("m", 1_000_030)
        bare = CallableProvider(lambda: "s", default_lifetime=50, clock=clock).fetch_token()
        assert (bare.access_token, bare.expires_at) == ("s", 1_000_050)

    def test_callable_returning_garbage(self) -> None:
        with pytest.raises(InvalidTokenResponse, match="returned a int"):
            CallableProvider(lambda: 42).fetch_token()  # type: ignore[arg-type, return-value]

    def test_as_provider(self) -> None:
        class Mine:
            def fetch_token(self) -> Token:
                return Token("mine")

        mine = Mine()
        assert as_provider(mine) is mine
        wrapped = as_provider(lambda: "x")
        assert isinstance(wrapped, CallableProvider)
        assert wrapped.fetch_token().access_token == "x"
        with pytest.raises(ConfigurationError, match="fetch_token"):
            as_provider(42)


class TestConfiguration:
    @pytest.mark.parametrize(
        ("options", "words"),
        [
            ({"auth_method": "private_key_jwt"}, "auth_method"),
            ({"timeout": 0}, "token_timeout"),
            ({"timeout": None}, "token_timeout"),
            ({"timeout": (1, 2, 3)}, "token_timeout"),
            ({"retry": "3"}, "token_retry"),
            ({"retry": -1}, "token_retry"),
            ({"scope": 5}, "scope"),
            ({"scope": ["ok", 5]}, "scope"),
            ({"extra_params": {"n": 1}}, "extra_params"),
            ({"audience": ""}, "audience"),
            ({"default_lifetime": 0}, "default_lifetime"),
        ],
    )
    def test_bad_options(self, options: dict[str, Any], words: str) -> None:
        with pytest.raises(ConfigurationError, match=words) as info:
            ClientCredentials(IDP, CLIENT_ID, CLIENT_SECRET, **options)
        assert isinstance(info.value, ValueError)

    @pytest.mark.parametrize(
        "endpoint", [None, "", "idp.example/token", "ftp://idp.example/token", "https:///x"]
    )
    def test_bad_endpoint(self, endpoint: Any) -> None:
        with pytest.raises(ConfigurationError, match="token_endpoint"):
            ClientCredentials(endpoint, CLIENT_ID, CLIENT_SECRET)

    def test_credentials_in_the_url_refused(self) -> None:
        with pytest.raises(ConfigurationError) as info:
            ClientCredentials("https://user:hunter22@idp.example/token", CLIENT_ID, CLIENT_SECRET)
        assert "hunter22" not in str(info.value)

    def test_empty_client_id_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="client_id"):
            ClientCredentials(IDP, "", CLIENT_SECRET)

    def test_cache_key_names_the_credential_not_the_secret(self) -> None:
        base = ClientCredentials(IDP, CLIENT_ID, CLIENT_SECRET, scope="a")
        assert base.cache_key == ClientCredentials(IDP, CLIENT_ID, "other", scope="a").cache_key
        assert base.cache_key != ClientCredentials(IDP, CLIENT_ID, CLIENT_SECRET).cache_key
        assert (
            base.cache_key
            != ClientCredentials(IDP, CLIENT_ID, CLIENT_SECRET, scope="a", audience="x").cache_key
        )
        assert CLIENT_SECRET not in base.cache_key

    def test_repr_shows_no_secret(self) -> None:
        text = repr(ClientCredentials(IDP, CLIENT_ID, CLIENT_SECRET, scope="a"))
        assert CLIENT_SECRET not in text
        assert CLIENT_ID in text


@pytest.mark.timeout(15)
def test_token_session_passes_token_timeout_and_retry_on(
    hanging_endpoint: str, api_server: APIServer
) -> None:
    with TokenSession(
        hanging_endpoint, CLIENT_ID, CLIENT_SECRET, token_timeout=0.5, token_retry=0
    ) as session:
        with pytest.raises(TokenRequestError, match=r"did not answer within 0\.5s"):
            session.get(f"{api_server.base_url}/orders")
    assert api_server.calls == 0
