"""mTLS (RFC 8705): a client certificate authenticates, and the token is bound to it.

    pip install trustme   # only to make the example's certificates
    python examples/mtls.py

Runs offline: ``trustme`` makes a CA, a server certificate and a client
certificate; the local identity provider authenticates the client by its
certificate (``tls_client_auth``) and binds the token to it, and the API
accepts the token only over a connection that presents the same certificate.
``TokenSession(cert=...)`` presents it on both.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

import trustme

from alf_session import TokenSession
from alf_session._servers import APIServer, TokenServer, thumbprint


def main() -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    client_cert = ca.issue_cert("orders-service@clients.example")
    with tempfile.TemporaryDirectory() as tmp:
        ca_file, cert_file = Path(tmp) / "ca.pem", Path(tmp) / "client.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        client_cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))

        def tls(mode: ssl.VerifyMode) -> ssl.SSLContext:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_cert.configure_cert(ctx)
            ca.configure_trust(ctx)
            ctx.verify_mode = mode
            return ctx

        der = ssl.PEM_cert_to_DER_cert(client_cert.cert_chain_pems[0].bytes().decode())
        idp = TokenServer(
            client_id="orders-service", client_certs={"orders-service": thumbprint(der)}
        )
        api = APIServer(idp)
        idp.start(tls=tls(ssl.CERT_OPTIONAL))
        api.start(tls=tls(ssl.CERT_REQUIRED))
        try:
            # In production: TokenSession(issuer="https://idp.example",
            #     client_id="orders-service", cert=("/etc/orders/cert.pem", "/etc/orders/key.pem"))
            with TokenSession(idp.token_url, "orders-service", cert=str(cert_file)) as session:
                # The example's own CA; yours is in the system store.
                session.token_manager.provider.verify = str(ca_file)
                response = session.get(f"{api.base_url}/orders", verify=str(ca_file))
                print(
                    f"HTTP {response.status_code}, {idp.count} token request, "
                    f"authenticated by {session.token_manager.provider.auth_method}"
                )
                bound = idp.requests[0].client_cert == thumbprint(der)
                print(f"token bound to the certificate: {bound}")
        finally:
            api.stop()
            idp.stop()


if __name__ == "__main__":
    main()
