"""Measures 8, 9 and 10: async clients (httpx, aiohttp) on the same token engine.

8. Async hot path: one ``await client.get(url)`` with a cached token through
   ``httpx.MockTransport`` (no network), against ``httpx.AsyncClient`` with a
   static ``Authorization`` header through the same transport (the floor).
9. Async herd: 200 tasks start cold on one client while the token endpoint
   takes 300 ms; token requests, and the longest the event loop stalled.
10. Async expiry stall: 8 tasks loop requests over several 2 s token
    lifetimes with a 300 ms token endpoint: latencies, requests over 250 ms,
    failures, token requests, the longest loop stall.

The API is the mock transport for the httpx clients (only the token requests
touch the network, so what stalls is the token engine) and the loopback API
for aiohttp, which has no mock transport.

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
import os
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
from _hot_path import _hot_rounds, pin_to_one_core

import alf_session

MOCK_BASE = "https://api.bench.test"
MOCK_URL = MOCK_BASE + "/orders"


def api_mock(env: Env, *, yielding: bool = False) -> Any:
    """The API as an ``httpx.MockTransport`` (no network): 200 for a token the
    token server holds valid, 401 otherwise, as the loopback API answers.

    Mounted for ``MOCK_BASE`` only: token requests still go to the real token
    server on loopback. So the only network I/O an httpx client does is its
    token requests, and a stall shows the token engine, not the transport.

    ``yielding``: each answer lets the event loop run once, as a real
    response does; without it, a task whose requests never suspend would
    keep the loop (and every other task) until it stops.
    """
    import httpx

    check = env.tokens.check

    def answer(request: httpx.Request) -> httpx.Response:
        header = request.headers.get("authorization", "")
        ok = header.startswith("Bearer ") and check(header[7:]) is None
        return httpx.Response(200 if ok else 401, content=b"{}")

    async def answer_later(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0)
        return answer(request)

    return httpx.MockTransport(answer_later if yielding else answer)


class AsyncContender:
    name = ""
    dist = ""
    module = ""
    mockable = True  # runs over api_mock (an httpx client)

    def missing(self) -> str | None:
        try:
            importlib.import_module(self.module)
        except ImportError as exc:
            return f"not installed ({exc.name}); pip install -e '.[bench]'"
        return None

    async def build(self, token_url: str, *, api: Any = None, short: bool = False) -> Any:
        """A client with no token yet; ``api``: the transport to mount for MOCK_BASE."""
        raise NotImplementedError

    async def call(self, client: Any, url: str) -> int:
        response = await client.get(url)
        return int(response.status_code)

    async def close(self, client: Any) -> None:
        await client.aclose()


def _mounts(api: Any) -> dict[str, Any]:
    return {} if api is None else {"mounts": {MOCK_BASE: api}}


class AlfAsyncClient(AsyncContender):
    name = "alf-session AsyncTokenClient"
    dist = "alf-session"
    module = "alf_session.httpx"

    async def build(self, token_url: str, *, api: Any = None, short: bool = False) -> Any:
        from alf_session.httpx import AsyncTokenClient

        return AsyncTokenClient(token_url, CLIENT_ID, CLIENT_SECRET, timeout=30, **_mounts(api))


class AlfTokenAuth(AsyncContender):
    name = "alf-session TokenAuth on httpx.AsyncClient"
    dist = "alf-session"
    module = "alf_session.httpx"

    async def build(self, token_url: str, *, api: Any = None, short: bool = False) -> Any:
        import httpx

        from alf_session.httpx import TokenAuth

        manager = alf_session.TokenManager(
            alf_session.ClientCredentials(token_url, CLIENT_ID, CLIENT_SECRET)
        )
        return httpx.AsyncClient(auth=TokenAuth(manager), timeout=30, **_mounts(api))


class AlfAiohttp(AsyncContender):
    name = "alf-session aiohttp TokenMiddleware"
    dist = "aiohttp"
    module = "aiohttp"
    mockable = False  # aiohttp has no mock transport: the loopback API

    async def build(self, token_url: str, *, api: Any = None, short: bool = False) -> Any:
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

    async def build(self, token_url: str, *, api: Any = None, short: bool = False) -> Any:
        from authlib.integrations.httpx_client import AsyncOAuth2Client

        return AsyncOAuth2Client(
            CLIENT_ID,
            CLIENT_SECRET,
            token_endpoint=token_url,
            grant_type="client_credentials",
            leeway=1 if short else 60,
            timeout=30,
            **_mounts(api),
        )

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

    async def build(self, token_url: str, *, api: Any = None, short: bool = False) -> Any:
        import httpx
        import httpx_auth

        httpx_auth.OAuth2.token_cache.clear()  # global to the process
        auth = httpx_auth.OAuth2ClientCredentials(
            token_url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            early_expiry=0.5 if short else 30,
        )
        return httpx.AsyncClient(auth=auth, timeout=30, **_mounts(api))


CONTENDERS: list[AsyncContender] = [
    AlfAsyncClient(),
    AlfTokenAuth(),
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
            Column("cpu_us", "CPU µs", f2),
            Column("wall_ratio", "x floor", ratio),
            Column("cpu_ratio", "CPU x floor", ratio),
            Column("cpu_added_us", "+µs CPU", plus),
            Column("cpu_added_ci", "±95%", lambda x: f"±{x:.1f}"),
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
    hot = [c for c in CONTENDERS if c.mockable]
    names = [floor_name] + [c.name for c in hot]
    by_name = {c.name: c for c in hot}
    try:
        api = api_mock(env)
        static, _ = env.tokens.issue()
        clients[floor_name] = httpx.AsyncClient(
            mounts={MOCK_BASE: api}, headers={"Authorization": f"Bearer {static}"}
        )
        for contender in hot:
            why = contender.missing()
            if why:
                problems[contender.name] = why
                continue
            try:
                client = loop.run_until_complete(contender.build(env.token_url, api=api))
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
        cpu: dict[str, list[float]] = {name: [] for name in clients}
        added_wall: dict[str, list[float]] = {name: [] for name in clients}
        added_cpu: dict[str, list[float]] = {name: [] for name in clients}

        def timed(name: str) -> tuple[float, float]:
            w0, c0 = time.perf_counter(), time.thread_time()
            loop.run_until_complete(runners[name]())
            c1, w1 = time.thread_time(), time.perf_counter()
            w, c = (w1 - w0) / batch * 1e6, (c1 - c0) / batch * 1e6
            wall[name].append(w)
            cpu[name].append(c)
            return w, c

        # As measure 1: each batch paired with a floor batch next to it, in
        # random order, on one core, the collector off within a batch.
        order = [name for name in clients if name != floor_name]
        shuffler = random.Random(1)
        pinned = pin_to_one_core()
        gc.disable()
        try:
            _hot_rounds(rounds, order, floor_name, shuffler, timed, added_wall, added_cpu)
        finally:
            gc.enable()
            if pinned is not None:
                os.sched_setaffinity(0, pinned)
        calls = {name: _calls_per_request(loop, clients[name]) for name in clients}
        floor_wall = statistics.median(wall[floor_name])
        floor_cpu = statistics.median(cpu[floor_name])
        for name in names:
            if name in problems:
                result.na(name, problems[name])
                continue
            aw = statistics.median(added_wall[name]) if name != floor_name else 0.0
            ac = statistics.median(added_cpu[name]) if name != floor_name else 0.0
            result.add(
                name,
                wall_us=statistics.median(wall[name]),
                cpu_us=statistics.median(cpu[name]),
                wall_ratio=(floor_wall + aw) / floor_wall,
                cpu_ratio=(floor_cpu + ac) / floor_cpu,
                wall_added_us=aw,
                cpu_added_us=ac,
                cpu_added_ci=median_ci(added_cpu[name]) if name != floor_name else None,
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
        "paired with a floor batch, pinned to one core; x floor and +µs: median of the paired",
        "differences (CPU = time.thread_time()).",
        "API: httpx.MockTransport (no network; it checks the token with the token server),",
        "mounted for the API's URL; the one token request goes to the loopback token server.",
        "+calls: Python function calls per request over the floor (cProfile). aiohttp has no",
        "mock transport: it is in measures 9 and 10.",
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
    api = api_mock(env, yielding=True) if contender.mockable else None
    url = MOCK_URL if contender.mockable else env.api.base_url + "/orders"
    client = await contender.build(env.token_url, api=api)
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
        for contender in CONTENDERS:
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
        "300 ms on loopback; the API is measure 8's mock transport for the httpx clients (so",
        "the only I/O is token requests) and the loopback API for aiohttp. 'token reqs': the",
        "most of any run. 'max loop stall': the longest the event loop could not run a 5 ms",
        "ticker (a fetch that blocks the loop shows as ~300 ms). Target: 1, and no stall.",
    ]
    return result


# -- 10. expiry stall -----------------------------------------------------------------------


async def _stall_once(
    contender: AsyncContender, env: Env, duration: float, tasks: int
) -> tuple[list[float], int, int, float]:
    api = api_mock(env, yielding=True) if contender.mockable else None
    url = MOCK_URL if contender.mockable else env.api.base_url + "/orders"
    client = await contender.build(env.token_url, api=api, short=True)
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
    duration, tasks = (2.2, 8) if quick else (8.0, 8)
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
        for contender in CONTENDERS:
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
        "per library, token endpoint 300 ms on loopback; the API is measure 8's mock transport",
        "for httpx clients (it refuses expired tokens, so 'failed' counts them) and the",
        "loopback API for aiohttp. Peers' margins fit 2 s tokens: authlib leeway=1, httpx-auth",
        "early_expiry=0.5. Target: 0 over 250 ms, and no loop stall near 300 ms.",
    ]
    return result
