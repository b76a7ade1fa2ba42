"""Async callers on the same engine as threads: ``aget_token`` and the async drivers.

The hot path of :meth:`TokenManager.aget_token` is the lock-free read of
:meth:`TokenManager.get_token`, done in the event loop. Everything that can
wait (the single-flight lock, the shared storage and its lock, the token
request) stays in the manager's one synchronous engine, and runs off the loop:

* The tasks of a manager that find no usable token meet in one
  :class:`concurrent.futures.Future` (per manager and per kind of call).
  The first one starts a thread that runs the manager's ordinary slow path and
  resolves the future; every other task, in whatever event loop, awaits that
  same future. 200 tasks cost one thread, not 200.
* That thread takes the manager's single-flight lock like any other thread.
  So threads and tasks share one single flight: a ``TokenSession`` in threads
  and an ``AsyncTokenClient`` in tasks make one token request between them,
  and processes still meet in the storage's lock.
* A task awaits the future through its own loop: ``asyncio.wrap_future`` under
  asyncio, a ``trio.Event`` set through the run's ``TrioToken`` under trio
  (httpx runs on both through anyio). A cancelled task stops waiting; the
  fetch goes on for the others.

The async drivers (``alf_session.httpx``, ``alf_session.aiohttp``) drive the
same :class:`~alf_session._flow.RequestFlow` as the sync ones, through its
``a``-prefixed steps: the token from ``aget_token``, a 401 judged in a thread
of its own (:func:`run_sync`), since it may touch the storage and the endpoint.

A fresh thread per flight, not a pool: a pool's idle-worker bookkeeping does
not survive ``fork()`` (a child would queue work for threads it does not
have), while a flight's thread lives only as long as one fetch. Nothing here
is imported by ``import alf_session``: only the slow path imports it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import TYPE_CHECKING, TypeVar

from .errors import TokenError

if TYPE_CHECKING:
    from .manager import TokenManager
    from .token import Token

log = logging.getLogger("alf_session.manager")

_T = TypeVar("_T")

# The key of the flight that gets a token (other calls key by what they do).
TOKEN = "token"  # noqa: S105 - a flight key, not a secret


def current_library() -> str:
    """``"asyncio"`` or ``"trio"``: the event loop running the calling task.

    Told without sniffio (not a dependency of ours): trio first, as sniffio
    does, since a trio run has no asyncio loop in its thread.

    Raises:
        RuntimeError: no asyncio or trio event loop runs in this thread.
    """
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass
        else:
            return "trio"
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "alf_session's async methods must be awaited in a running asyncio or trio event loop"
        ) from None
    return "asyncio"


async def slow_token(manager: TokenManager) -> Token:
    """A token for a task that found none usable in memory: one flight, off the loop."""
    # A task that joined a running flight got its token as a thread that
    # waited for the lock does: from memory, counted as a hit.
    return await joined(manager, TOKEN, manager._get_token_slow, joiner=lambda _: manager._hit())


async def joined(
    manager: TokenManager,
    key: Hashable,
    call: Callable[[], _T],
    *,
    joiner: Callable[[_T], object] | None = None,
) -> _T:
    """Run ``call`` in a thread, once for all tasks that ask for ``key`` meanwhile.

    Args:
        manager: Whose flights these are.
        key: What the call does; tasks asking for the same key share a run.
        call: A blocking call of the manager's synchronous engine.
        joiner: Called with the result in each task that joined a running
            call rather than started it (to count it as the call would have).

    Raises:
        Whatever ``call`` raised; a :class:`TokenError` as a fresh copy per
        task, so that tasks never share (and grow) one traceback.
    """
    library = current_library()  # before starting anything: a misuse fails alone
    future, started = _flight(manager, key, call)
    try:
        result = await _wait(future, library)
    except TokenError as exc:
        raise exc._clone() from exc.__cause__
    if joiner is not None and not started:
        joiner(result)
    return result


async def run_sync(call: Callable[[], _T]) -> _T:
    """Run one blocking ``call`` in its own thread and await its result."""
    library = current_library()
    future: Future[_T] = Future()
    future.set_running_or_notify_cancel()
    _start(_resolve, future, call, lambda: None)
    return await _wait(future, library)


def _flight(
    manager: TokenManager, key: Hashable, call: Callable[[], _T]
) -> tuple[Future[_T], bool]:
    flights = manager._async_flights
    with manager._mutex:
        future = flights.get(key)
        if future is not None:
            return future, False
        future = Future()
        # RUNNING from the start: a waiter's cancellation (asyncio cancels the
        # future it wrapped) must never cancel the flight the others await.
        future.set_running_or_notify_cancel()
        flights[key] = future

    def land() -> None:
        # Off the board before anyone wakes: a task that wakes and needs
        # another call starts a new flight instead of reading this one again.
        with manager._mutex:
            if flights.get(key) is future:
                del flights[key]

    try:
        _start(_resolve, future, call, land)
    except BaseException:
        land()
        raise
    return future, True


def _start(target: Callable[..., None], *args: object) -> None:
    threading.Thread(target=target, args=args, name="alf-session-async", daemon=True).start()


def _resolve(future: Future[_T], call: Callable[[], _T], land: Callable[[], None]) -> None:
    try:
        result = call()
    except BaseException as exc:  # noqa: BLE001 - handed to the awaiting tasks
        land()
        future.set_exception(exc)
    else:
        land()
        future.set_result(result)


async def _wait(future: Future[_T], library: str) -> _T:
    if library == "trio":
        return await _wait_trio(future)
    return await asyncio.wrap_future(future, loop=asyncio.get_running_loop())


async def _wait_trio(future: Future[_T]) -> _T:
    import trio

    run = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_: object) -> None:
        try:
            run.run_sync_soon(done.set)
        except trio.RunFinishedError:  # the run ended while the flight was out
            pass

    future.add_done_callback(wake)
    await done.wait()
    return future.result()
