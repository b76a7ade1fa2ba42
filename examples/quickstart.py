"""Quickstart: a requests.Session that gets, caches and renews its own token.

    python examples/quickstart.py

Runs offline: it starts a token server and a protected API on 127.0.0.1 (the
ones ``alf-session demo`` uses). For your own identity provider, keep the
body of ``main`` and replace the URL and the credentials.
"""

from __future__ import annotations

from alf_session import InvalidClient, TokenSession
from alf_session.testing import local_servers


def main() -> None:
    with local_servers(client_id="orders-service", client_secret="s3cret") as (idp, api):
        # In production: TokenSession("https://idp.example/oauth/token",
        #     "orders-service", os.environ["CLIENT_SECRET"], scope="orders:read")
        with TokenSession(
            idp.token_url, "orders-service", "s3cret", scope="orders:read"
        ) as session:
            for _ in range(3):
                session.get(f"{api.base_url}/orders").raise_for_status()
            print(f"3 requests, {idp.count} token request: the token is cached in memory")

            # The identity provider revokes the token (a leak, a key rotation):
            # the API answers 401, the session drops that token, gets a new
            # one and sends the request once more.
            idp.revoke()
            response = session.get(f"{api.base_url}/orders")
            print(
                f"after the revocation: HTTP {response.status_code}, "
                f"retried once after HTTP {response.history[0].status_code}"
            )
            stats = session.token_manager.stats
            print(f"token requests: {idp.count}, 401s retried: {stats.retries_on_401}")

        # A wrong secret is an exception that says what the server said, and
        # what to check; it never contains the secret.
        with TokenSession(idp.token_url, "orders-service", "wrong") as session:
            try:
                session.get(f"{api.base_url}/orders")
            except InvalidClient as exc:
                print(f"wrong secret: {type(exc).__name__}: {exc.error}: {exc.error_description}")


if __name__ == "__main__":
    main()
