"""``TokenManager(on_event=...)``: one event per thing that happened, exact, never a secret.

Real token server and API on loopback, a clock moved by hand. Events are
delivered by one background thread; ``_events.flush()`` waits for it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from alf_session import (
    InvalidClient,
    MemoryStorage,
    TokenEvent,
    TokenManager,
    TokenSession,
    _events,
)
from alf_session._servers import APIServer, TokenServer

from .helpers import CLIENT_SECRET, FakeClock


class Recorder:
    """An ``on_event`` callback that keeps what it gets."""

    def __init__(self) -> None:
        self.events: list[TokenEvent] = []
        self.threads: set[str] = set()

    def __call__(self, event: TokenEvent) -> None:
        self.events.append(event)
        self.threads.add(threading.current_thread().name)

    def kinds(self) -> list[str]:
        assert _events.flush(10), "events not delivered within 10 s"
        return [event.kind for event in self.events]

    def wait_for(self, kind: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while kind not in self.kinds():
            assert time.monotonic() < deadline, f"no {kind} event within {timeout}s"
            time.sleep(0.02)

    def of(self, kind: str) -> list[TokenEvent]:
        self.kinds()
        return [event for event in self.events if event.kind == kind]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def refresh_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "alf-session-refresh"]


def wait_for_refresh() -> None:
    for thread in refresh_threads():
        thread.join(10)


# -- each kind ----------------------------------------------------------------------


def test_fetched_once_then_nothing_for_cached_requests(
    make_manager: Callable[..., TokenManager], recorder: Recorder, clock: FakeClock
) -> None:
    manager = make_manager(on_event=recorder)
    token = manager.get_token()
    for _ in range(100):
        manager.get_token()
    assert recorder.kinds() == ["fetched"]
    (event,) = recorder.events
    assert event.fingerprint == token.fingerprint
    assert event.grant == "client_credentials"
    assert event.expires_in == pytest.approx(3600)
    assert event.duration is not None and event.duration >= 0
    assert event.remaining is None  # it replaced nothing
    assert event.error is None
    assert event.time == clock()
    assert len(event.credential) == 12
    assert manager.stats.hits == 100
    assert recorder.threads == {"alf-session-events"}  # never the caller's thread


def test_refreshed_in_the_background_with_the_time_left(
    make_manager: Callable[..., TokenManager], recorder: Recorder, clock: FakeClock
) -> None:
    manager = make_manager(on_event=recorder, refresh_jitter=0)
    first = manager.get_token()
    clock.advance(3600 * 0.8)  # past refresh_ahead (0.75), before expiry
    assert manager.get_token() == first  # served at once; the renewal runs behind
    wait_for_refresh()
    assert recorder.kinds() == ["fetched", "refreshed"]
    refreshed = recorder.of("refreshed")[0]
    assert refreshed.remaining == pytest.approx(3600 * 0.2)
    assert refreshed.fingerprint == manager.get_token().fingerprint != first.fingerprint
    assert manager.stats.refreshes == 1


def test_force_refresh_is_a_fetch_replacing_the_current_token(
    make_manager: Callable[..., TokenManager], recorder: Recorder, clock: FakeClock
) -> None:
    manager = make_manager(on_event=recorder)
    manager.get_token()
    clock.advance(100)
    manager.force_refresh()
    assert recorder.kinds() == ["fetched", "fetched"]
    assert recorder.events[1].remaining == pytest.approx(3500)


def test_shared_when_taken_from_the_storage(
    make_manager: Callable[..., TokenManager], recorder: Recorder, token_server: TokenServer
) -> None:
    storage = MemoryStorage()
    first = make_manager(storage=storage)
    second = make_manager(storage=storage, on_event=recorder)
    token = first.get_token()
    assert second.get_token() == token
    assert recorder.kinds() == ["shared"]
    assert recorder.events[0].fingerprint == token.fingerprint
    assert recorder.events[0].duration is None
    assert token_server.count == 1


def test_invalidated(make_manager: Callable[..., TokenManager], recorder: Recorder) -> None:
    manager = make_manager(on_event=recorder)
    token = manager.get_token()
    manager.invalidate(token)
    manager.invalidate()  # nothing cached any more: still told, without a token
    assert recorder.kinds() == ["fetched", "invalidated", "invalidated"]
    assert recorder.events[1].fingerprint == token.fingerprint
    assert recorder.events[2].fingerprint is None


def test_fetch_failed_says_why_without_the_secret(
    make_manager: Callable[..., TokenManager],
    make_provider: Callable[..., Any],
    recorder: Recorder,
) -> None:
    wrong = "wrong-" + CLIENT_SECRET
    manager = make_manager(make_provider(client_secret=wrong), on_event=recorder)
    for _ in range(3):  # remembered for failure_ttl: one token request, one event
        with pytest.raises(InvalidClient):
            manager.get_token()
    assert recorder.kinds() == ["fetch_failed"]
    (event,) = recorder.events
    assert event.error is not None
    assert event.error.startswith("InvalidClient: ")
    assert "invalid_client" in event.error
    assert wrong not in event.error
    assert event.grant == "client_credentials"
    assert event.duration is not None
    assert event.fingerprint is None


def test_retried_401_invalidates_and_fetches(
    make_session: Callable[..., TokenSession],
    api_server: APIServer,
    token_server: TokenServer,
    recorder: Recorder,
) -> None:
    session = make_session(on_event=recorder)
    session.get(f"{api_server.base_url}/orders")
    refused = session.token_manager.get_token()
    token_server.revoke()
    assert session.get(f"{api_server.base_url}/orders").status_code == 200
    assert recorder.kinds() == ["fetched", "invalidated", "fetched", "retried_401"]
    assert recorder.of("retried_401")[0].fingerprint == refused.fingerprint
    assert session.token_manager.stats.retries_on_401 == 1


class SwitchableStore:
    """A key-value store that can be made to fail, as a server that goes down."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.down = False

    def get(self, key: str) -> Any:
        if self.down:
            raise ConnectionError("store is down")
        return self.data.get(key)

    def set(self, key: str, value: str) -> None:
        if self.down:
            raise ConnectionError("store is down")
        self.data[key] = value


def test_storage_fault_then_recovered(
    make_manager: Callable[..., TokenManager], recorder: Recorder
) -> None:
    store = SwitchableStore()
    manager = make_manager(storage=store, on_event=recorder, storage_retry_interval=0.05)
    store.down = True
    manager.get_token()  # the storage fails; the endpoint answers
    faults = recorder.of("storage_fault")
    assert len(faults) == 1, recorder.kinds()  # then the storage is skipped, not hammered
    assert faults[0].error == "ConnectionError: store is down"
    assert manager.stats.storage_errors == 1
    store.down = False  # probed off the request path until it answers
    recorder.wait_for("storage_recovered")
    assert recorder.kinds().count("storage_recovered") == 1
    assert recorder.kinds()[-1] == "storage_recovered"


def test_garbage_in_the_storage_is_a_storage_fault(
    make_manager: Callable[..., TokenManager], recorder: Recorder
) -> None:
    store = SwitchableStore()
    manager = make_manager(storage=store, on_event=recorder)
    key = manager._key
    assert key is not None
    store.data[key] = "{not json"
    manager.get_token()
    faults = recorder.of("storage_fault")
    assert [e.error for e in faults] == ["an unreadable value under the key"]


# -- the rules ------------------------------------------------------------------------


def test_a_raising_callback_is_logged_and_fails_nothing(
    make_session: Callable[..., TokenSession],
    api_server: APIServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def broken(event: TokenEvent) -> None:
        calls.append(event.kind)
        raise RuntimeError("callback bug")

    session = make_session(on_event=broken)
    with caplog.at_level(logging.WARNING, logger="alf_session.events"):
        assert session.get(f"{api_server.base_url}/orders").status_code == 200
        session.token_manager.invalidate()
        assert session.get(f"{api_server.base_url}/orders").status_code == 200
        assert _events.flush(10)
    assert calls == ["fetched", "invalidated", "fetched"]  # it keeps being called
    warnings = [r for r in caplog.records if "on_event callback" in r.getMessage()]
    assert len(warnings) == 3
    assert "RuntimeError" in warnings[0].getMessage()


def test_a_slow_callback_delays_no_request(
    make_manager: Callable[..., TokenManager], token_server: TokenServer
) -> None:
    release = threading.Event()
    seen: list[str] = []

    def slow(event: TokenEvent) -> None:
        release.wait(30)
        seen.append(event.kind)

    manager = make_manager(on_event=slow)
    try:
        manager.get_token()  # returns although the callback is stuck
        manager.invalidate()
        manager.get_token()
        assert seen == []
        assert token_server.count == 2
        assert manager.flush_events(0.05) is False  # the callback is still stuck
    finally:
        release.set()
    assert manager.flush_events(10) is True
    assert seen == ["fetched", "invalidated", "fetched"]


def test_a_callback_may_call_the_manager_back(
    make_manager: Callable[..., TokenManager],
) -> None:
    seen: list[str] = []
    managers: list[TokenManager] = []

    def reentrant(event: TokenEvent) -> None:
        seen.append(managers[0].get_token().fingerprint)  # no lock is held around callbacks

    managers.append(make_manager(on_event=reentrant))
    token = managers[0].get_token()
    assert _events.flush(10)
    assert seen == [token.fingerprint]


def test_on_event_must_be_callable(make_provider: Callable[..., Any]) -> None:
    from alf_session import ConfigurationError

    with pytest.raises(ConfigurationError, match="on_event must be a callable"):
        TokenManager(make_provider(), on_event="print")


def test_no_event_carries_a_secret_or_a_token(
    make_session: Callable[..., TokenSession],
    api_server: APIServer,
    token_server: TokenServer,
    recorder: Recorder,
    clock: FakeClock,
) -> None:
    token_server.issue_refresh_tokens = True
    store = SwitchableStore()
    session = make_session(on_event=recorder, token_storage=store, storage_retry_interval=0.05)
    manager = session.token_manager
    session.get(f"{api_server.base_url}/a")
    token_server.revoke()
    session.get(f"{api_server.base_url}/b")  # 401, retried
    clock.advance(3600 * 0.9)
    session.get(f"{api_server.base_url}/c")  # renewed in the background (refresh grant)
    wait_for_refresh()
    store.down = True
    manager.invalidate()
    session.get(f"{api_server.base_url}/d")
    store.down = False
    recorder.wait_for("storage_recovered")
    manager.invalidate()
    session.get(f"{api_server.base_url}/e")
    token_server.fail_next(401, {"error": "invalid_client"}, times=10)
    manager.invalidate()
    with pytest.raises(InvalidClient):
        session.get(f"{api_server.base_url}/f")
    kinds = set(recorder.kinds())
    assert kinds >= {"fetched", "refreshed", "invalidated", "retried_401", "storage_fault"}
    assert kinds >= {"storage_recovered", "fetch_failed"}
    secrets = {CLIENT_SECRET}
    for request in token_server.requests:
        secrets.update(v for k, v in request.form.items() if k == "refresh_token")
    secrets.update(header[len("Bearer ") :] for header in api_server.seen if header)
    for value in store.data.values():
        if value.startswith("{"):
            stored = json.loads(value)
            secrets.update(v for k, v in stored.items() if k.endswith("_token") and v)
    secrets.discard("")
    assert len(secrets) > 4
    text = json.dumps([event.to_dict() for event in recorder.events]) + repr(recorder.events)
    for secret in secrets:
        assert secret not in text


def test_without_a_listener_nothing_is_queued(
    make_manager: Callable[..., TokenManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    queued: list[object] = []
    monkeypatch.setattr(_events._dispatcher, "put", lambda *args: queued.append(args))
    manager = make_manager()
    manager.get_token()
    manager.invalidate()
    manager.get_token()
    assert queued == []


def test_the_event_is_frozen_and_json_ready(
    make_manager: Callable[..., TokenManager], recorder: Recorder
) -> None:
    make_manager(on_event=recorder).get_token()
    (event,) = recorder.of("fetched")
    with pytest.raises(AttributeError):
        event.kind = "shared"  # type: ignore[misc]
    assert json.loads(json.dumps(event.to_dict()))["kind"] == "fetched"


@pytest.fixture(autouse=True)
def _no_leftover_refreshers() -> Iterator[None]:
    yield
    wait_for_refresh()
