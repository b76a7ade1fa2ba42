"""One process, several services, a token for each.

    python examples/many_services.py

A service often calls several others: two APIs behind the company's identity
provider, each wanting a token for its own ``audience``, and a partner's API
behind the partner's identity provider. Make one TokenSession per API. Each
keeps its own token (the storage key is a hash of endpoint, client, scope and
audience), so they may all share one storage, and ``token_hosts`` makes sure
a token is only ever sent to the API it is meant for.

Runs offline: two token servers and three APIs on 127.0.0.1.
"""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

from alf_session import MemoryStorage, TokenSession
from alf_session.testing import APIServer, local_servers


def host(api: APIServer) -> str:
    return urlsplit(api.base_url).netloc  # "127.0.0.1:port"; "billing.example.com" in real life


def main() -> int:
    storage = MemoryStorage()  # one store for all tokens, as one Redis would be
    with (
        local_servers(client_id="orders", client_secret="s3cret") as (company, billing),
        local_servers(client_id="acme-orders", client_secret="p4rtner") as (partner, shipping),
    ):
        inventory = APIServer(company)  # a second API behind the company's provider
        inventory.start()
        try:
            sessions = {
                "billing": TokenSession(
                    company.token_url,
                    "orders",
                    "s3cret",
                    audience="https://billing.example",
                    token_storage=storage,
                    token_hosts=[host(billing)],
                ),
                "inventory": TokenSession(
                    company.token_url,
                    "orders",
                    "s3cret",
                    audience="https://inventory.example",
                    token_storage=storage,
                    token_hosts=[host(inventory)],
                ),
                "shipping": TokenSession(
                    partner.token_url,
                    "acme-orders",
                    "p4rtner",
                    token_storage=storage,
                    token_hosts=[host(shipping)],
                ),
            }
            apis = {"billing": billing, "inventory": inventory, "shipping": shipping}
            for name, session in sessions.items():
                statuses = [
                    session.get(f"{apis[name].base_url}/{name}").status_code for _ in range(2)
                ]
                print(f"{name:<10} → its API: HTTP {statuses}")

            audiences = sorted(r.form.get("audience", "") for r in company.requests)
            print(
                f"token requests: company {company.count} ({', '.join(audiences)}), "
                f"partner {partner.count}"
            )

            tokens = {name: {h for h in api.seen if h} for name, api in apis.items()}
            shared = tokens["billing"] & (tokens["inventory"] | tokens["shipping"])
            print(f"tokens seen by more than one API: {len(shared)}")

            # A request to another host goes out without this session's token.
            stray = sessions["billing"].get(f"{inventory.base_url}/inventory")
            print(
                f"billing session → inventory API: HTTP {stray.status_code}, "
                f"sent with a token: {inventory.seen[-1] is not None}"
            )
            for session in sessions.values():
                session.close()
        finally:
            inventory.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
