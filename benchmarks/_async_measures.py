"""Measures 8, 9 and 10: async clients (httpx, aiohttp) on the same token engine.

8. Async hot path: one ``await client.get(url)`` with a cached token through
   ``httpx.MockTransport`` (no network), against ``httpx.AsyncClient`` with a
   static ``Authorization`` header through the same transport (the floor).
9. Async herd: 200 tasks start cold on one client while the token endpoint
   takes 300 ms; token requests, and the longest the event loop stalled.
10. Async expiry stall: 32 tasks loop requests to the real API over several
    2 s token lifetimes with a 300 ms token endpoint: latencies, requests over
    250 ms, failures, token requests, the longest loop stall.

The peers are the async clients people use for client credentials: Authlib's
``AsyncOAuth2Client`` (httpx) and httpx-auth's ``OAuth2ClientCredentials``
(an ``httpx.Auth``; it fetches with a blocking ``httpx.Client`` inside the
event loop). Each is set up the way its documentation shows.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import importlib
import json
import pstats
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _harness import (
    CLIENT_ID,
    CLIENT_SECRET,
    MEASURES,
    SLOW_MS,
    Column,
    Env,
    Result,
    f1,
    f2,
    median_ci,
    percentile,
    plus,
    ratio,
)

import alf_session

MOCK_BASE = "https://api.bench.test"
MOCK_URL = MOCK_BASE + "/orders"
MOCK_TOKEN_URL = "https://idp.bench.test/token"  # answered by the mock transport too
HEADER = "Bearer " + "x" * 40


def _mock_transport() -> Any:
    """Answers the API (200 with a token, 401 without) and a token endpoint."""
    import httpx

    token_body = json.dumps(
        {"access_token": "x" * 40, "token_type": "Bearer", "expires_in": 3600}
    ).encode()

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return httpx.Response(
                200, content=token_body, headers={"Content-Type": "application/json"}
            )
        ok = "authorization" in request.headers
        return httpx.Response(200 if ok else 401, content=b"{}")

    return httpx.MockTransport(handle)


class AsyncContender:
    name = ""
    dist = ""
    module = ""

    def missing(self) -> str | None:
        try:
            importlib.import_module(self.module)
        except ImportError as exc:
            return f"not installed ({exc.name}); pip install -e '.[bench]'"
        return None

    async def build(self, token_url: str, *, transport: Any = None, short: bool = False) -> Any:
        """A client with no token yet (``transport``: the mock, for measure 8)."""
        raise NotImplementedError

    async def call(self, client: Any, url: str) -> int:
        response = await client.get(url)
        return int(response.status_code)

    async def close(self, client: Any) -> None:
        await client.aclose()


class AlfAsyncClient(AsyncContender):
    name = "alf-session AsyncTokenClient"
    dist = "alf-session"
    module = "alf_session.httpx"

    async def build(self, token_url: str, *, transport: Any = None, short: bool = False) -> Any:
        from alf_session.httpx import AsyncTokenClient

        if transport is not None:
            # The token comes from the mock's endpoint, through requests: give
            # the manager a provider that asks the mock transport instead.
            manager = alf_session.TokenManager(
                lambda: alf_session.Token(
                    "x" * 40, expires_at=time.time() + 3600, issued_at=time.time()
                )
            )
            return AsyncTokenClient(token_manager=manager, transport=transport)
        return AsyncTokenClient(token_url, CLIENT_ID, CLIENT_SECRET, timeout=30)


class AlfTokenAuth(AlfAsyncClient):
    name = "alf-session TokenAuth on httpx.AsyncClient"

    async def build(self, token_url: str, *, transport: Any = None, short: bool = False) -> Any:
        import httpx

        from alf_session.httpx import TokenAuth

        client = await super().build(token_url, transport=transport, short=short)
        manager = client.token_manager
        await client.aclose()
        return httpx.AsyncClient(auth=TokenAuth(manager), transport=transport, timeout=30)


class AlfAiohttp(AsyncContender):
    name = "alf-session aiohttp TokenMiddleware"
    dist = "aiohttp"
    module = "aiohttp"

    async def build(self, token_url: str, *, transport: Any = None, short: bool = False) -> Any:
        if transport is not None:
            raise NotImplementedError("aiohttp has no mock transport")
        import aiohttp

        from alf_session.aiohttp import TokenMiddleware

        manager = alf_session.TokenManager(
            alf_session.ClientCredentials(token_url, CLIENT_ID, CLIENT_SECRET)
        )
        return aiohttp.ClientSession(middlewares=(TokenMiddleware(manager),))

    async def call(self, client: Any, url: str) -> int:
        async with client.get(url) as response:
            await response.read()
            return int(response.status)

    async def close(self, client: Any) -> None:
        await client.close()


class Authlib(AsyncContender):
    name = "authlib AsyncOAuth2Client"
    dist = "authlib"
    module = "authlib.integrations.httpx_client"

    async def build(self, token_url: str, *, transport: Any = None, short: bool = False) -> Any:
        from authlib.integrations.httpx_client import AsyncOAuth2Client

        if transport is not None:
            token_url = MOCK_TOKEN_URL
        client = AsyncOAuth2Client(
            CLIENT_ID,
            CLIENT_SECRET,
            token_endpoint=token_url,
            grant_type="client_credentials",
            leeway=1 if short else 60,
            transport=transport,
            timeout=30,
        )
        client.glue_fetched = False
        return client

    async def call(self, client: Any, url: str) -> int:
        # Its documentation has the user fetch the first token; it renews
        # client-credentials tokens by itself after that.
        if not client.token:
            await client.fetch_token()
        response = await client.get(url)
        return int(response.status_code)


class HttpxAuth(AsyncContender):
    name = "httpx-auth OAuth2ClientCredentials"
    dist = "httpx-auth"
    module = "httpx_auth"

    async def build(self, token_url: str, *, transport: Any = None, short: bool = False) -> Any:
        import httpx
        import httpx_auth

        httpx_auth.OAuth2.token_cache.clear()  # global to the process
        if transport is not None:
            token_url = MOCK_TOKEN_URL
        auth = httpx_auth.OAuth2ClientCredentials(
            token_url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            early_expiry=0.5 if short else 30,
            client=httpx.Client(transport=transport) if transport is not None else None,
        )
        return httpx.AsyncClient(auth=auth, transport=transport, timeout=30)


CONTENDERS: list[AsyncContender] = [AlfAsyncClient(), AlfTokenAuth(), Authlib(), HttpxAuth()]
WIRE_CONTENDERS: list[AsyncContender] = [
    AlfAsyncClient(),
    AlfAiohttp(),
    Authlib(),
    HttpxAuth(),
]


class LoopLag:
    """Ticks every ``interval`` seconds; the longest gap between ticks is how long
    the event loop was kept from running (plus the interval)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.max_gap = 0.0
        self._stop = False

    async def run(self) -> None:
        last = time.perf_counter()
        while not self._stop:
            await asyncio.sleep(self.interval)
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - last)
            last = now

    def stop(self) -> None:
        self._stop = True

    @property
    def stall_ms(self) -> float:
        return max(0.0, (self.max_gap - self.interval) * 1000)


# -- 8. hot path ----------------------------------------------------------------------------


def measure_async_hot_path(env: Env, quick: bool) -> Result:
    result = Result(
        8,
        MEASURES[8],
        [
            Column("wall_us", "wall µs", f2),
            Column("wall_ratio", "x floor", ratio),
            Column("wall_added_us", "+µs", plus),
            Column("wall_added_ci", "±95%", lambda x: f"±{x:.1f}"),
            Column("added_calls", "+calls", lambda x: f"{x:+d}"),
        ],
    )
    try:
        import httpx
    except ImportError:
        result.na("httpx.AsyncClient + static header (floor)", "httpx not installed")
        return result
    rounds, batch = (7, 100) if quick else (31, 200)
    floor_name = "httpx.AsyncClient + static header (floor)"
    loop = asyncio.new_event_loop()
    clients: dict[str, Any] = {}
    problems: dict[str, str] = {}
    names = [floor_name] + [c.name for c in CONTENDERS]
    by_name = {c.name: c for c in CONTENDERS}
    try:
        transport = _mock_transport()
        clients[floor_name] = httpx.AsyncClient(
            transport=transport, headers={"Authorization": HEADER}
        )
        for contender in CONTENDERS:
            why = contender.missing()
            if why:
                problems[contender.name] = why
                continue
            try:
                client = loop.run_until_complete(
                    contender.build(env.token_url, transport=transport)
                )
                status = loop.run_until_complete(contender.call(client, MOCK_URL))
                if status != 200:
                    raise RuntimeError(f"first request answered {status}")
                clients[contender.name] = client
            except Exception as exc:
                problems[contender.name] = f"{type(exc).__name__}: {exc}"[:120]

        def batch_of(name: str) -> Callable[[], Awaitable[None]]:
            get = clients[name].get

            async def run() -> None:
                for _ in range(batch):
                    await get(MOCK_URL)

            return run

        runners = {name: batch_of(name) for name in clients}
        for name in clients:  # warm up
            for _ in range(3):
                loop.run_until_complete(runners[name]())
        wall: dict[str, list[float]] = {name: [] for name in clients}
        added: dict[str, list[float]] = {name: [] for name in clients}

        def timed(name: str) -> float:
            start = time.perf_counter()
            loop.run_until_complete(runners[name]())
            per = (time.perf_counter() - start) / batch * 1e6
            wall[name].append(per)
            return per

        order = [name for name in clients if name != floor_name]
        shuffler = random.Random(1)
        gc.disable()
        try:
            for _ in range(rounds):
                gc.collect()
                shuffler.shuffle(order)
                for name in order:
                    if shuffler.random() < 0.5:
                        floor = timed(floor_name)
                        mine = timed(name)
                    else:
                        mine = timed(name)
                        floor = timed(floor_name)
                    added[name].append(mine - floor)
        finally:
            gc.enable()
        calls = {name: _calls_per_request(loop, clients[name]) for name in clients}
        floor_us = statistics.median(wall[floor_name])
        for name in names:
            if name in problems:
                result.na(name, problems[name])
                continue
            plus_us = statistics.median(added[name]) if name != floor_name else 0.0
            result.add(
                name,
                wall_us=statistics.median(wall[name]),
                wall_ratio=(floor_us + plus_us) / floor_us,
                wall_added_us=plus_us,
                wall_added_ci=median_ci(added[name]) if name != floor_name else None,
                added_calls=calls[name] - calls[floor_name],
            )
    finally:
        for name, client in clients.items():
            contender = by_name.get(name)
            closing = contender.close(client) if contender else client.aclose()
            loop.run_until_complete(closing)
        loop.close()
    result.notes += [
        f"{rounds} rounds x {batch} awaited gets per library in one asyncio loop, each batch",
        "paired with a floor batch; x floor and +µs: median of the paired differences.",
        "Transport: httpx.MockTransport (no network); it also answers the peers' token",
        "requests. +calls: Python function calls per request over the floor (cProfile).",
    ]
    return result


def _calls_per_request(loop: asyncio.AbstractEventLoop, client: Any, n: int = 50) -> int:
    async def run() -> None:
        for _ in range(n):
            await client.get(MOCK_URL)

    profiler = cProfile.Profile()
    profiler.enable()
    loop.run_until_complete(run())
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(entry[1] for entry in stats.stats.values())  # type: ignore[attr-defined]
    return round(total / n)


# -- 9. herd --------------------------------------------------------------------------------


async def _herd_once(contender: AsyncContender, env: Env, tasks: int) -> tuple[int, int, float]:
    client = await contender.build(env.token_url)
    url = env.api.base_url + "/orders"
    before = env.tokens.count
    lag = LoopLag()
    watcher = asyncio.ensure_future(lag.run())
    try:
        statuses = await asyncio.gather(
            *(contender.call(client, url) for _ in range(tasks)), return_exceptions=True
        )
    finally:
        lag.stop()
        await watcher
        await contender.close(client)
    failed = sum(1 for s in statuses if s != 200)
    return env.tokens.count - before, failed, lag.stall_ms


def measure_async_herd(env: Env, quick: bool) -> Result:
    rounds, tasks = (1, 200) if quick else (3, 200)
    result = Result(
        9,
        MEASURES[9],
        [
            Column("token_requests", "token reqs", str),
            Column("failed", "failed", str),
            Column("stall_ms", "max loop stall ms", f1),
        ],
    )
    saved = env.tokens.delay
    env.tokens.delay = 0.3
    try:
        for contender in WIRE_CONTENDERS:
            why = contender.missing()
            if why:
                result.na(contender.name, why)
                continue
            runs = []
            try:
                for _ in range(rounds):
                    runs.append(asyncio.run(_herd_once(contender, env, tasks)))
            except Exception as exc:
                result.na(contender.name, f"{type(exc).__name__}: {exc}"[:120])
                continue
            result.add(
                contender.name,
                token_requests=max(r[0] for r in runs),
                token_requests_all=[r[0] for r in runs],
                failed=sum(r[1] for r in runs),
                stall_ms=max(r[2] for r in runs),
            )
    finally:
        env.tokens.delay = saved
    result.notes += [
        f"{tasks} tasks x {rounds} run(s), each on a new client with no token, token endpoint",
        "300 ms; 'token reqs': the most of any run. 'max loop stall': the longest the event",
        "loop could not run a 5 ms ticker (a blocking fetch shows up as ~300 ms). Target: 1.",
    ]
    return result


# -- 10. expiry stall -----------------------------------------------------------------------


async def _stall_once(
    contender: AsyncContender, env: Env, duration: float, tasks: int
) -> tuple[list[float], int, int, float]:
    client = await contender.build(env.token_url, short=True)
    url = env.api.base_url + "/orders"
    await contender.call(client, url)  # the cold start is measure 9's business
    before = env.tokens.count
    latencies: list[float] = []
    failed = [0]
    deadline = time.perf_counter() + duration
    lag = LoopLag()
    watcher = asyncio.ensure_future(lag.run())

    async def work() -> None:
        while True:
            start = time.perf_counter()
            if start >= deadline:
                return
            try:
                ok = await contender.call(client, url) == 200
            except Exception:
                ok = False
            latencies.append((time.perf_counter() - start) * 1000)
            failed[0] += not ok

    try:
        await asyncio.gather(*(work() for _ in range(tasks)))
    finally:
        lag.stop()
        await watcher
        await contender.close(client)
    return latencies, failed[0], env.tokens.count - before, lag.stall_ms


def measure_async_stall(env: Env, quick: bool) -> Result:
    duration, tasks = (2.2, 32) if quick else (8.0, 32)
    result = Result(
        10,
        MEASURES[10],
        [
            Column("requests", "requests", str),
            Column("p50_ms", "p50 ms", f2),
            Column("p99_ms", "p99 ms", f1),
            Column("max_ms", "max ms", f1),
            Column("slow", f"> {SLOW_MS:g} ms", str),
            Column("failed", "failed", str),
            Column("token_requests", "token reqs", str),
            Column("stall_ms", "loop stall ms", f1),
        ],
    )
    saved = env.tokens.expires_in, env.tokens.delay
    env.tokens.expires_in, env.tokens.delay = 2, 0.3
    try:
        for contender in WIRE_CONTENDERS:
            why = contender.missing()
            if why:
                result.na(contender.name, why)
                continue
            try:
                lat, bad, fetched, stall = asyncio.run(_stall_once(contender, env, duration, tasks))
            except Exception as exc:
                result.na(contender.name, f"{type(exc).__name__}: {exc}"[:120])
                continue
            ordered = sorted(lat)
            result.add(
                contender.name,
                requests=len(ordered),
                p50_ms=percentile(ordered, 0.5),
                p99_ms=percentile(ordered, 0.99),
                max_ms=ordered[-1] if ordered else float("nan"),
                slow=sum(1 for x in ordered if x > SLOW_MS),
                failed=bad,
                token_requests=fetched,
                stall_ms=stall,
            )
            with env.api._lock:
                env.api.seen.clear()
    finally:
        env.tokens.expires_in, env.tokens.delay = saved
    result.notes += [
        f"{tasks} tasks in one event loop for {duration:g} s ({duration / 2:g} token lifetimes)",
        "per library, real API on loopback, token endpoint 300 ms. Peers' margins fit 2 s",
        "tokens: authlib leeway=1, httpx-auth early_expiry=0.5. Target: 0 over 250 ms.",
    ]
    return result
