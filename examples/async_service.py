"""An async service (Starlette) that calls another service with AsyncTokenClient.

    pip install "alf-session[httpx]" starlette
    python examples/async_service.py

The app is a small gateway: ``GET /orders/summary`` calls the orders API with
the token of its own client credentials. One ``AsyncTokenClient`` lives as
long as the app (opened and closed by the lifespan) and serves every request:
the token is fetched once, whatever the number of requests in flight, and the
event loop never waits for the token endpoint.

Runs offline: ``main`` starts a token server and the orders API on
127.0.0.1 (the ones ``alf-session demo`` uses) and sends the app 50
concurrent requests in-process, through ``httpx.ASGITransport``. To serve the
app for real, give it its settings and run it with any ASGI server::

    ORDERS_API=https://orders.example TOKEN_ENDPOINT=https://idp.example/oauth/token \\
    CLIENT_ID=gateway CLIENT_SECRET=... uvicorn async_service:app
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from alf_session.httpx import AsyncTokenClient
from alf_session.testing import local_servers


def create_app(
    orders_api: str, token_endpoint: str, client_id: str, client_secret: str
) -> Starlette:
    """The gateway, calling ``orders_api`` with a token for ``client_id``."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncTokenClient(
            token_endpoint,
            client_id,
            client_secret,
            scope="orders:read",
            # The token goes to the orders API only, whatever URL a caller
            # makes the client follow.
            token_hosts=[urlsplit(orders_api).netloc],
            base_url=orders_api,
            timeout=10,
        ) as client:
            app.state.orders = client
            yield

    async def summary(request: Request) -> JSONResponse:
        orders: AsyncTokenClient = request.app.state.orders
        response = await orders.get("/orders")
        response.raise_for_status()
        return JSONResponse({"orders": response.json()["path"], "retried": bool(response.history)})

    return Starlette(routes=[Route("/orders/summary", summary)], lifespan=lifespan)


async def demo() -> None:
    with local_servers(client_id="gateway", client_secret="s3cret") as (idp, api):
        app = create_app(api.base_url, idp.token_url, "gateway", "s3cret")
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as users:
                answers = await asyncio.gather(*(users.get("/orders/summary") for _ in range(50)))
                ok = sum(a.status_code == 200 for a in answers)
                print(f"50 concurrent requests: {ok} answered 200; token requests: {idp.count}")

                # The identity provider revokes the token: the orders API
                # answers 401, the client drops that token, gets a new one and
                # sends the request once more.
                idp.revoke()
                answer = await users.get("/orders/summary")
                print(
                    f"after the revocation: HTTP {answer.status_code}, "
                    f"retried: {answer.json()['retried']}; token requests: {idp.count}"
                )
            stats = app.state.orders.token_manager.stats
            print(f"API calls: {api.calls}, 401s retried: {stats.retries_on_401}")


def _app_from_environment() -> Starlette | None:
    names = ("ORDERS_API", "TOKEN_ENDPOINT", "CLIENT_ID", "CLIENT_SECRET")
    if not all(os.environ.get(name) for name in names):
        return None
    return create_app(*(os.environ[name] for name in names))


#: For ``uvicorn async_service:app`` (None until the settings are in the environment).
app = _app_from_environment()

if __name__ == "__main__":
    asyncio.run(demo())
