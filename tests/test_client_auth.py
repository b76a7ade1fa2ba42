"""Client authentication objects, signing keys and ready-made assertions.

The forms they build are sent to a real token server that verifies them
(signature, iss/sub/aud/exp, a jti never seen), and the server is shown to
refuse each kind of wrong input.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from alf_session import ConfigurationError, CredentialSourceError, TokenError
from alf_session._assertions import CredentialSource
from alf_session._jose import SigningKey
from alf_session._servers import ASSERTION_TYPE, TokenServer
from alf_session.client_auth import (
    AuthContext,
    ClientSecretBasic,
    ClientSecretJwt,
    ClientSecretPost,
    NoClientAuth,
    PrivateKeyJwt,
    SelfSignedTlsClientAuth,
    TlsClientAuth,
    cert_thumbprint,
    select_auth,
)

from .helpers import CLIENT_ID, CLIENT_SECRET, FakeClock
from .pki import PKI, pem

pytest_plugins = ["tests.credential_fixtures"]


def post(server: TokenServer, method: Any, clock: FakeClock, **kw: Any) -> requests.Response:
    """One client-credentials request authenticated by ``method``, as the wire code sends it."""
    form = {"grant_type": "client_credentials"}
    headers: dict[str, str] = {}
    method.apply(form, headers, AuthContext(CLIENT_ID, server.token_url, clock()))
    return requests.post(server.token_url, data=form, headers=headers, timeout=10, **kw)


def sign(key: Any, clock: FakeClock, alg: str = "RS256", **claims: Any) -> str:
    now = int(clock())
    body = {"iss": CLIENT_ID, "sub": CLIENT_ID, "jti": os.urandom(8).hex(), "iat": now}
    body["exp"] = now + 60
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg)


# -- signing keys ----------------------------------------------------------------------


class TestSigningKey:
    def test_algorithm_follows_the_key(self, rsa_key: Any, ec_key: Any, ed_key: Any) -> None:
        assert SigningKey(rsa_key).algorithm == "RS256"
        assert SigningKey(ec_key).algorithm == "ES256"
        assert SigningKey(ec.generate_private_key(ec.SECP384R1())).algorithm == "ES384"
        assert SigningKey(ed_key).algorithm == "EdDSA"
        assert SigningKey(rsa_key, algorithm="PS256").algorithm == "PS256"

    @pytest.mark.parametrize("form", ["str", "bytes", "path", "pathlike", "object"])
    def test_key_forms(self, form: str, rsa_key: Any, key_file: Path) -> None:
        value = {
            "str": pem(rsa_key).decode(),
            "bytes": pem(rsa_key),
            "path": str(key_file),
            "pathlike": key_file,
            "object": rsa_key,
        }[form]
        key = SigningKey(value, key_id="k1")
        assert key.key_id == "k1"
        public = key.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert public == rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def test_algorithm_that_does_not_fit_the_key(self, rsa_key: Any, ec_key: Any) -> None:
        with pytest.raises(ConfigurationError, match="does not fit"):
            SigningKey(rsa_key, algorithm="ES256")
        with pytest.raises(ConfigurationError, match="ES256"):
            SigningKey(ec_key, algorithm="ES512")

    def test_short_rsa_key_is_refused(self) -> None:
        small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point of the test
        with pytest.raises(ConfigurationError, match="2048"):
            SigningKey(small)

    def test_garbage_key_message_does_not_quote_it(self, tmp_path: Path, rsa_key: Any) -> None:
        text = pem(rsa_key).decode()
        # A character that is not already there (1 key in 64 has an X at 200).
        broken = text[:200] + ("X" if text[200] != "X" else "Y") + text[201:]
        with pytest.raises(ConfigurationError) as info:
            SigningKey(broken)
        assert text[40:80] not in str(info.value)
        assert info.value.__cause__ is None
        assert "not a PEM private key" in str(info.value)

    def test_encrypted_key_needs_its_password(self, rsa_key: Any) -> None:
        encrypted = rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
        with pytest.raises(ConfigurationError, match="encrypted"):
            SigningKey(encrypted)
        assert SigningKey(encrypted, password=b"pw").algorithm == "RS256"

    def test_missing_file_names_the_path(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match=r"cannot read private key file .*nope\.pem"):
            SigningKey(tmp_path / "nope.pem")

    def test_a_public_key_is_refused(self, tmp_path: Path, rsa_key: Any) -> None:
        public = rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        with pytest.raises(ConfigurationError, match="not a PEM private key"):
            SigningKey(public)

    def test_repr_and_pickle_keep_the_key_in(self, rsa_key: Any) -> None:
        import pickle

        key = SigningKey(rsa_key, key_id="k1")
        assert repr(key) == "SigningKey(algorithm='RS256', key_id='k1')"
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(key)

    def test_missing_extra_says_how_to_install_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "jwt", None)
        with pytest.raises(ConfigurationError, match=r"pip install 'alf-session\[jwt\]'"):
            SigningKey(b"whatever")
        with pytest.raises(ConfigurationError, match="jwt extra"):
            select_auth(None, private_key=b"whatever")


# -- each method against the verifying server --------------------------------------------


class TestMethodsAgainstServer:
    def test_private_key_jwt(self, key_server: TokenServer, clock: FakeClock, rsa_key: Any) -> None:
        method = PrivateKeyJwt(rsa_key, key_id="k1")
        first = post(key_server, method, clock)
        second = post(key_server, method, clock)
        assert first.status_code == second.status_code == 200, key_server.refusals
        sent = [r.form for r in key_server.requests]
        assert all(f["client_assertion_type"] == ASSERTION_TYPE for f in sent)
        assert sent[0]["client_assertion"] != sent[1]["client_assertion"]
        claims = key_server.assertions
        assert claims[0]["jti"] != claims[1]["jti"]
        assert claims[0]["iss"] == claims[0]["sub"] == CLIENT_ID
        assert claims[0]["aud"] == key_server.token_url
        assert claims[0]["exp"] - claims[0]["iat"] == 60
        assert jwt.get_unverified_header(sent[0]["client_assertion"])["kid"] == "k1"
        assert "Authorization" not in key_server.requests[0].headers

    @pytest.mark.parametrize("kind", ["ec", "ed"])
    def test_other_key_types(self, kind: str, clock: FakeClock, ec_key: Any, ed_key: Any) -> None:
        key = ec_key if kind == "ec" else ed_key
        with TokenServer(
            CLIENT_ID, CLIENT_SECRET, clock=clock, client_keys={CLIENT_ID: key.public_key()}
        ) as server:
            assert post(server, PrivateKeyJwt(key), clock).status_code == 200, server.refusals

    def test_client_secret_jwt(self, key_server: TokenServer, clock: FakeClock) -> None:
        other = TokenServer("another-client", CLIENT_SECRET, clock=clock)
        with other:
            response = post(other, ClientSecretJwt(CLIENT_SECRET), clock)
        assert response.status_code == 401  # signed for CLIENT_ID, which it does not know
        with TokenServer(CLIENT_ID, CLIENT_SECRET, clock=clock) as server:
            assert post(server, ClientSecretJwt(CLIENT_SECRET), clock).status_code == 200
            wrong = ClientSecretJwt("another-secret-of-the-length-HS256-needs")
            assert post(server, wrong, clock).status_code == 401
            with pytest.raises(ConfigurationError, match="at least 32 bytes"):
                ClientSecretJwt("short-secret")
            assert server.refusals == ["assertion refused: InvalidSignatureError"]

    @pytest.mark.parametrize("method", [ClientSecretBasic, ClientSecretPost])
    def test_secret_methods(self, key_server: TokenServer, clock: FakeClock, method: Any) -> None:
        assert post(key_server, method(CLIENT_SECRET), clock).status_code == 200
        assert post(key_server, method("not-it"), clock).status_code == 401

    def test_none_needs_a_public_client(self, clock: FakeClock) -> None:
        with TokenServer(CLIENT_ID, CLIENT_SECRET, clock=clock) as server:
            assert post(server, NoClientAuth(), clock).status_code == 401
            server.public_clients.add(CLIENT_ID)
            assert post(server, NoClientAuth(), clock).status_code == 200

    def test_disabled_method_is_refused(self, key_server: TokenServer, clock: FakeClock) -> None:
        key_server.auth_methods = ("private_key_jwt",)
        assert post(key_server, ClientSecretBasic(CLIENT_SECRET), clock).status_code == 401
        assert key_server.refusals == ["client_secret_basic not enabled"]


class TestServerRefusesBadAssertions:
    """The verifying server is what the other tests lean on: each check is shown to bite."""

    def send(self, server: TokenServer, assertion: str, **form: str) -> requests.Response:
        data = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            **form,
        }
        return requests.post(server.token_url, data=data, timeout=10)

    @pytest.mark.parametrize(
        ("claims", "reason"),
        [
            ({"aud": "https://elsewhere.example/token"}, "InvalidAudienceError"),
            ({"iss": "someone-else"}, "InvalidIssuerError"),
            ({"sub": "someone-else"}, "no key for client 'someone-else'"),
            ({"jti": None}, "MissingRequiredClaimError"),
            ({"exp": None}, "MissingRequiredClaimError"),
        ],
    )
    def test_wrong_claims(
        self,
        key_server: TokenServer,
        clock: FakeClock,
        rsa_key: Any,
        claims: dict[str, Any],
        reason: str,
    ) -> None:
        claims.setdefault("aud", key_server.token_url)
        response = self.send(key_server, sign(rsa_key, clock, **claims))
        assert response.status_code == 401
        assert reason in key_server.refusals[0]

    def test_expired_and_long_lived(
        self, key_server: TokenServer, clock: FakeClock, rsa_key: Any
    ) -> None:
        aud = key_server.token_url
        now = int(clock())
        assert self.send(key_server, sign(rsa_key, clock, aud=aud, exp=now - 30)).status_code == 401
        too_long = sign(rsa_key, clock, aud=aud, exp=now + 3600)
        assert self.send(key_server, too_long).status_code == 401
        assert key_server.refusals == ["assertion expired", "assertion lives over 300s"]

    def test_replayed_jti(self, key_server: TokenServer, clock: FakeClock, rsa_key: Any) -> None:
        assertion = sign(rsa_key, clock, aud=key_server.token_url)
        assert self.send(key_server, assertion).status_code == 200
        assert self.send(key_server, assertion).status_code == 401
        assert key_server.refusals == ["assertion jti replayed"]

    def test_wrong_key_and_alg_none(
        self, key_server: TokenServer, clock: FakeClock, ec_key: Any
    ) -> None:
        aud = key_server.token_url
        assert self.send(key_server, sign(ec_key, clock, "ES256", aud=aud)).status_code == 401
        unsigned = sign(None, clock, "none", aud=aud)
        assert self.send(key_server, unsigned).status_code == 401
        assert all(r.startswith("assertion refused") for r in key_server.refusals)

    def test_client_id_must_match(
        self, key_server: TokenServer, clock: FakeClock, rsa_key: Any
    ) -> None:
        assertion = sign(rsa_key, clock, aud=key_server.token_url)
        assert self.send(key_server, assertion, client_id="other").status_code == 401
        assert self.send(key_server, "not-a-jwt").status_code == 401
        assertion = sign(rsa_key, clock, aud=key_server.token_url)
        response = self.send(key_server, assertion, client_assertion_type="urn:other")
        assert response.status_code == 401

    def test_issuer_is_an_accepted_audience(
        self, key_server: TokenServer, clock: FakeClock, rsa_key: Any
    ) -> None:
        assertion = sign(rsa_key, clock, aud=key_server.issuer)
        assert self.send(key_server, assertion).status_code == 200


# -- ready-made assertions -----------------------------------------------------------------


class TestCredentialSource:
    def test_string_callable_and_file(self, tmp_path: Path) -> None:
        assert CredentialSource("a.b.c", name="client_assertion").get() == "a.b.c"
        calls = iter(["x.y.1", "x.y.2"])
        source = CredentialSource(lambda: next(calls), name="client_assertion")
        assert [source.get(), source.get()] == ["x.y.1", "x.y.2"]
        path = tmp_path / "token"
        path.write_text("first.jwt.value\n")
        by_str = CredentialSource(str(path), name="client_assertion")
        by_path = CredentialSource(path, name="client_assertion")
        assert by_str.get() == by_path.get() == "first.jwt.value"
        path.write_text("second.jwt.value")
        assert by_str.get() == by_path.get() == "second.jwt.value"

    def test_a_path_may_appear_later(self, tmp_path: Path) -> None:
        path = tmp_path / "projected" / "token"
        source = CredentialSource(path, name="client_assertion")
        with pytest.raises(CredentialSourceError, match=r"is the volume .* mounted"):
            source.get()
        path.parent.mkdir()
        path.write_text("late.jwt.value")
        assert source.get() == "late.jwt.value"

    def test_a_string_that_is_neither_is_refused_unquoted(self) -> None:
        secretish = "opaque-credential-value-not-a-jwt"
        with pytest.raises(ConfigurationError) as info:
            CredentialSource(secretish, name="client_assertion")
        assert secretish not in str(info.value)
        assert "pathlib.Path" in str(info.value)

    def test_planted_fifo_does_not_hang(self, tmp_path: Path) -> None:
        fifo = tmp_path / "token"
        os.mkfifo(fifo)
        source = CredentialSource(fifo, name="client_assertion")
        result: list[BaseException] = []
        thread = threading.Thread(target=lambda: result.append(_raises(source.get)))
        thread.start()
        thread.join(5)
        assert not thread.is_alive()
        assert isinstance(result[0], CredentialSourceError)
        assert "not a regular file" in str(result[0])

    def test_empty_large_and_binary_files(self, tmp_path: Path) -> None:
        path = tmp_path / "token"
        source = CredentialSource(path, name="client_assertion")
        path.write_text("  \n")
        with pytest.raises(CredentialSourceError, match="empty"):
            source.get()
        path.write_bytes(b"a" * (65 * 1024))
        with pytest.raises(CredentialSourceError, match="over 64 KiB"):
            source.get()
        path.write_bytes(b"\xff\xfe\x00")
        with pytest.raises(CredentialSourceError, match="not UTF-8"):
            source.get()

    def test_failing_callable_is_wrapped_without_its_message(self) -> None:
        def fetch_oidc_token() -> str:
            raise RuntimeError("leaked-secret-in-message")

        source = CredentialSource(fetch_oidc_token, name="client_assertion")
        with pytest.raises(CredentialSourceError) as info:
            source.get()
        assert "leaked-secret" not in str(info.value)
        assert "fetch_oidc_token failed with RuntimeError" in str(info.value)
        bad = CredentialSource(lambda: None, name="client_assertion")
        with pytest.raises(CredentialSourceError, match="returned NoneType"):
            bad.get()

    def test_token_errors_pass_through(self) -> None:
        def fail() -> str:
            raise TokenError("upstream down")

        with pytest.raises(TokenError, match="upstream down"):
            CredentialSource(fail, name="subject_token").get()

    def test_repr_shows_where_not_what(self, tmp_path: Path) -> None:
        path = tmp_path / "token"
        path.write_text("secret.jwt.value")
        assert repr(CredentialSource(path, name="client_assertion")) == (
            f"<client_assertion from a file {str(path)!r}>"
        )
        assert "secret" not in repr(CredentialSource("secret.jwt.value", name="x"))

    def test_wrong_types(self) -> None:
        with pytest.raises(ConfigurationError, match="JWT string, a path or a callable"):
            CredentialSource(42, name="client_assertion")
        with pytest.raises(ConfigurationError, match="must not be empty"):
            CredentialSource("  ", name="client_assertion")


def _raises(call: Any) -> BaseException:
    try:
        call()
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


# -- choosing a method -----------------------------------------------------------------


class TestSelectAuth:
    def test_chosen_from_what_was_given(self, rsa_key: Any, pki: PKI) -> None:
        assert select_auth(None, client_secret="s").name == "client_secret_basic"
        assert select_auth(None, private_key=rsa_key).name == "private_key_jwt"
        assert select_auth(None, client_assertion="a.b.c").name == "private_key_jwt"
        assert select_auth(None, cert=str(pki.cert_file)).name == "tls_client_auth"
        assert select_auth(None).name == "none"
        # A secret together with a certificate: the secret authenticates, the
        # certificate binds the token.
        assert select_auth(None, client_secret="s", cert="x").name == "client_secret_basic"

    def test_chosen_from_server_metadata(self) -> None:
        only_post = ["client_secret_post", "private_key_jwt"]
        assert select_auth(None, client_secret="s", supported=only_post).name == (
            "client_secret_post"
        )
        self_signed = ["self_signed_tls_client_auth"]
        assert select_auth(None, cert="x", supported=self_signed).name == (
            "self_signed_tls_client_auth"
        )

    def test_explicit_method_needs_its_credential(self, rsa_key: Any) -> None:
        with pytest.raises(ConfigurationError, match="client_secret is missing"):
            select_auth("client_secret_post")
        with pytest.raises(ConfigurationError, match="needs cert="):
            select_auth("tls_client_auth")
        with pytest.raises(ConfigurationError, match=r"either private_key .* or client_assertion"):
            select_auth("private_key_jwt")
        with pytest.raises(ConfigurationError, match="does not use client_secret"):
            select_auth("private_key_jwt", client_secret="s", private_key=rsa_key)
        with pytest.raises(ConfigurationError, match="not both"):
            select_auth(None, private_key=rsa_key, client_assertion="a.b.c")
        with pytest.raises(ConfigurationError, match="must be one of"):
            select_auth("client_secret_digest", client_secret="s")
        with pytest.raises(ConfigurationError, match="do not apply"):
            select_auth("client_secret_basic", client_secret="s", key_id="k")

    def test_an_object_is_used_as_it_is(self) -> None:
        method = SelfSignedTlsClientAuth()
        assert select_auth(method) is method
        assert isinstance(method, TlsClientAuth) and method.needs_cert

    def test_reprs_show_no_secret(self, rsa_key: Any) -> None:
        shown = " ".join(
            repr(m)
            for m in (
                ClientSecretBasic(CLIENT_SECRET),
                ClientSecretPost(CLIENT_SECRET),
                ClientSecretJwt(CLIENT_SECRET),
                PrivateKeyJwt(rsa_key, key_id="k1"),
                PrivateKeyJwt(client_assertion="header.payload.signature"),
            )
        )
        assert CLIENT_SECRET not in shown
        assert "payload" not in shown
        assert "BEGIN" not in shown


def test_cert_thumbprint_matches_what_the_server_sees(pki: PKI, tmp_path: Path) -> None:
    assert cert_thumbprint(str(pki.cert_file)) == pki.thumbprint
    assert cert_thumbprint((str(pki.cert_file), str(pki.key_file))) == pki.thumbprint
    assert cert_thumbprint(str(pki.both_file)) == pki.thumbprint
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigurationError, match="holds no PEM certificate"):
        cert_thumbprint(str(tmp_path / "junk.pem"))


def test_signing_is_thread_safe(key_server: TokenServer, clock: FakeClock, rsa_key: Any) -> None:
    method = PrivateKeyJwt(rsa_key)
    forms: list[dict[str, str]] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(10):
            form: dict[str, str] = {}
            method.apply(form, {}, AuthContext(CLIENT_ID, "aud", time.time()))
            with lock:
                forms.append(form)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    jtis = {
        jwt.decode(f["client_assertion"], options={"verify_signature": False})["jti"] for f in forms
    }
    assert len(forms) == len(jtis) == 80
