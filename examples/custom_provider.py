"""Tokens from somewhere else: your own provider.

    python examples/custom_provider.py

A provider is any object with a ``fetch_token()`` method that returns a
:class:`~alf_session.Token`, or a plain function. The manager around it
still caches, shares, renews ahead of expiry and retries on 401.

1. ``MetadataServiceProvider``: a token from a local metadata endpoint, as
   on Azure (IMDS) or Google Cloud, where the platform holds the credential.
   (Azure sends ``expires_in`` as a string; ``Token.from_response`` takes it.)
2. A function that reads the token a sidecar (Vault agent, a Kubernetes
   projected token) keeps fresh in a file.

Runs offline: a token server, an API and a fake metadata endpoint on 127.0.0.1.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from alf_session import (
    CallableProvider,
    Token,
    TokenError,
    TokenHTTPError,
    TokenManager,
    TokenSession,
)
from alf_session.testing import TokenServer, local_servers


class MetadataServiceProvider:
    """Gets the token of the machine's identity from a local metadata endpoint.

    ``cache_key`` names the credential, so that the token can be shared
    through a storage; without one the manager keeps it in this process.
    """

    def __init__(self, url: str, resource: str) -> None:
        self.url = url
        self.resource = resource
        self.cache_key = f"metadata:{url}:{resource}"
        self._http = requests.Session()

    def fetch_token(self) -> Token:
        try:
            response = self._http.get(
                self.url,
                params={"resource": self.resource, "api-version": "2018-02-01"},
                headers={"Metadata": "true"},
                timeout=5,
            )
        except requests.RequestException as exc:
            raise TokenError(f"metadata endpoint {self.url} unreachable") from exc
        if response.status_code != 200:
            raise TokenHTTPError(
                f"metadata endpoint answered HTTP {response.status_code}", response=response
            )
        return Token.from_response(response.json())


@contextmanager
def fake_metadata_endpoint(idp: TokenServer) -> Iterator[str]:
    """Answers like Azure IMDS, with tokens that ``idp``'s API accepts."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.headers.get("Metadata") != "true":
                status, body = 400, {"error": "bad_request", "error_description": "Metadata"}
            else:
                token = idp.issue("vm-identity")[0]
                status = 200
                body = {
                    "access_token": token,
                    "expires_in": "3599",  # a string, as Azure sends it
                    "token_type": "Bearer",
                    "resource": "https://orders.example",
                }
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metadata/identity/oauth2/token"
    finally:
        server.shutdown()
        server.server_close()


def main() -> int:
    with local_servers() as (idp, api), fake_metadata_endpoint(idp) as metadata_url:
        # 1. An object with fetch_token().
        provider = MetadataServiceProvider(metadata_url, "https://orders.example")
        with TokenSession(token_manager=TokenManager(provider)) as session:
            statuses = [session.get(f"{api.base_url}/orders").status_code for _ in range(3)]
            token = session.token_manager.get_token()
            print(f"metadata provider: HTTP {statuses}, token expires in {token.expires_in:.0f} s")

        # 2. A function: the token a sidecar writes to a file. Its expiry is
        #    unknown, so the manager re-reads the file every 60 s, and at once
        #    when the API answers 401.
        with tempfile.TemporaryDirectory() as directory:
            token_file = Path(directory) / "token"
            token_file.write_text(idp.issue("sidecar")[0])
            reads = []

            def read_token_file() -> str:
                reads.append(1)
                return token_file.read_text().strip()

            manager = TokenManager(CallableProvider(read_token_file, default_lifetime=60))
            with TokenSession(token_manager=manager) as session:
                first = session.get(f"{api.base_url}/orders").status_code
                idp.revoke()  # the old token is revoked ...
                token_file.write_text(idp.issue("sidecar")[0])  # ... the sidecar writes a new one
                second = session.get(f"{api.base_url}/orders")
                print(
                    f"token file: HTTP {first}, then HTTP {second.status_code} after a 401 "
                    f"(file read {len(reads)} times)"
                )

        # Whatever a provider raises reaches the caller as a TokenError.
        broken = MetadataServiceProvider("http://127.0.0.1:9/nothing-here", "x")
        try:
            TokenManager(broken).get_token()
        except TokenError as exc:
            print(f"unreachable metadata endpoint: {type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
