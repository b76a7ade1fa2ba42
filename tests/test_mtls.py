"""mTLS (RFC 8705): the TLS token server and API the other tests rely on, shown to refuse
what they must refuse, and the library's side of it."""

from __future__ import annotations

import pytest
import requests

from alf_session._servers import APIServer, TokenServer
from alf_session.client_auth import AuthContext, TlsClientAuth

from .helpers import CLIENT_ID, FakeClock
from .pki import PKI

pytest_plugins = ["tests.credential_fixtures"]


def tls_token_request(
    tokens: TokenServer, pki: PKI, cert: object, clock: FakeClock
) -> requests.Response:
    form = {"grant_type": "client_credentials"}
    TlsClientAuth().apply(form, {}, AuthContext(CLIENT_ID, tokens.token_url, clock()))
    return requests.post(
        tokens.token_url, data=form, cert=cert, verify=str(pki.ca_file), timeout=10
    )


class TestServers:
    def test_tls_client_auth_issues_a_bound_token(
        self, tls_servers: tuple[TokenServer, APIServer], pki: PKI, clock: FakeClock
    ) -> None:
        tokens, api = tls_servers
        assert tokens.token_url.startswith("https://")
        response = tls_token_request(tokens, pki, (str(pki.cert_file), str(pki.key_file)), clock)
        assert response.status_code == 200, tokens.refusals
        assert tokens.requests[0].client_cert == pki.thumbprint
        token = response.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        ok = requests.get(
            api.base_url + "/x",
            headers=headers,
            cert=str(pki.both_file),
            verify=str(pki.ca_file),
            timeout=10,
        )
        assert ok.status_code == 200
        other = requests.get(
            api.base_url + "/x",
            headers=headers,
            cert=pki.other_cert,
            verify=str(pki.ca_file),
            timeout=10,
        )
        assert other.status_code == 401
        assert "bound to another certificate" in other.headers["WWW-Authenticate"]

    def test_api_requires_a_client_certificate(
        self, tls_servers: tuple[TokenServer, APIServer], pki: PKI
    ) -> None:
        _, api = tls_servers
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(api.base_url + "/x", verify=str(pki.ca_file), timeout=10)

    def test_token_server_refuses_a_missing_or_other_certificate(
        self, tls_servers: tuple[TokenServer, APIServer], pki: PKI, clock: FakeClock
    ) -> None:
        tokens, _ = tls_servers
        assert tls_token_request(tokens, pki, None, clock).status_code == 401
        assert tls_token_request(tokens, pki, pki.other_cert, clock).status_code == 401
        assert tokens.refusals == [
            "tls_client_auth with no client certificate",
            "tls_client_auth with another certificate",
        ]
