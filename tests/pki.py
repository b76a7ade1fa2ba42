"""Helpers for key and certificate tests (not fixtures: those are in credential_fixtures.py)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
from cryptography.hazmat.primitives import serialization


def pem(key: Any) -> bytes:
    """The unencrypted PKCS#8 PEM of a private key."""
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@dataclass
class PKI:
    """A CA and the files a client needs for mTLS."""

    ca: trustme.CA
    ca_file: Path  # the CA bundle the client verifies servers with
    cert_file: Path  # client certificate (PEM)
    key_file: Path  # its private key (PEM)
    both_file: Path  # certificate and key in one PEM file
    thumbprint: str  # x5t#S256 of the client certificate
    other_cert: tuple[str, str]  # a second client certificate (cert, key)
    other_thumbprint: str
    server_cert: trustme.LeafCert

    def server_context(self, verify_mode: ssl.VerifyMode) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(ctx)
        self.ca.configure_trust(ctx)
        ctx.verify_mode = verify_mode
        return ctx


def _der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
