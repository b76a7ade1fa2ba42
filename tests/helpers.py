"""Helpers shared by the tests: the credentials of the ``token_server`` fixture
and :class:`FakeClock`. Fixtures live in ``conftest.py``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

#: Credentials of the ``token_server`` fixture. The secret has characters that
#: RFC 6749 §2.3.1 form-url-encoding changes, so Basic auth is tested for real.
CLIENT_ID = "svc:orders api"
CLIENT_SECRET = "s3cr+t/with:odd&chars=%20-7f1c9a2be04d"
USERNAME = "alice"
PASSWORD = "pa55:w0rd+alice-9d2e61"


class FakeClock:
    """A clock for ``TokenManager(clock=...)`` and ``TokenServer(clock=...)``.

    It starts at the real time (so JWT ``exp`` claims and ``Token.expired``
    make sense) and only moves when told to. Thread-safe.
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds``; returns the new time."""
        with self._lock:
            self._now += seconds
            return self._now

    def __repr__(self) -> str:
        return f"FakeClock({self._now:.3f})"


def run_threads(n: int, target: Callable[[], Any]) -> list[Any]:
    """Run ``target`` in ``n`` threads released together by a barrier; their
    results in order (an exception where one raised)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def work(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    return results


def storage_settled(manager: Any, timeout: float = 5.0) -> None:
    """Wait until the writes ``manager`` queued for its storage have run.

    A token fetched on the request path is stored off it, by the storage's
    worker: a test that reads the storage directly right after waits here.
    """
    guard = manager._guard
    assert guard is not None, "the manager has no storage"
    assert guard.backend.drain(timeout), f"storage writes still queued after {timeout}s"


def refreshes_settled(timeout: float = 10.0) -> None:
    """Wait until no background refresh (``alf-session-refresh`` thread) runs.

    A request past a token's refresh time starts one and returns at once: a
    test that compares counts (fetches against the token server's) after its
    requests waits here, since a refresh may still be on its way.
    """
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name == "alf-session-refresh":
            thread.join(max(0.0, deadline - time.monotonic()))
            assert not thread.is_alive(), f"background refresh still running after {timeout}s"
