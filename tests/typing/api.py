"""The public API as a user types it. Checked by ``mypy --strict``, never run."""

from __future__ import annotations

import requests
from urllib3.util.retry import Retry

import alf_session.otel
from alf_session import (
    BearerAuth,
    ClientCredentials,
    ClientSecretJwt,
    DiscoveryError,
    InvalidClient,
    JwtBearer,
    MemoryStorage,
    OAuthError,
    PasswordCredentials,
    PrivateKeyJwt,
    ServerMetadata,
    Token,
    TokenAdapter,
    TokenError,
    TokenEvent,
    TokenExchange,
    TokenManager,
    TokenSession,
    TokenStats,
    discover,
)


def session_from_credentials() -> requests.Response:
    session = TokenSession(
        "https://idp.example/oauth/token",
        "my-client",
        "s3cret",
        scope=["orders:read", "orders:write"],
        audience="https://api.example/",
        token_retry=Retry(total=5, status_forcelist=[500], backoff_factor=0.3),
        token_timeout=(3.05, 10),
        auth_method="client_secret_post",
        token_hosts=["api.example", "localhost:8080"],
    )
    with session:
        response: requests.Response = session.get("https://api.example/orders", timeout=5)
    return response


def manager_and_friends() -> None:
    provider = ClientCredentials("https://idp.example/token", "id", "secret", scope="a b")
    manager = TokenManager(provider, MemoryStorage(), leeway=30, refresh_ahead=0.75)
    token: Token = manager.get_token()
    header: str = token.header_value
    expires_at: float | None = token.expires_at
    remaining: float | None = token.expires_in
    expired: bool = token.expired
    again = Token.from_dict(token.to_dict())
    manager.invalidate(again)
    manager.invalidate()
    fresh: Token = manager.force_refresh()
    stats: TokenStats = manager.stats
    fetches: int = stats.fetches + stats.hits + stats.refreshes + stats.retries_on_401
    print(header, expires_at, remaining, expired, fresh, fetches, stats.storage_errors)

    sdk = requests.Session()
    sdk.auth = BearerAuth(manager)
    sdk.mount("https://api.example/", TokenAdapter(manager, pool_maxsize=20))
    TokenSession(token_manager=manager).close()


def manager_options_through_the_session() -> None:
    # The TokenManager options TokenSession passes on are typed keywords too.
    session = TokenSession(
        "https://idp.example/oauth/token",
        "my-client",
        "s3cret",
        leeway=10,
        refresh_ahead=None,
        failure_ttl=30.0,
        key="orders-client",
        clock=lambda: 0.0,
        token_storage="redis://localhost:6379/0",
    )
    session.close()
    manager = TokenManager(
        ClientCredentials("https://idp.example/token", "id", "secret"), "memory://"
    )
    hosts: frozenset[str] | None = TokenSession(token_manager=manager).token_hosts
    print(hosts, BearerAuth(manager, token_hosts=["api.example"]).token_hosts)
    TokenAdapter(manager, token_hosts="api.example", max_retries=Retry(total=2), pool_block=True)


def password_grant() -> Token:
    provider = PasswordCredentials("https://idp.example/token", "id", None, "alice", "pw")
    return TokenManager(provider).get_token()


def custom_providers() -> None:
    class Vault:
        def fetch_token(self) -> Token:
            return Token("from-vault", expires_at=None)

    TokenManager(Vault())
    TokenManager(lambda: {"access_token": "abc", "expires_in": 60})
    TokenManager(lambda: "bare-token")


def errors() -> str:
    try:
        TokenSession("https://idp.example/token", "id", "secret").get("https://api.example/")
    except InvalidClient as exc:
        return exc.error + (exc.error_description or "") + (exc.error_uri or "")
    except OAuthError as exc:
        return exc.error
    except TokenError as exc:
        return "" if exc.response is None else str(exc.response.status_code)
    return ""


def credentials_without_secrets() -> list[Token]:
    from pathlib import Path

    keyed = TokenSession(
        issuer="https://login.example/tenant",
        client_id="orders",
        private_key="/etc/orders/key.pem",
        key_id="k1",
        signing_alg="ES256",
        assertion_audience="https://login.example/tenant",
        cert=("/etc/orders/cert.pem", "/etc/orders/key.pem"),
    )
    keyed.close()
    federated = ClientCredentials(
        "https://idp.example/token",
        "orders",
        client_assertion=Path("/var/run/secrets/tokens/idp-token"),
    )
    by_object = ClientCredentials(
        "https://idp.example/token", "orders", auth_method=PrivateKeyJwt(b"-----BEGIN ...")
    )
    hmac = ClientCredentials(
        "https://idp.example/token", "orders", auth_method=ClientSecretJwt("x" * 32)
    )
    grant = JwtBearer("https://idp.example/token", lambda: "a.b.c", client_id="orders")
    exchange = TokenExchange(
        "https://sts.example/token",
        TokenManager(federated),
        actor_token=Path("/run/actor"),
        requested_token_type="urn:ietf:params:oauth:token-type:access_token",
        audience="billing",
        resource=["https://billing.example/"],
    )
    try:
        metadata: ServerMetadata = discover("https://login.example/tenant", timeout=3)
        endpoint: str = metadata.token_endpoint_for(mtls=False)
        del endpoint
    except DiscoveryError as exc:
        print(exc)
    return [p.fetch_token() for p in (federated, by_object, hmac, grant, exchange)]


def events_and_metrics() -> list[str]:
    seen: list[TokenEvent] = []
    manager = TokenManager(lambda: "bare-token", on_event=seen.append)
    manager.get_token()
    flushed: bool = manager.flush_events(timeout=1.0)
    alf_session.otel.instrument()
    alf_session.otel.uninstrument()
    kinds = [event.kind for event in seen if flushed]
    durations = [event.duration or 0.0 for event in seen]
    return [*kinds, str(sum(durations)), str(seen[0].to_dict()["credential"])]


async def async_clients(manager: TokenManager) -> int:
    import aiohttp
    import httpx

    from alf_session.aiohttp import TokenMiddleware
    from alf_session.httpx import AsyncTokenClient, TokenAuth, TokenClient

    token: Token = await manager.aget_token()
    async with AsyncTokenClient(
        "https://idp.example/token", "id", "secret", scope=["a", "b"], timeout=5.0
    ) as client:
        response: httpx.Response = await client.get("https://api.example/")
        same: TokenManager = client.token_manager
    with TokenClient(token_manager=same, token_hosts=["api.example"]) as sync_client:
        sync_client.get("https://api.example/")
    httpx.Client(auth=TokenAuth(manager, token_hosts="api.example"))
    async with aiohttp.ClientSession(middlewares=[TokenMiddleware(manager)]) as session:
        async with session.get("https://api.example/") as answer:
            return answer.status + response.status_code + len(token.access_token)
