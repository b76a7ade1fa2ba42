"""TokenManager: single flight, expiry on an injected clock, background refresh,
failure caching, invalidation, refresh tokens and custom providers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from alf_session import (
    ClientCredentials,
    ConfigurationError,
    InvalidClient,
    InvalidTokenResponse,
    PasswordCredentials,
    Token,
    TokenError,
    TokenHTTPError,
    TokenManager,
    TokenSession,
    TokenStats,
    TokenTimeout,
)
from alf_session._servers import APIServer, TokenServer

from .helpers import CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME, FakeClock, run_threads

Maker = Callable[..., TokenManager]


def refreshers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "alf-session-refresh"]


def join_refreshers() -> None:
    for thread in refreshers():
        thread.join(10)
        assert not thread.is_alive()


class TestCaching:
    def test_32_threads_make_one_token_request(
        self, token_server: TokenServer, make_manager: Maker
    ) -> None:
        manager = make_manager()
        token_server.delay = 0.2  # all 32 are waiting while the one fetch runs
        tokens = run_threads(32, manager.get_token)
        assert token_server.count == 1
        assert all(isinstance(t, Token) for t in tokens)
        assert len({t.access_token for t in tokens}) == 1
        assert manager.stats.fetches == 1

    def test_valid_token_causes_no_further_token_requests(
        self, token_server: TokenServer, make_manager: Maker
    ) -> None:
        manager = make_manager()
        first = manager.get_token()
        for _ in range(200):
            assert manager.get_token() is first
        assert token_server.count == 1
        stats = manager.stats
        assert isinstance(stats, TokenStats)
        assert (stats.fetches, stats.hits) == (1, 200)
        assert all(isinstance(n, int) for n in stats)

    def test_hits_are_counted_exactly_under_contention(
        self, token_server: TokenServer, make_manager: Maker
    ) -> None:
        manager = make_manager()
        manager.get_token()
        assert manager.stats.hits == 0  # reading the counters does not count as a hit

        def many() -> None:
            for _ in range(2000):
                manager.get_token()
            assert manager.stats.fetches == 1  # reads interleaved with hits

        run_threads(16, many)
        assert manager.stats.hits == 16 * 2000
        assert manager.stats.hits == 16 * 2000
        assert token_server.count == 1

    def test_expired_token_is_replaced(
        self, token_server: TokenServer, make_manager: Maker, clock: FakeClock
    ) -> None:
        token_server.expires_in = 600
        manager = make_manager(leeway=30, refresh_ahead=None)
        first = manager.get_token()
        clock.advance(600 - 30 - 5)  # five seconds before the leeway starts
        assert manager.get_token() is first
        assert token_server.count == 1
        clock.advance(10)  # inside the leeway: counts as expired
        second = manager.get_token()
        assert second != first
        assert token_server.count == 2
        assert token_server.check(second.access_token) is None

    def test_lifetime_shorter_than_leeway_is_still_reused(
        self, token_server: TokenServer, make_manager: Maker, clock: FakeClock
    ) -> None:
        token_server.expires_in = 20  # leeway 30 would make it expired on arrival
        manager = make_manager(leeway=30)
        first = manager.get_token()
        for _ in range(50):
            assert manager.get_token() is first
        clock.advance(5)
        for _ in range(50):
            assert manager.get_token() is first
        join_refreshers()
        assert token_server.count == 1
        clock.advance(10)  # past half the lifetime, the capped leeway
        assert manager.get_token() != first
        assert token_server.count == 2

    def test_token_without_expiry_is_kept(self, make_manager: Maker, clock: FakeClock) -> None:
        calls: list[int] = []

        def provider() -> Token:
            calls.append(1)
            return Token(f"forever-{len(calls)}")

        manager = make_manager(provider)
        first = manager.get_token()
        clock.advance(10 * 365 * 86400)
        assert manager.get_token() is first
        assert len(calls) == 1

    def test_invalidate_only_the_given_token(
        self, token_server: TokenServer, make_manager: Maker
    ) -> None:
        manager = make_manager()
        first = manager.get_token()
        manager.invalidate(Token("some-older-token"))
        assert manager.get_token() is first
        assert token_server.count == 1
        manager.invalidate(first)
        second = manager.get_token()
        assert second != first
        assert token_server.count == 2
        manager.invalidate(first)  # stale news: the newer token stays
        assert manager.get_token() is second
        manager.invalidate()
        assert manager.get_token() not in (first, second)
        assert token_server.count == 3

    def test_force_refresh(self, token_server: TokenServer, make_manager: Maker) -> None:
        manager = make_manager()
        first = manager.get_token()
        forced = manager.force_refresh()
        assert forced != first
        assert manager.get_token() is forced
        assert token_server.count == 2
        assert manager.stats.fetches == 2


class TestFailures:
    def test_wrong_secret_20_threads_one_request_20_errors(
        self, token_server: TokenServer, make_manager: Maker, make_provider: Any
    ) -> None:
        manager = make_manager(make_provider(client_secret="wrong-secret"))
        token_server.delay = 0.2
        results = run_threads(20, manager.get_token)
        assert token_server.count == 1
        assert len(results) == 20
        assert all(isinstance(r, InvalidClient) for r in results)
        assert len({id(r) for r in results}) == 20  # each caller its own exception object

    def test_failure_is_cached_for_failure_ttl_then_retried(
        self, token_server: TokenServer, make_manager: Maker, clock: FakeClock
    ) -> None:
        manager = make_manager(failure_ttl=10)
        token_server.fail_next(400, {"error": "invalid_client"}, times=1)
        for _ in range(5):
            with pytest.raises(InvalidClient):
                manager.get_token()
        assert token_server.count == 1
        clock.advance(9)
        with pytest.raises(InvalidClient):
            manager.get_token()
        assert token_server.count == 1
        clock.advance(2)
        token = manager.get_token()
        assert token_server.check(token.access_token) is None
        assert token_server.count == 2

    def test_failure_ttl_zero_retries_every_time(
        self, token_server: TokenServer, make_manager: Maker
    ) -> None:
        manager = make_manager(failure_ttl=0)
        token_server.fail_next(400, {"error": "invalid_client"}, times=2)
        for _ in range(2):
            with pytest.raises(InvalidClient):
                manager.get_token()
        assert manager.get_token()
        assert token_server.count == 3

    def test_transport_failure_is_cached_too(
        self, token_server: TokenServer, make_manager: Maker, make_provider: Any
    ) -> None:
        manager = make_manager(make_provider(retry=0))
        token_server.fail_next(500, "down")
        with pytest.raises(TokenHTTPError):
            manager.get_token()
        with pytest.raises(TokenHTTPError):
            manager.get_token()
        assert token_server.count == 1

    def test_provider_exception_is_wrapped_without_its_message(self, make_manager: Maker) -> None:
        def provider() -> Token:
            raise RuntimeError("vault said: password=hunter2")

        manager = make_manager(provider)
        with pytest.raises(TokenError) as info:
            manager.get_token()
        assert "RuntimeError" in str(info.value)
        assert "hunter2" not in str(info.value)
        assert isinstance(info.value.__cause__, RuntimeError)

    def test_provider_returning_no_token(self, make_manager: Maker) -> None:
        class Broken:
            def fetch_token(self) -> object:
                return {"access_token": "not a Token"}

        with pytest.raises(InvalidTokenResponse, match="not a Token"):
            make_manager(Broken()).get_token()

    def test_waiter_gives_up_after_max_wait(self, make_manager: Maker) -> None:
        entered, release = threading.Event(), threading.Event()

        def slow() -> Token:
            entered.set()
            release.wait(10)
            return Token("slow")

        manager = make_manager(slow, max_wait=0.2)
        holder = threading.Thread(target=manager.get_token)
        holder.start()
        try:
            assert entered.wait(10)
            with pytest.raises(TokenTimeout, match="max_wait"):
                manager.get_token()
        finally:
            release.set()
            holder.join(10)
        assert manager.get_token().access_token == "slow"


class TestBackgroundRefresh:
    def test_requests_in_the_window_use_the_current_token_during_one_slow_refresh(
        self,
        token_server: TokenServer,
        api_server: APIServer,
        make_manager: Maker,
        clock: FakeClock,
    ) -> None:
        token_server.expires_in = 100
        manager = make_manager(leeway=10, refresh_ahead=0.5, refresh_jitter=0)
        session = TokenSession(token_manager=manager)
        first = manager.get_token()
        clock.advance(60)  # refresh point (50 s) passed; usable until 90 s
        token_server.delay = 0.5
        tokens = [manager.get_token() for _ in range(50)]
        answers = [session.get(f"{api_server.base_url}/orders") for _ in range(5)]
        running = refreshers()
        # Nobody waited for the slow endpoint: every call got the current token
        # while the single refresher was still at work.
        assert all(t is first for t in tokens)
        assert [r.status_code for r in answers] == [200] * 5
        assert api_server.seen == [first.header_value] * 5
        assert len(running) == 1
        assert manager.stats.refreshes == 0
        join_refreshers()
        assert manager.stats.refreshes == 1
        assert token_server.count == 2
        second = manager.get_token()
        assert second != first
        assert token_server.check(second.access_token) is None
        token_server.delay = 0
        assert session.get(f"{api_server.base_url}/orders").status_code == 200
        assert api_server.seen[-1] == second.header_value
        assert manager.stats.fetches == 2
        session.close()

    def test_short_lifetime_is_still_renewed_in_the_background(
        self, token_server: TokenServer, make_manager: Maker, clock: FakeClock
    ) -> None:
        # 60 s tokens, leeway 30: the token counts as expired at 30 s, before
        # 75 % of its lifetime (45 s). It is renewed in the background at 75 %
        # of its usable 30 s instead, so callers never wait on the endpoint.
        token_server.expires_in = 60
        manager = make_manager(leeway=30, refresh_ahead=0.75, refresh_jitter=0)
        first = manager.get_token()
        clock.advance(20)
        assert manager.get_token() is first
        assert refreshers() == []
        clock.advance(5)  # 25 s: past 22.5 s, still usable until 30 s
        assert manager.get_token() is first
        join_refreshers()
        assert manager.stats.refreshes == 1
        assert token_server.count == 2
        assert manager.get_token() != first

    def test_two_second_tokens_get_a_background_window(
        self, token_server: TokenServer, make_manager: Maker, clock: FakeClock
    ) -> None:
        # 2 s tokens: usable for 1 s (leeway capped at half), renewed in the
        # background at 0.75 s. The "not renewed at once" floor must not close
        # that window, or every renewal becomes a foreground wait.
        token_server.expires_in = 2
        manager = make_manager(leeway=30, refresh_ahead=0.75, refresh_jitter=0)
        first = manager.get_token()
        clock.advance(0.8)
        assert manager.get_token() is first  # served at once...
        join_refreshers()  # ...while one refresh ran behind it
        assert manager.stats.refreshes == 1
        assert token_server.count == 2
        assert manager.get_token() != first

    def test_past_the_leeway_a_running_refresh_is_not_waited_for(
        self, token_server: TokenServer, make_manager: Maker, clock: FakeClock
    ) -> None:
        # The refresh is slow; callers that reach the stale point before it
        # lands keep the current token (still valid) instead of queueing.
        token_server.expires_in = 100
        manager = make_manager(leeway=10, refresh_ahead=0.5, refresh_jitter=0)
        first = manager.get_token()
        token_server.delay = 0.5
        clock.advance(60)  # refresh window: starts the background refresh
        assert manager.get_token() is first
        assert len(refreshers()) == 1
        clock.advance(35)  # 95 s: past the leeway, 5 s before it expires
        tokens = run_threads(8, manager.get_token)
        assert tokens == [first] * 8
        join_refreshers()
        assert token_server.count == 2  # the refresh only; nobody fetched in the foreground
        assert manager.get_token() != first

    def test_refresh_uses_the_refresh_token_grant(
        self, token_server: TokenServer, make_manager: Maker, clock: FakeClock
    ) -> None:
        token_server.issue_refresh_tokens = True
        token_server.expires_in = 100
        manager = make_manager(leeway=10, refresh_ahead=0.5, refresh_jitter=0)
        first = manager.get_token()
        assert first.refresh_token is not None
        clock.advance(60)
        assert manager.get_token() is first
        join_refreshers()
        assert [r.grant_type for r in token_server.requests] == [
            "client_credentials",
            "refresh_token",
        ]
        assert token_server.requests[1].form["refresh_token"] == first.refresh_token
        assert manager.get_token() != first
        assert manager.stats.refreshes == 1

    def test_failed_background_refresh_keeps_the_token_and_logs(
        self,
        token_server: TokenServer,
        make_manager: Maker,
        make_provider: Any,
        clock: FakeClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        token_server.expires_in = 100
        manager = make_manager(
            make_provider(retry=0), leeway=10, refresh_ahead=0.5, refresh_jitter=0, failure_ttl=5
        )
        first = manager.get_token()
        clock.advance(60)
        token_server.fail_next(503, "busy")
        with caplog.at_level(logging.WARNING, logger="alf_session"):
            assert manager.get_token() is first
            join_refreshers()
        assert token_server.count == 2
        assert "background token refresh" in caplog.text
        # Not retried on every request: only after failure_ttl.
        for _ in range(20):
            assert manager.get_token() is first
        join_refreshers()
        assert token_server.count == 2
        clock.advance(6)
        assert manager.get_token() is first
        join_refreshers()
        assert token_server.count == 3
        assert manager.get_token() != first

    def test_refresh_answered_with_the_same_expiry_does_not_loop(
        self, make_manager: Maker, clock: FakeClock
    ) -> None:
        expires_at = clock() + 100
        calls: list[float] = []

        def provider() -> Token:
            calls.append(clock())
            return Token(f"t{len(calls)}", expires_at=expires_at, issued_at=clock())

        manager = make_manager(provider, leeway=10, refresh_ahead=0.5, refresh_jitter=0)
        manager.get_token()
        clock.advance(60)
        for _ in range(29):  # 60 s .. 88 s: in the window, until the leeway
            for _ in range(20):
                manager.get_token()
            join_refreshers()
            clock.advance(1)
        assert len(calls) == 2  # the first fetch and one refresh, not one per request

    def test_refresh_answered_with_the_same_token_does_not_loop(
        self, make_manager: Maker, clock: FakeClock
    ) -> None:
        same = Token("same", expires_at=clock() + 100, issued_at=clock())
        calls: list[int] = []

        def provider() -> Token:
            calls.append(1)
            return same

        manager = make_manager(provider, leeway=10, refresh_ahead=0.5, refresh_jitter=0)
        manager.get_token()
        clock.advance(60)
        for _ in range(29):
            for _ in range(20):
                assert manager.get_token() is same
            join_refreshers()
            clock.advance(1)
        assert len(calls) == 2

    def test_already_expired_answers_do_not_make_a_tight_loop(
        self, make_manager: Maker, clock: FakeClock
    ) -> None:
        calls: list[int] = []

        def provider() -> Token:
            calls.append(1)
            return Token(f"old{len(calls)}", expires_at=clock() - 5, issued_at=clock() - 65)

        manager = make_manager(provider)
        for _ in range(100):
            manager.get_token()
        join_refreshers()
        assert len(calls) == 1

    def test_one_refresher_at_a_time_across_threads(
        self, token_server: TokenServer, make_manager: Maker, clock: FakeClock
    ) -> None:
        token_server.expires_in = 100
        manager = make_manager(leeway=10, refresh_ahead=0.5, refresh_jitter=0)
        first = manager.get_token()
        clock.advance(60)
        token_server.delay = 0.3
        results = run_threads(32, manager.get_token)
        assert all(r is first for r in results)
        join_refreshers()
        assert token_server.count == 2
        assert manager.stats.refreshes == 1


class TestRefreshTokens:
    def test_password_grant_renews_with_the_refresh_token(
        self, token_server: TokenServer, make_manager: Maker, clock: FakeClock
    ) -> None:
        provider = PasswordCredentials(
            token_server.token_url, CLIENT_ID, CLIENT_SECRET, USERNAME, PASSWORD
        )
        manager = make_manager(provider, refresh_ahead=None)
        first = manager.get_token()
        clock.advance(3600)
        second = manager.get_token()
        assert second != first
        assert [r.grant_type for r in token_server.requests] == ["password", "refresh_token"]
        assert "password" not in token_server.requests[1].form

    def test_invalid_grant_on_refresh_falls_back_to_the_full_grant(
        self, token_server: TokenServer, make_manager: Maker, clock: FakeClock
    ) -> None:
        provider = PasswordCredentials(
            token_server.token_url, CLIENT_ID, CLIENT_SECRET, USERNAME, PASSWORD
        )
        manager = make_manager(provider, refresh_ahead=None)
        first = manager.get_token()
        clock.advance(3600)
        token_server.fail_next(400, {"error": "invalid_grant", "error_description": "expired"})
        second = manager.get_token()
        assert second != first
        assert token_server.check(second.access_token) is None
        assert [r.grant_type for r in token_server.requests] == [
            "password",
            "refresh_token",
            "password",
        ]
        assert manager.stats.fetches == 2

    def test_client_credentials_with_refresh_tokens(
        self, token_server: TokenServer, make_manager: Maker, clock: FakeClock
    ) -> None:
        token_server.issue_refresh_tokens = True
        manager = make_manager(refresh_ahead=None)
        manager.get_token()
        clock.advance(3600)
        manager.get_token()
        assert [r.grant_type for r in token_server.requests] == [
            "client_credentials",
            "refresh_token",
        ]


class TestLogging:
    def test_fetch_refresh_and_401_are_logged_by_fingerprint(
        self,
        token_server: TokenServer,
        api_server: APIServer,
        make_manager: Maker,
        clock: FakeClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        token_server.issue_refresh_tokens = True
        manager = make_manager(refresh_ahead=None)
        session = TokenSession(token_manager=manager)
        with caplog.at_level(logging.DEBUG, logger="alf_session"):
            first = manager.get_token()
            clock.advance(3600)
            second = manager.get_token()
            token_server.revoke()
            assert session.get(f"{api_server.base_url}/x").status_code == 200
        third = manager.get_token()
        session.close()
        messages = [
            (r.name, r.levelno, r.getMessage())
            for r in caplog.records
            if r.name.startswith("alf_session")
        ]
        assert ("alf_session.manager", logging.INFO) in {(n, lvl) for n, lvl, _ in messages}
        text = "\n".join(m for _, _, m in messages)
        assert f"fetched token {first.fingerprint}" in text
        assert f"refreshed token {second.fingerprint} with the refresh token" in text
        assert f"API answered 401 to token {second.fingerprint}" in text
        assert third.fingerprint in text
        for token in (first, second, third):
            assert token.access_token not in text


class TestProvidersAndOptions:
    def test_custom_provider_object(self, make_manager: Maker) -> None:
        class Vault:
            def __init__(self) -> None:
                self.calls = 0

            def fetch_token(self) -> Token:
                self.calls += 1
                return Token(f"vault-{self.calls}", expires_at=None)

        vault = Vault()
        manager = make_manager(vault)
        assert manager.get_token().access_token == "vault-1"
        assert manager.get_token().access_token == "vault-1"
        assert vault.calls == 1

    def test_plain_callable(self, make_manager: Maker, clock: FakeClock) -> None:
        manager = make_manager(lambda: {"access_token": "from-callable", "expires_in": 60})
        token = manager.get_token()
        assert token.access_token == "from-callable"
        assert token.expires_at == clock() + 60  # stamped on the manager's clock

    def test_manager_clock_reaches_the_provider(
        self, token_server: TokenServer, clock: FakeClock
    ) -> None:
        provider = ClientCredentials(token_server.token_url, CLIENT_ID, CLIENT_SECRET)
        TokenManager(provider, clock=clock)
        assert provider.clock is clock
        mine = FakeClock(5)
        other = ClientCredentials(token_server.token_url, CLIENT_ID, CLIENT_SECRET, clock=mine)
        TokenManager(other, clock=clock)
        assert other.clock is mine  # an explicit clock is left alone

    @pytest.mark.parametrize(
        "options",
        [
            {"leeway": -1},
            {"leeway": "30"},
            {"refresh_ahead": 1.5},
            {"refresh_ahead": 0},
            {"refresh_jitter": 0.9},
            {"failure_ttl": float("nan")},
            {"max_wait": -1},
            {"clock": 5},
        ],
    )
    def test_bad_options(self, options: dict[str, Any]) -> None:
        with pytest.raises(ConfigurationError):
            TokenManager(lambda: "x", **options)

    def test_not_a_provider(self) -> None:
        with pytest.raises(ConfigurationError, match="fetch_token"):
            TokenManager(42)

    def test_repr_names_the_provider_not_the_secret(self, make_manager: Maker) -> None:
        text = repr(make_manager())
        assert "ClientCredentials" in text
        assert CLIENT_SECRET not in text
