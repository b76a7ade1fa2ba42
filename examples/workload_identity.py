"""Workload identity: the platform's rotating token file is the client assertion.

    python examples/workload_identity.py

Kubernetes (a projected service-account token), GitHub Actions, Azure, AWS
and GCP hand a workload a short-lived JWT in a file that they rewrite before
it expires. Give its path as ``client_assertion``: it is read again at each
token request, so a rotated file is picked up without a restart, and the
token it buys is shared by every worker like any other.

Runs offline: a thread plays the platform, writing a new signed token to a
file; the local identity provider trusts the platform's key.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from alf_session import TokenSession
from alf_session.testing import local_servers

PLATFORM_KEY = ec.generate_private_key(ec.SECP256R1())


def rotate(path: Path, client_id: str, audience: str, serial: int) -> None:
    """What the platform does every so often: write a fresh token atomically."""
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": audience, "jti": f"rotation-{serial}"}
    claims.update(iat=now, exp=now + 300)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(jwt.encode(claims, PLATFORM_KEY, algorithm="ES256"))
    tmp.replace(path)  # readers see the old file or the new one, never half of one


def main() -> None:
    client = "orders-service"
    trusted = {client: PLATFORM_KEY.public_key()}
    with (
        tempfile.TemporaryDirectory() as tmp,
        local_servers(client_id=client, client_keys=trusted) as (idp, api),
    ):
        # In production, on Kubernetes: client_assertion=Path(
        #     "/var/run/secrets/tokens/idp-token")  (a projected volume, see README)
        token_file = Path(tmp) / "token"
        rotate(token_file, client, idp.token_url, 1)
        with TokenSession(idp.token_url, client, client_assertion=token_file) as session:
            session.get(f"{api.base_url}/orders").raise_for_status()
            session.get(f"{api.base_url}/orders").raise_for_status()
            print(f"2 requests, {idp.count} token request")

            rotate(token_file, client, idp.token_url, 2)  # the platform rotates the file
            idp.revoke()  # and the API wants a new token
            session.get(f"{api.base_url}/orders").raise_for_status()
            sent = [
                jwt.decode(r.form["client_assertion"], options={"verify_signature": False})
                for r in idp.requests
            ]
            print("assertions sent:", json.dumps([c["jti"] for c in sent]))


if __name__ == "__main__":
    main()
