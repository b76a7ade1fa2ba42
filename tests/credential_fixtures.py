"""Keys, certificates and servers for the tests of credentials without shared secrets.

``rsa_key`` / ``ec_key`` / ``ed_key``   private keys (``cryptography``), made once per run
``key_server``    a TokenServer that verifies private_key_jwt assertions of ``CLIENT_ID``
                  against ``rsa_key``'s public half, on the ``clock``
``pki``           a trustme CA, with server and client certificates written to files
``tls_servers``   a TokenServer and an APIServer on https: the token server records the
                  client certificate and binds tokens to it, the API requires one
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from alf_session._servers import APIServer, TokenServer, thumbprint

from .helpers import CLIENT_ID, CLIENT_SECRET, FakeClock
from .pki import PKI, _der, pem


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def key_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "client-key.pem"
    path.write_bytes(pem(rsa_key))
    path.chmod(0o600)
    return path


@pytest.fixture
def key_server(clock: FakeClock, rsa_key: rsa.RSAPrivateKey) -> Iterator[TokenServer]:
    """A token server that knows ``CLIENT_ID`` by ``rsa_key``'s public half (and its secret)."""
    server = TokenServer(
        CLIENT_ID, CLIENT_SECRET, clock=clock, client_keys={CLIENT_ID: rsa_key.public_key()}
    )
    with server:
        yield server


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    where = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("svc-orders@clients.example")
    other = ca.issue_cert("svc-other@clients.example")
    ca.cert_pem.write_to_path(str(where / "ca.pem"))
    client.cert_chain_pems[0].write_to_path(str(where / "client.pem"))
    client.private_key_pem.write_to_path(str(where / "client-key.pem"))
    client.private_key_and_cert_chain_pem.write_to_path(str(where / "client-both.pem"))
    other.cert_chain_pems[0].write_to_path(str(where / "other.pem"))
    other.private_key_pem.write_to_path(str(where / "other-key.pem"))
    return PKI(
        ca=ca,
        ca_file=where / "ca.pem",
        cert_file=where / "client.pem",
        key_file=where / "client-key.pem",
        both_file=where / "client-both.pem",
        thumbprint=thumbprint(_der(client)),
        other_cert=(str(where / "other.pem"), str(where / "other-key.pem")),
        other_thumbprint=thumbprint(_der(other)),
        server_cert=server_cert,
    )


@pytest.fixture
def tls_servers(pki: PKI, clock: FakeClock) -> Iterator[tuple[TokenServer, APIServer]]:
    """An https token server (client certificate optional, ``CLIENT_ID`` registered by
    its thumbprint) and an https API that requires a client certificate."""
    tokens = TokenServer(
        CLIENT_ID, CLIENT_SECRET, clock=clock, client_certs={CLIENT_ID: pki.thumbprint}
    )
    api = APIServer(tokens)
    tokens.start(tls=pki.server_context(ssl.CERT_OPTIONAL))
    try:
        api.start(tls=pki.server_context(ssl.CERT_REQUIRED))
        try:
            yield tokens, api
        finally:
            api.stop()
    finally:
        tokens.stop()
