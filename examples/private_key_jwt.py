"""private_key_jwt: no shared secret, a private key signs each token request.

    pip install 'alf-session[jwt]'
    python examples/private_key_jwt.py

Runs offline: a local identity provider that knows only the client's public
key, verifies each assertion (signature, iss/sub/aud/exp) and refuses any
``jti`` it has seen before. The token endpoint is discovered from the issuer.
For Entra ID, Okta, Keycloak, Auth0 or Ping, keep the body of ``main`` with
your issuer, client id, key file and the ``kid`` you registered.
"""

from __future__ import annotations

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from alf_session import TokenSession
from alf_session.testing import local_servers


def main() -> None:
    key = ec.generate_private_key(ec.SECP256R1())  # in production: the path of a PEM file
    public = {"orders-service": key.public_key()}
    with local_servers(client_id="orders-service", client_keys=public) as (idp, api):
        # In production: TokenSession(issuer="https://login.example.com/tenant",
        #     client_id="orders-service", private_key="/etc/orders/key.pem", key_id="k1")
        with TokenSession(
            issuer=idp.issuer, client_id="orders-service", private_key=key, key_id="k1"
        ) as session:
            for _ in range(3):
                session.get(f"{api.base_url}/orders").raise_for_status()
            method = session.token_manager.provider.auth_method
            print(f"3 requests, {idp.count} token request, authenticated by {method}")
            print(f"metadata fetched {idp.metadata_requests} time(s)")

            idp.revoke()  # the API now answers 401: a new assertion, a new token
            session.get(f"{api.base_url}/orders").raise_for_status()
            jtis = {claims["jti"] for claims in idp.assertions}
            print(f"token requests: {idp.count}, distinct assertion jti: {len(jtis)}")
            header = jwt.get_unverified_header(idp.requests[0].form["client_assertion"])
            print(f"assertion header: alg={header['alg']} kid={header['kid']}")


if __name__ == "__main__":
    main()
