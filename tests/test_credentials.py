"""Credentials without shared secrets, end to end: private_key_jwt, ready-made assertions,
discovery, mTLS, the JWT bearer grant and token exchange, against servers that verify."""

from __future__ import annotations

import json
import logging
import pickle
import ssl
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from alf_session import (
    ClientCredentials,
    ConfigurationError,
    CredentialSourceError,
    DiscoveryError,
    FileStorage,
    InvalidClient,
    JwtBearer,
    MemoryStorage,
    TokenExchange,
    TokenManager,
    TokenRequestTimeout,
    TokenSession,
)
from alf_session._servers import APIServer, TokenServer
from alf_session.discovery import clear_cache

from .helpers import CLIENT_ID, CLIENT_SECRET, FakeClock, run_threads, storage_settled
from .pki import PKI, pem

pytest_plugins = ["tests.credential_fixtures"]


@pytest.fixture(autouse=True)
def _fresh_discovery_cache() -> Any:
    clear_cache()
    yield
    clear_cache()


def claims_sent(server: TokenServer, field: str = "client_assertion") -> list[dict[str, Any]]:
    return [
        jwt.decode(r.form[field], options={"verify_signature": False})
        for r in server.requests
        if field in r.form
    ]


def write_assertion(path: Path, key: Any, server: TokenServer, clock: FakeClock, jti: str) -> str:
    now = int(clock())
    claims = {"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": server.token_url, "jti": jti}
    value = jwt.encode({**claims, "iat": now, "exp": now + 120}, key, algorithm="RS256")
    path.write_text(value + "\n")
    return value


# -- private_key_jwt --------------------------------------------------------------------


class TestPrivateKeyJwt:
    def test_session_end_to_end(
        self, key_server: TokenServer, clock: FakeClock, rsa_key: Any, key_file: Path
    ) -> None:
        with (
            APIServer(key_server) as api,
            TokenSession(
                key_server.token_url, CLIENT_ID, private_key=key_file, key_id="k1", clock=clock
            ) as session,
        ):
            for _ in range(3):
                assert session.get(api.base_url + "/x").status_code == 200
            assert key_server.count == 1
            assert session.token_manager.provider.auth_method == "private_key_jwt"
            key_server.revoke()
            assert session.get(api.base_url + "/x").status_code == 200
        assert key_server.count == 2
        assert key_server.refusals == []
        jtis = [c["jti"] for c in claims_sent(key_server)]
        assert len(set(jtis)) == 2

    def test_every_retry_carries_a_fresh_assertion(
        self, key_server: TokenServer, clock: FakeClock, rsa_key: Any
    ) -> None:
        key_server.fail_next(503, "busy", times=2)
        key_server.fail_next(429, "slow down", headers={"Retry-After": "0"})
        from urllib3.util.retry import Retry

        provider = ClientCredentials(
            key_server.token_url,
            CLIENT_ID,
            private_key=rsa_key,
            retry=Retry(total=5, backoff_factor=0, status_forcelist=[429, 503]),
            clock=clock,
        )
        token = provider.fetch_token()
        assert key_server.check(token.access_token) is None
        assert key_server.count == 4
        jtis = [c["jti"] for c in claims_sent(key_server)]
        assert len(jtis) == len(set(jtis)) == 4  # never the same assertion twice
        assert key_server.refusals == []  # the one that got through was verified

    def test_retries_follow_the_retry_policy(
        self, key_server: TokenServer, clock: FakeClock, rsa_key: Any
    ) -> None:
        key_server.fail_next(503, "busy", times=5)
        provider = ClientCredentials(
            key_server.token_url, CLIENT_ID, private_key=rsa_key, retry=1, clock=clock
        )
        with pytest.raises(Exception, match="HTTP 503"):
            provider.fetch_token()
        assert key_server.count == 2  # one try, one retry

    def test_a_connection_error_is_retried_with_a_new_assertion(
        self, clock: FakeClock, rsa_key: Any
    ) -> None:
        import socket
        import threading

        # A port that closes the first connection without answering, then
        # forwards to a verifying server.
        server = TokenServer(CLIENT_ID, CLIENT_SECRET, clock=clock)
        server.client_keys[CLIENT_ID] = rsa_key.public_key()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        with server:
            upstream = server.port

            def serve() -> None:
                first = True
                while True:
                    try:
                        conn, _ = listener.accept()
                    except OSError:
                        return
                    if first:
                        first = False
                        conn.recv(65536)
                        conn.close()
                        continue
                    threading.Thread(target=_pipe, args=(conn, upstream), daemon=True).start()

            threading.Thread(target=serve, daemon=True).start()
            try:
                provider = ClientCredentials(
                    f"http://127.0.0.1:{port}/token",
                    CLIENT_ID,
                    private_key=rsa_key,
                    assertion_audience=server.token_url,
                    retry=2,
                    clock=clock,
                )
                provider.fetch_token()
            finally:
                listener.close()
        assert server.count == 1
        assert server.refusals == []

    def test_the_whole_fetch_is_bounded(
        self, key_server: TokenServer, clock: FakeClock, rsa_key: Any
    ) -> None:
        key_server.delay = 2.0
        provider = ClientCredentials(
            key_server.token_url, CLIENT_ID, private_key=rsa_key, timeout=0.3, clock=clock
        )
        with pytest.raises(TokenRequestTimeout):
            provider.fetch_token()

    def test_assertion_audience(
        self, key_server: TokenServer, clock: FakeClock, rsa_key: Any
    ) -> None:
        provider = ClientCredentials(
            key_server.token_url,
            CLIENT_ID,
            private_key=rsa_key,
            assertion_audience=key_server.issuer,
            clock=clock,
        )
        provider.fetch_token()
        assert claims_sent(key_server)[0]["aud"] == key_server.issuer

    def test_wrong_key_is_invalid_client_without_the_key_in_sight(
        self, key_server: TokenServer, clock: FakeClock, ec_key: Any, caplog: Any
    ) -> None:
        caplog.set_level(logging.DEBUG)
        provider = ClientCredentials(key_server.token_url, CLIENT_ID, private_key=ec_key)
        with pytest.raises(InvalidClient) as info:
            provider.fetch_token()
        shown = " ".join([str(info.value), repr(info.value), repr(provider), caplog.text])
        assertion = key_server.requests[0].form["client_assertion"]
        assert assertion not in shown
        assert pem(ec_key).decode()[30:90] not in shown
        assert "private_key" in str(info.value)  # the hint names what to check

    def test_a_server_echoing_the_assertion_is_redacted(
        self, clock: FakeClock, rsa_key: Any, caplog: Any
    ) -> None:
        class Echo(TokenServer):
            def _grant(self, form: dict[str, str], authorization: str | None) -> Any:
                return 400, {
                    "error": "invalid_client",
                    "error_description": "bad assertion " + form.get("client_assertion", ""),
                }

        caplog.set_level(logging.DEBUG)
        with Echo(CLIENT_ID, CLIENT_SECRET, clock=clock) as server:
            provider = ClientCredentials(server.token_url, CLIENT_ID, private_key=rsa_key)
            with pytest.raises(InvalidClient) as info:
                TokenManager(provider).get_token()
            assertion = server.requests[0].form["client_assertion"]
        error = info.value
        assert "***" in str(error)
        for text in (str(error), repr(error), caplog.text, str(error.error_description)):
            assert assertion not in text
        assert error.response is not None and error.response.request is not None
        assert assertion not in str(error.response.request.body)

    def test_key_material_is_never_stored(
        self, key_server: TokenServer, clock: FakeClock, rsa_key: Any, tmp_path: Path
    ) -> None:
        storage = FileStorage(tmp_path / "tokens")
        provider = ClientCredentials(key_server.token_url, CLIENT_ID, private_key=rsa_key)
        manager = TokenManager(provider, storage, clock=clock)
        manager.get_token()
        storage_settled(manager)
        stored = b"".join(p.read_bytes() for p in (tmp_path / "tokens").rglob("*") if p.is_file())
        assertion = key_server.requests[0].form["client_assertion"].encode()
        assert stored  # the token is there ...
        assert assertion not in stored  # ... the assertion is not
        assert b"PRIVATE KEY" not in stored
        der = pem(rsa_key).split(b"\n")[1]
        assert der not in stored
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(provider)

    def test_32_threads_make_one_token_request(
        self, key_server: TokenServer, clock: FakeClock, rsa_key: Any
    ) -> None:
        provider = ClientCredentials(key_server.token_url, CLIENT_ID, private_key=rsa_key)
        manager = TokenManager(provider, MemoryStorage(), clock=clock)
        results = run_threads(32, manager.get_token)
        assert key_server.count == 1
        assert len({t.access_token for t in results}) == 1
        assert manager.stats.fetches == 1


# -- ready-made assertions ---------------------------------------------------------------


class TestReadyAssertion:
    def test_a_rotated_file_is_read_at_the_next_token_request(
        self, key_server: TokenServer, clock: FakeClock, rsa_key: Any, tmp_path: Path
    ) -> None:
        path = tmp_path / "projected" / "token"
        path.parent.mkdir()
        first = write_assertion(path, rsa_key, key_server, clock, "rotation-1")
        manager = TokenManager(
            ClientCredentials(key_server.token_url, CLIENT_ID, client_assertion=path),
            clock=clock,
        )
        manager.get_token()
        manager.get_token()
        assert key_server.count == 1
        second = write_assertion(path, rsa_key, key_server, clock, "rotation-2")
        manager.force_refresh()
        sent = [r.form["client_assertion"] for r in key_server.requests]
        assert sent == [first, second]
        assert key_server.refusals == []
        assert manager.provider.auth_method == "private_key_jwt"

    def test_callable_is_called_per_token_request(
        self, key_server: TokenServer, clock: FakeClock, rsa_key: Any, tmp_path: Path
    ) -> None:
        calls: list[str] = []

        def github_oidc_token() -> str:
            value = write_assertion(tmp_path / "t", rsa_key, key_server, clock, f"gh-{len(calls)}")
            calls.append(value)
            return value

        provider = ClientCredentials(
            key_server.token_url, CLIENT_ID, client_assertion=github_oidc_token
        )
        provider.fetch_token()
        provider.fetch_token()
        assert [r.form["client_assertion"] for r in key_server.requests] == calls

    def test_a_missing_file_fails_typed_and_is_retried_later(
        self, key_server: TokenServer, clock: FakeClock, rsa_key: Any, tmp_path: Path
    ) -> None:
        path = tmp_path / "token"
        manager = TokenManager(
            ClientCredentials(key_server.token_url, CLIENT_ID, client_assertion=path),
            clock=clock,
            failure_ttl=5,
        )
        with pytest.raises(CredentialSourceError, match="is the volume"):
            manager.get_token()
        assert key_server.count == 0  # nothing sent without an assertion
        write_assertion(path, rsa_key, key_server, clock, "late")
        clock.advance(10)
        manager.get_token()
        assert key_server.count == 1


# -- discovery ---------------------------------------------------------------------------


class TestIssuer:
    def test_issuer_instead_of_token_endpoint(
        self, key_server: TokenServer, clock: FakeClock, rsa_key: Any
    ) -> None:
        provider = ClientCredentials(
            issuer=key_server.issuer, client_id=CLIENT_ID, private_key=rsa_key, clock=clock
        )
        assert provider.token_endpoint is None  # nothing fetched when built
        assert key_server.metadata_requests == 0
        manager = TokenManager(provider, clock=clock)
        manager.get_token()
        manager.force_refresh()
        manager.force_refresh()
        assert key_server.metadata_requests == 1
        assert provider.token_endpoint == key_server.token_url
        assert claims_sent(key_server)[0]["aud"] == key_server.token_url
        assert "issuer=" in repr(provider)

    def test_method_chosen_from_metadata(self, clock: FakeClock) -> None:
        with TokenServer(CLIENT_ID, CLIENT_SECRET, clock=clock) as server:
            server.auth_methods = ("client_secret_post",)
            provider = ClientCredentials(
                issuer=server.issuer, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
            )
            assert provider.auth_method == "client_secret_basic"
            provider.fetch_token()
            assert provider.auth_method == "client_secret_post"
            assert server.requests[0].form["client_secret"] == CLIENT_SECRET
            assert server.refusals == []

    def test_mix_up_is_refused_before_any_token_request(
        self, key_server: TokenServer, clock: FakeClock, rsa_key: Any
    ) -> None:
        key_server.metadata = {"issuer": "https://other.example"}
        manager = TokenManager(
            ClientCredentials(issuer=key_server.issuer, client_id=CLIENT_ID, private_key=rsa_key),
            clock=clock,
        )
        with pytest.raises(DiscoveryError, match="not for issuer"):
            manager.get_token()
        assert key_server.count == 0

    def test_discovery_is_bounded_by_the_token_timeout(self, rsa_key: Any) -> None:
        import socket

        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        try:
            provider = ClientCredentials(
                issuer=f"http://127.0.0.1:{silent.getsockname()[1]}",
                client_id=CLIENT_ID,
                private_key=rsa_key,
                timeout=0.3,
            )
            with pytest.raises(DiscoveryError, match="did not answer within"):
                provider.fetch_token()
        finally:
            silent.close()

    def test_endpoint_or_issuer(self) -> None:
        with pytest.raises(ConfigurationError, match="not both"):
            ClientCredentials(
                "https://idp.example/token", CLIENT_ID, CLIENT_SECRET, issuer="https://idp.example"
            )
        with pytest.raises(ConfigurationError, match="issuer"):
            ClientCredentials(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)


# -- mTLS --------------------------------------------------------------------------------


class TestMtls:
    def test_session_with_cert_gets_a_bound_token_and_presents_it(
        self, tls_servers: tuple[TokenServer, APIServer], pki: PKI, clock: FakeClock
    ) -> None:
        tokens, api = tls_servers
        cert = (str(pki.cert_file), str(pki.key_file))
        with TokenSession(tokens.token_url, CLIENT_ID, cert=cert, clock=clock) as session:
            session.verify = str(pki.ca_file)
            session.token_manager.provider.verify = str(pki.ca_file)
            assert session.cert == cert
            # verify= per request: REQUESTS_CA_BUNDLE, where set, wins over session.verify
            response = session.get(api.base_url + "/orders", verify=str(pki.ca_file))
            assert response.status_code == 200
            assert session.token_manager.provider.auth_method == "tls_client_auth"
        assert tokens.requests[0].client_cert == pki.thumbprint
        assert tokens.refusals == []

    def test_tokens_are_cached_apart_per_certificate(self, pki: PKI) -> None:
        one = ClientCredentials("https://idp.example/t", CLIENT_ID, cert=str(pki.both_file))
        same = ClientCredentials(
            "https://idp.example/t", CLIENT_ID, cert=(str(pki.cert_file), str(pki.key_file))
        )
        other = ClientCredentials("https://idp.example/t", CLIENT_ID, cert=pki.other_cert)
        plain = ClientCredentials("https://idp.example/t", CLIENT_ID, CLIENT_SECRET)
        assert one.cache_key == same.cache_key
        assert len({one.cache_key, other.cache_key, plain.cache_key}) == 3

    def test_mtls_alias_from_metadata(
        self, tls_servers: tuple[TokenServer, APIServer], pki: PKI, clock: FakeClock
    ) -> None:
        tokens, _ = tls_servers
        tokens.metadata = {
            "token_endpoint": "https://127.0.0.1:9/no-mtls-here",
            "mtls_endpoint_aliases": {"token_endpoint": tokens.token_url},
        }
        provider = ClientCredentials(
            issuer=tokens.issuer,
            client_id=CLIENT_ID,
            cert=str(pki.both_file),
            verify=str(pki.ca_file),
            clock=clock,
        )
        provider.fetch_token()
        assert provider.token_endpoint == tokens.token_url

    def test_secret_over_mtls_still_binds_the_token(
        self, tls_servers: tuple[TokenServer, APIServer], pki: PKI, clock: FakeClock
    ) -> None:
        tokens, _ = tls_servers
        provider = ClientCredentials(
            tokens.token_url,
            CLIENT_ID,
            CLIENT_SECRET,
            cert=str(pki.both_file),
            verify=str(pki.ca_file),
            clock=clock,
        )
        token = provider.fetch_token()
        assert provider.auth_method == "client_secret_basic"
        assert tokens.check(token.access_token, pki.thumbprint) is None
        assert tokens.check(token.access_token, pki.other_thumbprint) is not None

    def test_tls_method_needs_a_cert(self) -> None:
        with pytest.raises(ConfigurationError, match="cert="):
            ClientCredentials("https://idp.example/t", CLIENT_ID, auth_method="tls_client_auth")


def _pipe(client: Any, port: int) -> None:
    import socket
    import threading

    upstream = socket.create_connection(("127.0.0.1", port))

    def copy(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    threading.Thread(target=copy, args=(upstream, client), daemon=True).start()
    copy(client, upstream)


# -- grants ------------------------------------------------------------------------------


class TestJwtBearer:
    def test_signed_grant(self, clock: FakeClock, ec_key: Any) -> None:
        with TokenServer(
            CLIENT_ID,
            CLIENT_SECRET,
            clock=clock,
            trusted_issuers={"svc@project.iam.example": ec_key.public_key()},
        ) as server:
            provider = JwtBearer(
                server.token_url,
                private_key=ec_key,
                assertion_issuer="svc@project.iam.example",
                subject="alice@example.com",
                claims={"scope": "read"},
                clock=clock,
            )
            token = provider.fetch_token()
            provider.fetch_token()
        assert server.subject_of(token.access_token) == "alice@example.com"
        form = server.requests[0].form
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        assert "client_id" not in form and "Authorization" not in server.requests[0].headers
        claims = claims_sent(server, "assertion")
        assert claims[0]["scope"] == "read"
        assert claims[0]["jti"] != claims[1]["jti"]
        assert server.refusals == []

    def test_ready_assertion_with_client_auth(
        self, clock: FakeClock, ec_key: Any, tmp_path: Path
    ) -> None:
        path = tmp_path / "grant.jwt"
        with TokenServer(
            CLIENT_ID, CLIENT_SECRET, clock=clock, trusted_issuers={"k8s": ec_key.public_key()}
        ) as server:
            now = int(clock())
            claims = {
                "iss": "k8s",
                "sub": "system:serviceaccount:shop:orders",
                "aud": server.token_url,
                "jti": "1",
                "iat": now,
                "exp": now + 60,
            }
            path.write_text(jwt.encode(claims, ec_key, algorithm="ES256"))
            provider = JwtBearer(
                server.token_url,
                path,
                client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET,
                clock=clock,
            )
            token = provider.fetch_token()
            assert server.subject_of(token.access_token) == "system:serviceaccount:shop:orders"
            assert server.requests[0].headers["Authorization"].startswith("Basic ")
            with pytest.raises(Exception, match="invalid_grant"):
                provider.fetch_token()  # the same file again: its jti was seen
            assert server.refusals == ["assertion jti replayed"]

    def test_needs_one_assertion_source(self, ec_key: Any) -> None:
        with pytest.raises(ConfigurationError, match="either assertion"):
            JwtBearer("https://idp.example/t")
        with pytest.raises(ConfigurationError, match="assertion_issuer"):
            JwtBearer("https://idp.example/t", private_key=ec_key)


class TestTokenExchange:
    @pytest.fixture
    def chain(self, clock: FakeClock) -> Any:
        upstream = TokenServer("workload", "workload-secret-0123456789", clock=clock)
        sts = TokenServer(CLIENT_ID, CLIENT_SECRET, clock=clock)
        sts.subject_validator = lambda token, _kind: upstream.subject_of(token)
        api = APIServer(sts)
        for server in (upstream, sts, api):
            server.start()
        yield upstream, sts, api
        for server in (api, sts, upstream):
            server.stop()

    def test_two_managers_no_glue(self, chain: Any, clock: FakeClock) -> None:
        upstream, sts, api = chain
        workload = TokenManager(
            ClientCredentials(upstream.token_url, "workload", "workload-secret-0123456789"),
            clock=clock,
        )
        exchange = TokenExchange(
            sts.token_url,
            workload,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            audience="orders-api",
            resource=["https://api.example/a", "https://api.example/b"],
            requested_token_type="urn:ietf:params:oauth:token-type:access_token",
        )
        with TokenSession(token_manager=TokenManager(exchange, clock=clock)) as session:
            for _ in range(3):
                assert session.get(api.base_url + "/x").status_code == 200
        assert (upstream.count, sts.count) == (1, 1)
        sent = sts.requests[0]
        assert sent.form["subject_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
        assert sent.form["audience"] == "orders-api"
        assert upstream.check(sent.form["subject_token"]) is None
        assert sent.form["subject_token"] not in repr(exchange)
        assert repr(exchange).endswith("subject_token=<subject_token from a manager>)")

    def test_refused_subject_token_is_renewed_once(self, chain: Any, clock: FakeClock) -> None:
        upstream, sts, _ = chain
        workload = TokenManager(
            ClientCredentials(upstream.token_url, "workload", "workload-secret-0123456789"),
            clock=clock,
        )
        exchange = TokenExchange(
            sts.token_url, workload, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
        )
        exchange.fetch_token()
        upstream.revoke()  # the workload's token is revoked before it expires
        exchange.fetch_token()
        assert upstream.count == 2
        assert sts.count == 3  # refused once, then exchanged with the new workload token
        assert sts.refusals == ["subject token refused"]

    def test_subject_token_from_a_file_and_never_shown(
        self, chain: Any, clock: FakeClock, tmp_path: Path, caplog: Any
    ) -> None:
        upstream, sts, _ = chain
        value, _ = upstream.issue("workload")
        path = tmp_path / "subject"
        path.write_text(value)
        caplog.set_level(logging.DEBUG)
        exchange = TokenExchange(
            sts.token_url,
            path,
            "urn:ietf:params:oauth:token-type:access_token",
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
        )
        exchange.fetch_token()
        upstream.revoke(value)
        with pytest.raises(Exception) as info:
            exchange.fetch_token()
        for text in (str(info.value), repr(exchange), caplog.text, exchange.cache_key):
            assert value not in text

    def test_storage_key_names_the_subject(self, tmp_path: Path) -> None:
        a = TokenExchange(
            "https://sts.example/t", tmp_path / "a", client_id="c", client_secret="s" * 8
        )
        b = TokenExchange(
            "https://sts.example/t", tmp_path / "b", client_id="c", client_secret="s" * 8
        )
        assert a.cache_key != b.cache_key


def test_storage_worker_processes_share_one_private_key_jwt_token(
    key_server: TokenServer, key_file: Path, tmp_path: Path
) -> None:
    """4 processes x 8 threads with a private key: one token request (FileStorage)."""
    from .test_storage_processes import PROCESSES, THREADS, check_one_token, run_workers

    key_server.clock = __import__("time").time  # the workers run on real time
    reports = run_workers(
        key_server,
        f"file://{tmp_path / 'shared'}",
        PROCESSES,
        THREADS,
        env={"ALF_PRIVATE_KEY_FILE": str(key_file), "ALF_CLIENT_SECRET": ""},
    )
    check_one_token(key_server, reports)
    assert key_server.count == 1
    assert key_server.refusals == []
    stored = b"".join(p.read_bytes() for p in (tmp_path / "shared").rglob("*") if p.is_file())
    assert b"PRIVATE KEY" not in stored
    assert key_server.requests[0].form["client_assertion"].encode() not in stored


def test_nothing_but_json_in_a_token_error_response_request(
    key_server: TokenServer, rsa_key: Any
) -> None:
    key_server.failure = (500, "down")
    provider = ClientCredentials(key_server.token_url, CLIENT_ID, private_key=rsa_key, retry=0)
    with pytest.raises(Exception) as info:
        provider.fetch_token()
    request = info.value.response.request  # type: ignore[attr-defined]
    assert "client_assertion=%2A%2A%2A" in str(request.body) or "***" in str(request.body)
    _ = json, ssl, requests
