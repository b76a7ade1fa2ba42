"""fork(): a child never inherits a held lock or a dead refresher thread.

Each test forks the pytest process itself while a parent thread is inside the
token machinery; the child does its part and reports back through a pipe.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from alf_session import TokenManager, TokenSession
from alf_session._servers import APIServer, TokenServer

from .helpers import FakeClock

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Python 3.12+ warns that forking a threaded process may deadlock: that
    # is exactly the situation under test.
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
]

Maker = Callable[..., TokenManager]
CHILD_DEADLINE = 20  # seconds; a child that hangs is killed and the test fails


def in_child(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work`` in a forked child; its result, or the child's traceback."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            os.close(read_end)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(CHILD_DEADLINE)
            payload = {"ok": True, **work()}
            status = 0
        except BaseException:
            payload = {"ok": False, "error": traceback.format_exc()}
        finally:
            try:
                os.write(write_end, json.dumps(payload).encode())
            finally:
                os._exit(status)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert chunks, f"child died without a word (wait status {status})"
    result: dict[str, Any] = json.loads(b"".join(chunks))
    assert result["ok"], result.get("error")
    assert os.waitstatus_to_exitcode(status) == 0
    return result


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Line up with another thread (not a wait for expiry: the clock is fake)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the other thread never got there"
        time.sleep(0.005)


def test_fork_while_a_parent_thread_holds_the_fetch_lock(
    token_server: TokenServer, api_server: APIServer, make_manager: Maker
) -> None:
    manager = make_manager(max_wait=5)
    token_server.delay = 1.0
    fetcher = threading.Thread(target=manager.get_token)
    fetcher.start()
    wait_until(lambda: token_server.count == 1)  # the fetch is on the wire, lock held
    assert manager._flight.locked()

    def child() -> dict[str, Any]:
        token = manager.get_token()
        response = TokenSession(token_manager=manager).get(f"{api_server.base_url}/x", timeout=10)
        return {"token": token.access_token, "status": response.status_code}

    result = in_child(child)
    token_server.delay = 0
    fetcher.join(10)
    assert result["status"] == 200
    assert token_server.check(result["token"]) is None
    assert token_server.count == 2  # the parent's fetch and the child's own
    assert manager.get_token().access_token != result["token"]  # separate memories


def test_fork_while_a_background_refresh_is_running(
    token_server: TokenServer, make_manager: Maker, clock: FakeClock
) -> None:
    token_server.expires_in = 100
    manager = make_manager(leeway=10, refresh_ahead=0.5, refresh_jitter=0, max_wait=5)
    first = manager.get_token()
    clock.advance(60)
    token_server.delay = 1.0
    assert manager.get_token() is first  # starts the refresher
    wait_until(lambda: token_server.count == 2)  # it is on the wire, holding the lock
    assert manager._flight.locked()

    def child() -> dict[str, Any]:
        # Still valid, in the refresh window: returned at once, and the child
        # starts its own refresher (the parent's does not exist here).
        cached = manager.get_token()
        for thread in threading.enumerate():
            if thread.name == "alf-session-refresh":
                thread.join(10)
        refreshed = manager.get_token()
        refreshes = manager.stats.refreshes
        clock.advance(500)  # everything expired: a fetch in the foreground
        fetched = manager.get_token()
        return {
            "cached": cached.access_token,
            "refreshed": refreshed.access_token,
            "refreshes": refreshes,
            "fetched": fetched.access_token,
        }

    result = in_child(child)
    token_server.delay = 0
    for thread in threading.enumerate():
        if thread.name == "alf-session-refresh":
            thread.join(10)
    assert result["cached"] == first.access_token
    assert result["refreshes"] == 1
    assert result["refreshed"] != first.access_token
    assert result["fetched"] not in (first.access_token, result["refreshed"])
    assert token_server.check(result["fetched"]) is None
    assert manager.stats.refreshes == 1  # the parent's own refresh finished too


def test_child_uses_the_inherited_token_without_a_request(
    token_server: TokenServer, make_manager: Maker
) -> None:
    manager = make_manager()
    token = manager.get_token()

    def child() -> dict[str, Any]:
        return {"token": manager.get_token().access_token}

    assert in_child(child)["token"] == token.access_token
    assert token_server.count == 1
