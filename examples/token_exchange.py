"""Token exchange (RFC 8693): workload token -> STS -> API token, two managers, no glue.

    python examples/token_exchange.py

Runs offline: an upstream identity provider issues the workload's own token;
a security token service (STS) exchanges any valid upstream token for a token
for the API. The exchange's subject token is a TokenManager: whatever it has
(cached, renewed, shared through storage) is what gets exchanged.
"""

from __future__ import annotations

from alf_session import ClientCredentials, TokenExchange, TokenManager, TokenSession
from alf_session._servers import APIServer, TokenServer


def main() -> None:
    upstream = TokenServer(client_id="orders-service", client_secret="workload-secret")
    sts = TokenServer(
        client_id="orders-service",
        client_secret="sts-secret",
        subject_validator=lambda token, _type: upstream.subject_of(token),
    )
    api = APIServer(sts)
    for server in (upstream, sts, api):
        server.start()
    try:
        workload = TokenManager(
            ClientCredentials(upstream.token_url, "orders-service", "workload-secret")
        )
        exchange = TokenExchange(
            sts.token_url,
            subject_token=workload,
            client_id="orders-service",
            client_secret="sts-secret",
            audience="orders-api",
        )
        with TokenSession(token_manager=TokenManager(exchange)) as session:
            for _ in range(3):
                session.get(f"{api.base_url}/orders").raise_for_status()
            print(f"3 API requests: {upstream.count} upstream token request, {sts.count} exchange")
            form = sts.requests[0].form
            print(
                f"subject token type: {form['subject_token_type'].rsplit(':', 1)[1]}, "
                f"audience: {form['audience']!r}"
            )

            upstream.revoke()  # the workload token is revoked: the STS refuses it ...
            sts.revoke()  # ... and the API refuses the exchanged one
            session.get(f"{api.base_url}/orders").raise_for_status()
            print(
                f"after revocation: {upstream.count} upstream token requests, {sts.count} exchanges"
            )
    finally:
        for server in (api, sts, upstream):
            server.stop()


if __name__ == "__main__":
    main()
