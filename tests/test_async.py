"""``await manager.aget_token()``: the same engine as threads, without blocking the loop.

Each test runs under asyncio and under trio (anyio's pytest plugin), against
the real loopback token server (and real Redis where storage is shared).

How "the loop never stalled" is shown without asserting a duration: a probe
coroutine ticks every few milliseconds and notes each tick that found the
token request arrived at the server but not yet answered. A slow path that
blocked the loop for the fetch would let no tick run in that window, so the
count would be 0, however fast or slow the machine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from alf_session import (
    ClientCredentials,
    InvalidClient,
    RedisStorage,
    Token,
    TokenManager,
)
from alf_session._servers import TokenServer
from alf_session.testing import StaticTokenProvider

from .helpers import FakeClock, run_threads

if TYPE_CHECKING:
    from tests.storage_fixtures import RedisServer

pytest_plugins = ["tests.storage_fixtures"]

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class GatedProvider:
    """A real provider whose token requests wait for :meth:`release`.

    ``entered`` is set when a fetch starts waiting: a test can then line up
    more callers behind that one fetch, with no sleep and no race.
    """

    def __init__(self, inner: ClientCredentials) -> None:
        self.inner = inner
        self.cache_key = inner.cache_key
        self.entered = threading.Event()
        self._gate = threading.Event()

    def release(self) -> None:
        self._gate.set()

    def fetch_token(self) -> Token:
        self.entered.set()
        assert self._gate.wait(30), "the test never released the gate"
        return self.inner.fetch_token()


class LoopProbe:
    """Ticks every ``interval`` seconds; counts ticks while ``window()`` is true."""

    def __init__(self, window: Callable[[], bool], interval: float = 0.005) -> None:
        self.window = window
        self.interval = interval
        self.ticks = 0
        self.in_window = 0
        self.stop = False

    async def run(self) -> None:
        while not self.stop:
            await anyio.sleep(self.interval)
            self.ticks += 1
            if self.window():
                self.in_window += 1


async def _until(condition: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    with anyio.fail_after(limit):
        while not condition():
            await anyio.sleep(0.005)
    assert condition(), what


@pytest.fixture
def idp_slow() -> Iterator[TokenServer]:
    """A token server that takes 300 ms to answer, on the real clock."""
    with TokenServer("async-client", "async-secret-2b9e") as server:
        server.delay = 0.3
        yield server


def _credentials(server: TokenServer) -> ClientCredentials:
    return ClientCredentials(server.token_url, server.client_id, server.client_secret)


async def _herd(
    manager: TokenManager, server: TokenServer, n: int
) -> tuple[list[Token], LoopProbe]:
    """``n`` tasks call ``aget_token`` on a cold cache while a probe ticks."""
    probe = LoopProbe(lambda: server.count == 1 and manager.stats.fetches == 0)
    tokens: list[Token] = []

    async def one() -> None:
        tokens.append(await manager.aget_token())

    async with anyio.create_task_group() as outer:
        outer.start_soon(probe.run)
        async with anyio.create_task_group() as herd:
            for _ in range(n):
                herd.start_soon(one)
        probe.stop = True
    return tokens, probe


# -- the hot path --------------------------------------------------------------


async def test_hot_path_is_the_same_read_as_get_token(
    token_server: TokenServer, make_manager: Callable[..., TokenManager]
) -> None:
    manager = make_manager()
    sync_token = manager.get_token()
    assert await manager.aget_token() is sync_token
    assert await manager.aget_token() is sync_token
    assert token_server.count == 1
    assert manager.stats.hits == 2
    assert manager._async_flights == {}  # no thread, no flight: memory only


async def test_cold_cache_fetches_once_and_caches(
    token_server: TokenServer, make_manager: Callable[..., TokenManager]
) -> None:
    manager = make_manager()
    token = await manager.aget_token()
    assert token_server.check(token.access_token) is None
    assert await manager.aget_token() is token
    assert manager.get_token() is token
    assert token_server.count == 1
    assert manager.stats.fetches == 1


# -- the herd: one fetch, and the loop keeps running ------------------------------


async def test_200_tasks_on_a_cold_cache_make_one_request_and_never_stall_the_loop(
    idp_slow: TokenServer,
) -> None:
    manager = TokenManager(_credentials(idp_slow))
    tokens, probe = await _herd(manager, idp_slow, 200)
    assert idp_slow.count == 1
    assert len(tokens) == 200 and len({t.access_token for t in tokens}) == 1
    stats = manager.stats
    assert (stats.fetches, stats.hits) == (1, 199)
    # The loop ran while the token request was out (see the module docstring).
    assert probe.in_window >= 1, probe.__dict__


@pytest.mark.redis
async def test_200_tasks_with_redis_storage_make_one_request_and_never_stall_the_loop(
    idp_slow: TokenServer, redis_server: RedisServer
) -> None:
    client = redis_server.client()
    client.flushall()
    try:
        manager = TokenManager(_credentials(idp_slow), RedisStorage(client))
        tokens, probe = await _herd(manager, idp_slow, 200)
        assert idp_slow.count == 1
        assert len({t.access_token for t in tokens}) == 1
        assert probe.in_window >= 1, probe.__dict__
        # The token went to Redis: a second process (manager) takes it from there.
        other = TokenManager(_credentials(idp_slow), RedisStorage(client))
        assert (await other.aget_token()).access_token == tokens[0].access_token
        assert idp_slow.count == 1
        assert other.stats.storage_hits == 1
    finally:
        client.close()


@pytest.mark.redis
async def test_waiting_for_another_process_lock_does_not_block_the_loop(
    idp_slow: TokenServer, redis_server: RedisServer
) -> None:
    """The storage's lock wait (another process fetching) runs off the loop too."""
    client = redis_server.client()
    client.flushall()
    try:
        idp_slow.delay = 0
        storage = RedisStorage(client)
        manager = TokenManager(_credentials(idp_slow), storage, lock_wait=20)
        other = TokenManager(_credentials(idp_slow), RedisStorage(client))
        key = manager._key
        assert key is not None
        owner = storage.acquire_lock(key, 30)  # "another process" is fetching
        assert owner is not None
        waiting = LoopProbe(lambda: not results)
        results: list[Token] = []

        async def one() -> None:
            results.append(await manager.aget_token())

        async with anyio.create_task_group() as outer:
            outer.start_soon(waiting.run)
            async with anyio.create_task_group() as herd:
                for _ in range(20):
                    herd.start_soon(one)
                # The tasks wait on the lock; the loop keeps ticking meanwhile.
                await _until(lambda: waiting.in_window >= 5, "the loop ticks during the lock wait")
                assert idp_slow.count == 0
                shared = other.force_refresh()  # the other process stores its token ...
                storage.release_lock(key, owner)  # ... and lets go
            waiting.stop = True
        assert {t.access_token for t in results} == {shared.access_token}
        assert idp_slow.count == 1  # the other process's request only
        assert manager.stats.fetches == 0
    finally:
        client.close()


async def test_threads_and_tasks_share_one_flight_thread_first(
    token_server: TokenServer, make_manager: Callable[..., TokenManager]
) -> None:
    gated = GatedProvider(ClientCredentials(token_server.token_url, "svc:orders api", _secret()))
    manager = make_manager(gated)
    thread_results: list[Any] = []
    threads = threading.Thread(
        target=lambda: thread_results.extend(run_threads(10, manager.get_token))
    )
    threads.start()
    try:
        await _until(gated.entered.is_set, "a thread started the fetch")
        task_results: list[Token] = []

        async def one() -> None:
            task_results.append(await manager.aget_token())

        async with anyio.create_task_group() as tasks:
            for _ in range(50):
                tasks.start_soon(one)
            # Every task is now waiting for the one flight, which queues behind
            # the thread that holds the single-flight lock.
            await _until(lambda: "token" in manager._async_flights, "tasks joined a flight")
            gated.release()
    finally:
        gated.release()
        threads.join(30)
    assert token_server.count == 1
    assert {t.access_token for t in task_results + thread_results} == {task_results[0].access_token}
    assert len(task_results) == 50 and len(thread_results) == 10


async def test_threads_and_tasks_share_one_flight_tasks_first(
    token_server: TokenServer, make_manager: Callable[..., TokenManager]
) -> None:
    gated = GatedProvider(ClientCredentials(token_server.token_url, "svc:orders api", _secret()))
    manager = make_manager(gated)
    task_results: list[Token] = []
    thread_results: list[Any] = []

    async def one() -> None:
        task_results.append(await manager.aget_token())

    worker: threading.Thread | None = None
    try:
        async with anyio.create_task_group() as tasks:
            for _ in range(50):
                tasks.start_soon(one)
            await _until(gated.entered.is_set, "the tasks' flight started the fetch")
            # Threads arrive while the tasks' fetch is out: they wait for it.
            worker = threading.Thread(
                target=lambda: thread_results.extend(run_threads(10, manager.get_token))
            )
            worker.start()
            gated.release()
    finally:
        gated.release()
        if worker is not None:
            worker.join(30)
    assert token_server.count == 1
    tokens = {t.access_token for t in task_results + thread_results}
    assert len(tokens) == 1 and len(task_results) == 50 and len(thread_results) == 10


async def test_a_cancelled_waiter_does_not_cancel_the_flight(
    token_server: TokenServer, make_manager: Callable[..., TokenManager]
) -> None:
    gated = GatedProvider(ClientCredentials(token_server.token_url, "svc:orders api", _secret()))
    manager = make_manager(gated)
    results: list[Token] = []
    results_of_cancelled: list[bool] = []
    try:
        doomed = anyio.CancelScope()

        async def cancelled_one() -> None:
            with doomed:
                await manager.aget_token()
            results_of_cancelled.append(doomed.cancelled_caught)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(cancelled_one)
            await _until(gated.entered.is_set, "the fetch started")

            async def one() -> None:
                results.append(await manager.aget_token())

            for _ in range(5):
                tasks.start_soon(one)
            await anyio.sleep(0.01)
            doomed.cancel()  # the first waiter gives up ...
            await anyio.sleep(0.01)
            gated.release()  # ... and the fetch still serves the others
    finally:
        gated.release()
    assert results_of_cancelled == [True]
    assert len(results) == 5 and len({t.access_token for t in results}) == 1
    assert token_server.count == 1
    assert manager._async_flights == {}


# -- failures ------------------------------------------------------------------


async def test_a_refusal_reaches_every_task_as_its_own_typed_error(
    token_server: TokenServer, make_manager: Callable[..., TokenManager]
) -> None:
    manager = make_manager(
        ClientCredentials(token_server.token_url, "svc:orders api", "wrong-secret-7c1d")
    )
    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await manager.aget_token()
        except InvalidClient as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tasks:
        for _ in range(20):
            tasks.start_soon(one)
    assert len(errors) == 20
    assert len({id(e) for e in errors}) == 20  # each task its own copy
    assert token_server.count == 1  # remembered for failure_ttl: no hammering
    assert all("wrong-secret" not in str(e) for e in errors)
    with pytest.raises(InvalidClient):
        await manager.aget_token()
    assert token_server.count == 1


async def test_a_provider_that_raises_anything_gives_a_token_error() -> None:
    def broken() -> Token:
        raise KeyError("boom")

    manager = TokenManager(broken)
    from alf_session import TokenError

    with pytest.raises(TokenError):
        await manager.aget_token()


def test_aget_token_outside_an_event_loop_says_so() -> None:
    manager = TokenManager(StaticTokenProvider())
    coro = manager.aget_token()
    with pytest.raises(RuntimeError, match="asyncio or trio"):
        coro.send(None)
    coro.close()
    assert manager.stats.fetches == 0 and manager._async_flights == {}


# -- renewal with nothing but an event loop ------------------------------------


async def test_background_renewal_in_a_process_that_only_runs_a_loop(
    token_server: TokenServer, make_manager: Callable[..., TokenManager], clock: FakeClock
) -> None:
    manager = make_manager()
    first = await manager.aget_token()
    clock.advance(0.8 * 3600)  # past refresh_ahead, still valid
    assert await manager.aget_token() is first  # served at once, renewal starts
    await _until(lambda: manager.stats.refreshes == 1, "the background refresh ran")
    second = await manager.aget_token()
    assert second != first and token_server.count == 2
    clock.advance(3600)  # expired: the task awaits a fetch
    third = await manager.aget_token()
    assert third not in (first, second) and token_server.count == 3


async def test_async_flight_state_is_reset_in_a_forked_child_and_not_pickled() -> None:
    import pickle

    manager = TokenManager(_fixed_token)
    await manager.aget_token()
    manager._async_flights["token"] = object()  # as if a parent task were waiting
    manager._after_fork()
    assert manager._async_flights == {}
    manager._async_flights["token"] = object()
    copy = pickle.loads(pickle.dumps(manager))  # noqa: S301 - our own bytes
    assert copy._async_flights == {}
    assert (await copy.aget_token()).access_token == "fixed"


def _fixed_token() -> Token:  # a module-level provider pickles
    return Token("fixed")


def _secret() -> str:
    from .helpers import CLIENT_SECRET

    return CLIENT_SECRET
