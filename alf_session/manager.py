"""The :class:`TokenManager`: one token per credential, fetched once, renewed early.

How it decides, per call of :meth:`TokenManager.get_token`:

1. **Hot path.** The token in memory is before its refresh point: return it.
   One attribute read, one clock read, no lock, no I/O.
2. **Refresh window.** Past the refresh point (``refresh_ahead`` of its
   lifetime, minus a little jitter) but still valid: return it, and start one
   background refresh if none is running. No request waits.
3. **Slow path.** No valid token: take the single-flight lock (bounded wait);
   whoever gets it first reads the shared storage, takes the storage's lock
   (other processes wait and read what it stores), fetches, stores. The
   others find the token in memory when they get the lock. A failure is
   remembered and raised again to every caller meanwhile, so that bad
   credentials never hammer the identity provider: a refusal (bad client,
   grant or scope) for ``failure_ttl`` seconds; an outage (5xx, 429,
   ``temporarily_unavailable``, no connection, a timeout) for the server's
   ``Retry-After``, else for 1 s, then 2, 4, … up to ``failure_ttl`` while it
   lasts. A token obtained ends the memory and the backoff.

:meth:`TokenManager.aget_token` takes steps 1 and 2 in the event loop, and
step 3 in a thread that all waiting tasks share and that queues for the same
single-flight lock as threads do (see ``_async.py``).

Every storage call goes through the storage guard (:mod:`alf_session._guard`):
bounded in time without a thread per call, skipped while the storage is known
to fail, writes the caller does not need queued off its path, one warning per
outage. A storage fault never fails a request: the manager carries on with its
memory and the token endpoint.

The request flow (``alf_session._flow``, which every front door drives) uses
:meth:`TokenManager.get_token` (or ``aget_token``) and two internal methods,
nothing else: ``_token_for_header(value)`` names the token of ours an
``Authorization`` header carries, and ``_refused(token, replace=...)``
reports a 401 to it and hands out a replacement (none while the API keeps
refusing every fresh token: twice a replacement refused on its own retry).

Every token a provider returns -- custom providers and callables included --
is checked before it can reach a header: a CR, LF, NUL or other byte an HTTP
header cannot carry is an :class:`~alf_session.InvalidTokenResponse`.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

from . import _events, _fork
from ._guard import StorageGuard
from .errors import (
    ConfigurationError,
    InvalidTokenResponse,
    OAuthError,
    TokenError,
    TokenHTTPError,
    TokenTimeout,
)
from .providers import _wrap_error, as_provider
from .storage import TokenStorage, as_storage
from .token import Token, _header_safe

if TYPE_CHECKING:
    from ._base import KeyValueStore
    from .providers import TokenProvider

__all__ = ["ManagerOptions", "TokenManager", "TokenStats"]

log = logging.getLogger(__name__)

_INF = math.inf

# The jitter of refresh points, from the OS's generator: it shares no state
# with the random module's, which the application may seed or watch (a seeded
# simulation; hypothesis fails a test whose strategies see that state move
# while one of our background threads draws), and, unlike a Random() of our
# own, it leaves no state for forked children to repeat alike.
_JITTER = random.SystemRandom()

# A freshly fetched token is reused for at least this long, even if the server
# (or a skewed clock) says it is already expiring: no tight fetch loop, ever.
_MIN_REUSE = 1.0
# Longest TTL given to the storage (ten years).
_MAX_STORE_TTL = 10 * 365 * 24 * 3600.0
# How many of its latest tokens a manager recognises in a 401's request: a
# request may be answered after a token or two more have been adopted.
_HANDED_KEPT = 8


class TokenStats(NamedTuple):
    """A snapshot of a manager's counters.

    Attributes:
        fetches: Token requests made by this process (grants and refreshes).
        hits: Tokens served from memory.
        refreshes: Tokens renewed ahead of expiry in the background.
        retries_on_401: Requests sent again after an API answered 401.
        storage_errors: Storage calls that failed, timed out or returned garbage.
        storage_hits: Tokens taken from the shared storage instead of fetched.
    """

    fetches: int = 0
    hits: int = 0
    refreshes: int = 0
    retries_on_401: int = 0
    storage_errors: int = 0
    storage_hits: int = 0


class ManagerOptions(TypedDict, total=False):
    """The :class:`TokenManager` options that :class:`~alf_session.TokenSession`
    passes on, for type checkers (``**manager_options``).

    Kept in step with :meth:`TokenManager.__init__` (a test compares them).
    """

    leeway: float
    refresh_ahead: float | None
    refresh_jitter: float
    failure_ttl: float
    max_wait: float
    lock_ttl: float
    lock_wait: float
    storage_timeout: float
    storage_retry_interval: float
    key: str | None
    clock: Callable[[], float]
    on_event: Callable[[_events.TokenEvent], object] | None


def check_options(caller: str, options: Mapping[str, object]) -> None:
    """Raise the ``TypeError`` Python would, naming ``caller``, for an option
    :class:`TokenManager` does not take (with the closest one it does)."""
    import inspect

    known = [
        name
        for name, parameter in inspect.signature(TokenManager).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    for name in options:
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}{hint}")


class _Entry:
    """The token in memory, with the times it was planned on (manager clock)."""

    __slots__ = ("refresh_at", "stale_at", "token")

    def __init__(self, token: Token, refresh_at: float, stale_at: float) -> None:
        self.token = token
        self.refresh_at = refresh_at
        self.stale_at = stale_at


# -- failure memory ----------------------------------------------------------------

# An outage is first remembered this long, then twice as long at each further
# failure in a row (capped at failure_ttl).
_BACKOFF_START = 1.0
# A server's Retry-After is honoured up to this (or failure_ttl, if longer).
_MAX_RETRY_AFTER = 60.0
# RFC 6749 §4.1.2.1 codes that say "later", not "no".
_TRANSIENT_CODES = frozenset({"temporarily_unavailable", "server_error"})


class _Failure:
    """A failed fetch, raised again without a token request until ``until``."""

    __slots__ = ("at", "error", "until")

    def __init__(self, error: TokenError, at: float, until: float) -> None:
        self.error = error
        self.at = at
        self.until = until

    def again(self, now: float) -> TokenError:
        """A copy of the error that says it is remembered, and until when."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.until))
        clone = self.error._clone(
            f"{self.error} [remembered from a token request {max(now - self.at, 0):.0f}s "
            f"ago; no new token request until {when} UTC, in {self.until - now:.1f}s]"
        )
        clone.remembered_until = self.until
        return clone


def _is_transient(exc: TokenError) -> bool:
    """Whether ``exc`` says "try later" (an outage) rather than "no" (a refusal)."""
    response = exc.response
    status = response.status_code if response is not None else None
    if status is not None and (status >= 500 or status in (408, 429)):
        return True
    if isinstance(exc, OAuthError):
        return exc.error in _TRANSIENT_CODES
    if isinstance(exc, (ConfigurationError, InvalidTokenResponse, TokenHTTPError)):
        return False  # a wrong URL, a 4xx, a broken answer: the same next time
    return True  # no connection, a timeout, a custom provider's failure


def _retry_after(exc: TokenError, now: float) -> float | None:
    """Seconds the server asked to wait (``Retry-After``, seconds or a date)."""
    response = exc.response
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        from email.utils import parsedate_to_datetime

        return max(parsedate_to_datetime(value).timestamp() - now, 0.0)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class _KeepCurrent(Exception):
    """Another process is fetching and the current token is still valid (internal)."""


class _Counters:
    """The counters of :class:`TokenStats` but ``hits``; changed under the manager's ``_mutex``."""

    __slots__ = ("fetches", "refreshes", "retries_on_401", "storage_errors", "storage_hits")

    def __init__(self) -> None:
        self.fetches = 0
        self.refreshes = 0
        self.retries_on_401 = 0
        self.storage_errors = 0
        self.storage_hits = 0


class TokenManager:
    """Gets, caches, shares and renews the token of one credential.

    Args:
        provider: How tokens are obtained: a provider such as
            :class:`~alf_session.ClientCredentials`, any object with
            ``fetch_token()``, or a callable.
        storage: The shared tier: a :class:`~alf_session.TokenStorage` or any
            object with ``get``/``set`` (redis, pymemcache, Django cache, …).
            ``None`` keeps the token in this process only.
        leeway: A token counts as expired this many seconds before it expires
            (never more than half its lifetime, so short-lived tokens work).
        refresh_ahead: Fraction of the lifetime after which the token is
            renewed in the background; ``None`` renews only once it expires.
        refresh_jitter: Up to this fraction of the lifetime is taken off the
            refresh point at random, so that processes fetching their own
            tokens don't all renew at once; a token taken from the storage
            is renewed up to this much later instead, so that the process
            that fetched it renews it first and the others take the new one
            from the storage (a fleet renews as often as one process).
        failure_ttl: Seconds a refused fetch (``invalid_client``,
            ``invalid_grant``, a 4xx, …) is remembered and raised again to
            every caller without a new token request. An outage (5xx, 429,
            ``temporarily_unavailable``, no connection, a timeout) is
            remembered for the server's ``Retry-After`` (up to a minute, or
            ``failure_ttl`` if longer), else for 1 s, 2 s, 4 s, … up to
            ``failure_ttl`` while it lasts. 0 remembers nothing.
        max_wait: Longest a caller waits for another thread's fetch.
        lock_ttl: How long the storage's fetch lock lives: if its holder dies,
            another process takes over after this.
        lock_wait: Longest a process waits for another process's fetch before
            fetching itself.
        storage_timeout: Bound on each storage call, in seconds.
        storage_retry_interval: After a storage fault, seconds before the
            storage is tried again.
        key: Name of the credential in storage; default: the provider's
            ``cache_key``. Required with storage for a provider without one.
        clock: Returns the time in UNIX seconds; inject one in tests. A
            provider with a ``clock`` attribute left at its default gets it too.
        on_event: Called with a :class:`~alf_session.TokenEvent` when a token
            is fetched, renewed, taken from the storage, invalidated or
            refused with 401, when a token request fails, and when the
            storage fails or recovers; never for a request served from
            memory. Called in order from one background thread, never from a
            request's thread or under a lock; an exception it raises is
            logged and changes nothing else. *(Added in 0.2.)*

    Thread-safety: one manager serves all threads of a process. Fork-safety:
    a forked child gets new locks and no refresher thread, and keeps the
    cached token.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        provider: TokenProvider | Callable[[], Token | Mapping[str, Any] | str],
        storage: TokenStorage | KeyValueStore | str | None = None,
        *,
        leeway: float = 30.0,
        refresh_ahead: float | None = 0.75,
        refresh_jitter: float = 0.05,
        failure_ttl: float = 10.0,
        max_wait: float = 60.0,
        lock_ttl: float = 15.0,
        lock_wait: float = 20.0,
        storage_timeout: float = 2.0,
        storage_retry_interval: float = 5.0,
        key: str | None = None,
        clock: Callable[[], float] = time.time,
        on_event: Callable[[_events.TokenEvent], object] | None = None,
    ) -> None:
        self.provider = as_provider(provider)
        self.storage: TokenStorage | None = None if storage is None else as_storage(storage)
        _check_number("leeway", leeway, minimum=0)
        if refresh_ahead is not None and not (
            isinstance(refresh_ahead, (int, float)) and 0 < refresh_ahead < 1
        ):
            raise ConfigurationError(
                f"refresh_ahead must be a fraction between 0 and 1 (such as 0.75), "
                f"or None; got {refresh_ahead!r}"
            )
        _check_number("refresh_jitter", refresh_jitter, minimum=0, maximum=0.5)
        for option, value in (
            ("failure_ttl", failure_ttl),
            ("max_wait", max_wait),
            ("lock_ttl", lock_ttl),
            ("lock_wait", lock_wait),
            ("storage_timeout", storage_timeout),
            ("storage_retry_interval", storage_retry_interval),
        ):
            _check_number(option, value, minimum=0)
        if not callable(clock):
            raise ConfigurationError("clock must be a callable returning UNIX seconds")
        self.leeway = float(leeway)
        self.refresh_ahead = refresh_ahead
        self.refresh_jitter = float(refresh_jitter)
        self.failure_ttl = float(failure_ttl)
        self.max_wait = float(max_wait)
        self.lock_ttl = float(lock_ttl)
        self.lock_wait = float(lock_wait)
        self.storage_timeout = float(storage_timeout)
        self.storage_retry_interval = float(storage_retry_interval)
        self._clock = clock
        if clock is not time.time and getattr(self.provider, "clock", None) is time.time:
            # Tokens are planned on the clock they were stamped with: a provider
            # left on the default clock follows the one injected here.
            self.provider.clock = clock  # type: ignore[attr-defined]  # checked just above

        name: object = key if key is not None else getattr(self.provider, "cache_key", None)
        self._events = _events._Emitter(
            on_event,
            _events.credential_fingerprint(
                name if isinstance(name, str) and name else repr(self.provider)
            ),
        )
        if self.storage is not None:
            if not isinstance(name, str) or not name:
                raise ConfigurationError(
                    f"{self.provider!r} has no cache_key to share its token by; pass "
                    "key='a-name-for-this-credential' to TokenManager"
                )
            if key is not None:
                name = hashlib.sha256(key.encode()).hexdigest()
            self._key: str | None = self.storage.key_for(name)
            self._guard: StorageGuard | None = StorageGuard(
                self.storage,
                self._key,
                timeout=self.storage_timeout,
                retry_interval=self.storage_retry_interval,
                count_error=self._count_storage_error,
                on_recover=self._storage_recovered,
            )
        else:
            self._key = None
            self._guard = None

        self._entry: _Entry | None = None
        self._failure: _Failure | None = None
        self._outages = 0  # transient failures in a row, for the backoff
        # Access tokens an API refused (401), latest last: never taken from the
        # storage again. Several: a refused token can outlive its deletion in
        # the storage (deleted off the request path, or while it was down).
        self._rejected: dict[str, None] = {}
        # The last tokens handed out, by header value: a 401 names the token it
        # refused by the header the request carried (see _token_for_header).
        # Each with the number of tokens adopted when it was (its place in
        # the order of adoption).
        self._handed: dict[str, tuple[Token, int]] = {}
        self._adoptions = 0
        # The token last refused on the retry after a 401 (with when, by the
        # clock, and the number of tokens adopted by then), and the token kept
        # while 401s loop, with when: bounds the token requests 401s cost (see
        # _refused).
        self._again: tuple[Token, float, int] | None = None
        self._looping: tuple[Token, float] | None = None
        self._counts = _Counters()
        self._start_hit_counter(0)
        self._init_locks()
        _fork.register(self)
        _events.register(self)

    def _init_locks(self) -> None:
        self._flight = threading.Lock()  # held across one fetch, by one thread
        self._mutex = threading.Lock()  # short critical sections only
        self._refreshing = False
        # Calls that tasks await, by what they do: one thread runs each (_async.py).
        self._async_flights: dict[object, Any] = {}

    def _after_fork(self) -> None:
        # A parent thread may have held a lock or been refreshing at fork():
        # in the child that thread does not exist, so start clean. The cached
        # token stays: it is as valid in the child as in the parent.
        self._init_locks()
        reset = getattr(self.provider, "_after_fork", None)
        if callable(reset):
            reset()

    def _start_hit_counter(self, start: int) -> None:
        # Hits are the hot path: an itertools.count advances in one C call,
        # atomic without a lock (also without a GIL), where a locked int costs
        # a lock round trip per request. Reading it advances it too, so reads
        # are counted and taken off (see stats).
        self._hit_counter = itertools.count(start)
        self._hit = self._hit_counter.__next__
        self._hit_reads = 0

    def _hits(self) -> int:
        """The hit count; caller holds ``_mutex`` (so reads are counted one at a time)."""
        value = next(self._hit_counter) - self._hit_reads
        self._hit_reads += 1
        return value

    def __getstate__(self) -> dict[str, Any]:
        # Pickled with a TokenSession (requests.Session pickles its __attrs__),
        # e.g. for a spawned process: locks and a remembered failure stay here.
        state = self.__dict__.copy()
        with self._mutex:
            state["_hit_counter"] = self._hits()
        for name in (
            "_flight",
            "_mutex",
            "_refreshing",
            "_async_flights",
            "_failure",
            "_hit",
            "_hit_reads",
        ):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        hits = state.pop("_hit_counter")
        self.__dict__.update(state)
        self._failure = None
        self._start_hit_counter(hits)
        self._init_locks()
        _fork.register(self)
        _events.register(self)

    def __repr__(self) -> str:
        store = "memory" if self.storage is None else repr(self.storage)
        return f"TokenManager({self.provider!r}, storage={store})"

    # -- public API --------------------------------------------------------

    @property
    def stats(self) -> TokenStats:
        """The counters, as a :class:`TokenStats` snapshot."""
        with self._mutex:
            counts = self._counts
            return TokenStats(
                fetches=counts.fetches,
                hits=self._hits(),
                refreshes=counts.refreshes,
                retries_on_401=counts.retries_on_401,
                storage_errors=counts.storage_errors,
                storage_hits=counts.storage_hits,
            )

    def get_token(self) -> Token:
        """A valid token: from memory, from storage or freshly fetched.

        Raises:
            TokenError: no token could be obtained (the same error is raised
                to every caller for ``failure_ttl`` seconds).
            TokenTimeout: another thread's fetch took longer than ``max_wait``.
        """
        entry = self._entry
        if entry is not None:
            now = self._clock()
            if now < entry.refresh_at:
                self._hit()
                return entry.token
            if now < entry.stale_at:
                self._hit()
                self._refresh_in_background(entry)
                return entry.token
        return self._get_token_slow()

    async def aget_token(self) -> Token:
        """:meth:`get_token` for async code: never blocks the event loop.

        A token valid in memory is returned at once, by the same lock-free read
        as :meth:`get_token`, and renewal ahead of expiry starts in the
        background the same way. Otherwise the task awaits one fetch that runs
        off the loop: the single-flight wait, the shared storage and its lock,
        and the token request all happen in a thread, and the event loop keeps
        running meanwhile. Threads and tasks share one single flight: however
        many of each need a token at once, one request goes to the endpoint.
        Works under asyncio and trio (so with httpx on either, through anyio).

        Raises:
            TokenError: no token could be obtained (as for :meth:`get_token`).
            TokenTimeout: another fetch took longer than ``max_wait``.
            RuntimeError: not awaited in a running asyncio or trio event loop.

        .. versionadded:: 0.2
        """
        # The lines of get_token's hot path, not a call to a shared helper:
        # that call would cost every synchronous request too.
        entry = self._entry
        if entry is not None:
            now = self._clock()
            if now < entry.refresh_at:
                self._hit()
                return entry.token
            if now < entry.stale_at:
                self._hit()
                self._refresh_in_background(entry)
                return entry.token
        from ._async import slow_token  # the slow path only: keeps asyncio out of the import

        return await slow_token(self)

    def invalidate(self, token: Token | None = None) -> None:
        """Drop the cached token, in memory and in storage.

        Args:
            token: Drop only this token: a newer one that another thread or
                process already cached is kept. ``None`` drops whatever is
                cached.
        """
        self._invalidate(token, wait=True)

    def _invalidate(self, token: Token | None, *, wait: bool) -> None:
        """:meth:`invalidate`; ``wait=False`` leaves the storage's part to its worker."""
        with self._mutex:
            entry = self._entry
            if token is None or (entry is not None and entry.token == token):
                self._entry = None
            if token is not None:
                rejected = self._rejected
                rejected[token.access_token] = None
                while len(rejected) > _HANDED_KEPT:
                    del rejected[next(iter(rejected))]
            self._failure = None
        dropped = token if token is not None else entry.token if entry is not None else None
        self._events.emit_token("invalidated", dropped, self._clock())
        if self._guard is not None:
            self._guard.delete(token, wait=wait)
        log.debug(
            "invalidated %s", "cached token" if token is None else f"token {token.fingerprint}"
        )

    @staticmethod
    def flush_events(timeout: float = 5.0) -> bool:
        """Wait until every event emitted so far reached its ``on_event`` callback.

        Events are delivered by a background thread; a test (or a short
        script about to print a summary) calls this to see them all.

        Args:
            timeout: Longest wait, in seconds.

        Returns:
            ``False`` if a callback was still busy when the time ran out.

        .. versionadded:: 0.2
        """
        return _events.flush(timeout)

    def force_refresh(self) -> Token:
        """Fetch a new token now, store it and return it.

        Raises:
            TokenError: the fetch failed.
        """
        if not self._flight.acquire(timeout=self.max_wait):
            raise TokenTimeout(f"no token after {self.max_wait:g}s waiting for another fetch")
        try:
            entry = self._entry
            token = self._fetch(entry.token if entry else None)
            self._adopt(token, fetched=True)
            self._store(token, wait=True)
            return token
        finally:
            self._flight.release()

    # -- internals ---------------------------------------------------------

    def _count_storage_error(self, reason: str) -> None:
        with self._mutex:
            self._counts.storage_errors += 1
        self._events.emit("storage_fault", self._clock(), error=reason[:200])

    def _storage_recovered(self) -> None:
        self._events.emit("storage_recovered", self._clock())

    # -- the request flow's interface ------------------------------------
    #
    # alf_session._flow (and through it every front door) uses get_token(),
    # aget_token() and these two methods, nothing else: see _flow.TokenSource.

    def _token_for_header(self, value: str) -> Token | None:
        """The token this manager handed out whose header value is ``value``.

        How a 401 tells that the request carried one of our tokens (and which),
        without marking every request on the hot path.
        """
        with self._mutex:
            handed = self._handed.get(value)
        return None if handed is None else handed[0]

    def _refused(self, token: Token, *, replace: bool, again: bool = False) -> Token | None:
        """An API answered 401 to ``token``: drop it (only it) and, if
        ``replace``, return another to send the request again with.

        The storage's copy is deleted off the request path: this process
        won't take the refused token from the storage meanwhile (``_rejected``).

        ``again``: ``token`` was refused on the retry of a request whose first
        token was refused too. Once is bad luck (a token revoked while the
        retry was on its way): ``token`` is dropped. Two tokens so within
        ``failure_ttl`` (at least a second), the second one taken after the
        first one's refusal (tokens revoked one after the other while a
        request was held up are no loop), and the API seems to refuse every
        fresh token (a wrong audience or scope, a clock far off): fetching one
        more per request would only load the token endpoint. Then ``token`` is
        kept, and while 401s to it keep coming less than ``failure_ttl`` apart
        they are returned as they are (``None``), with no token request. This
        is logged as a warning, once while it lasts.

        Raises:
            TokenError: no replacement could be obtained.
        """
        now = self._clock()
        window = max(self.failure_ttl, _MIN_REUSE)
        loop = warn = False
        with self._mutex:
            looping = self._looping
            if again:
                previous, self._again = self._again, (token, now, self._adoptions)
                # Two tokens, not two threads reporting the same retry; and
                # ``token`` taken after the previous refusal, as a replacement
                # in a loop is. A token that was current before then, refused
                # on a retry reported late (a thread held up between the 401
                # and here), tells nothing new: tokens revoked or expired one
                # after the other while requests were slow are no loop.
                handed = self._handed.get(token.header_value)
                loop = (
                    previous is not None
                    and previous[0] != token
                    and now - previous[1] < window
                    and handed is not None
                    and handed[0] == token
                    and handed[1] > previous[2]
                )
                warn = loop and (looping is None or now - looping[1] > 2 * window)
                if loop:
                    self._looping = (token, now)
            elif looping is not None and looping[0] == token and now - looping[1] < window:
                self._again = (token, now, self._adoptions)  # the loop goes on
                return None
        if again and loop:
            if warn:
                log.warning(
                    "the API answered 401 to token %s, fetched to replace a token it "
                    "refused, and did so before: it seems to refuse every token of %r "
                    "(check audience, scope and clocks); keeping that token, with no new "
                    "token request, while this lasts (%gs at a time)",
                    token.fingerprint,
                    self.provider,
                    window,
                )
            return None
        self._invalidate(token, wait=False)
        if again or not replace:
            return None
        new_token = self.get_token()
        with self._mutex:
            self._counts.retries_on_401 += 1
        self._events.emit_token("retried_401", token, self._clock())
        log.info(
            "API answered 401 to token %s; retrying once with token %s",
            token.fingerprint,
            new_token.fingerprint,
        )
        return new_token

    def _get_token_slow(self) -> Token:
        entry = self._entry
        if entry is not None and self._refreshing:
            expires_at = entry.token.expires_at
            if expires_at is not None and self._clock() < expires_at:
                # Past the leeway but not expired, and a background refresh is
                # already on its way: keep using this token rather than queue
                # behind that refresh. No request waits on the token endpoint
                # while a valid token exists.
                self._hit()
                return entry.token
        if not self._flight.acquire(timeout=self.max_wait):
            raise TokenTimeout(
                f"no token after waiting {self.max_wait:g}s for another thread's fetch "
                "from the token endpoint; raise max_wait or check the endpoint"
            )
        try:
            now = self._clock()
            entry = self._entry
            if entry is not None and now < entry.stale_at:
                self._hit()  # another thread got it while we waited
                return entry.token
            failure = self._failure
            if failure is not None and now < failure.until:
                raise failure.again(now)
            try:
                return self._obtain(entry.token if entry else None, background=False)
            except _KeepCurrent:
                assert entry is not None  # noqa: S101 - only raised with a current token
                keep = entry
            except TokenError as exc:
                self._remember(exc)
                raise
        finally:
            self._flight.release()
        # Another process is fetching: this still valid token serves meanwhile,
        # and a background refresh takes the new one from the storage.
        self._refresh_in_background(keep)
        self._hit()
        return keep.token

    def _remember(self, exc: TokenError) -> None:
        """Keep ``exc`` to raise again (see the module docstring for how long)."""
        now = self._clock()
        if self.failure_ttl <= 0:
            return
        if not _is_transient(exc):
            hold = self.failure_ttl
        else:
            self._outages += 1
            after = _retry_after(exc, now)
            if after is not None:
                hold = min(after, max(self.failure_ttl, _MAX_RETRY_AFTER))
            else:
                hold = min(_BACKOFF_START * 2 ** min(self._outages - 1, 30), self.failure_ttl)
        if hold > 0:
            self._failure = _Failure(exc, now, now + hold)

    def _refresh_in_background(self, entry: _Entry) -> None:
        with self._mutex:
            if self._refreshing:
                return
            self._refreshing = True
        try:
            threading.Thread(
                target=self._background_refresh,
                args=(entry,),
                name="alf-session-refresh",
                daemon=True,
            ).start()
        except RuntimeError:  # interpreter shutting down: the foreground will fetch
            with self._mutex:
                self._refreshing = False

    def _background_refresh(self, entry: _Entry) -> None:
        try:
            # Never queue behind a foreground fetch: it is renewing already.
            if not self._flight.acquire(blocking=False):
                return
            try:
                if self._entry is not entry:
                    return  # renewed (or invalidated) meanwhile
                self._obtain(entry.token, background=True)
                with self._mutex:
                    self._counts.refreshes += 1
            finally:
                self._flight.release()
        except Exception as exc:  # noqa: BLE001 - must not die silently; callers are unaffected
            # Keep serving the current token; try again later rather than on
            # every request, and let the foreground fetch once it expires.
            with self._mutex:
                current = self._entry
                if current is entry:
                    retry_at = min(entry.stale_at, self._clock() + max(self.failure_ttl, 1.0))
                    self._entry = _Entry(entry.token, retry_at, entry.stale_at)
            log.warning(
                "background token refresh for %r failed (%s); still using the current token",
                self.provider,
                exc if isinstance(exc, TokenError) else type(exc).__name__,
            )
        finally:
            with self._mutex:
                self._refreshing = False

    def _obtain(self, current: Token | None, *, background: bool) -> Token:
        """Get a token from storage or the endpoint. Caller holds ``_flight``."""
        guard = self._guard
        if guard is None:
            token = self._fetch(current, background=background)
            self._adopt(token, fetched=True)
            return token

        shared = guard.load()
        if self._acceptable(shared, current, background):
            return self._adopt(shared, fetched=False)  # type: ignore[arg-type]

        owner: str | None = None
        if guard.storage.can_lock and guard.usable:
            # Past its leeway but not expired, the current token still works:
            # a request does not wait for another process's fetch then (see
            # _get_token_slow, which has the new one picked up meanwhile).
            valid = (
                not background
                and current is not None
                and current.expires_at is not None
                and self._clock() < current.expires_at
            )
            owner, shared = guard.wait_for_lock(
                self.lock_ttl,
                0.0 if valid else self.lock_wait,
                lambda token: self._acceptable(token, current, background),
            )
            if owner is None and shared is not None:
                return self._adopt(shared, fetched=False)
            if owner is None and valid and guard.usable:
                raise _KeepCurrent
        try:
            token = self._fetch(current, background=background)
            self._adopt(token, fetched=True)
            # The caller needs the token, not the write: queued, then the lock
            # released after it, so that waiting processes find the token.
            self._store(token, wait=False)
            return token
        finally:
            if owner is not None:
                guard.release_lock(owner)

    def _acceptable(self, token: Token | None, current: Token | None, background: bool) -> bool:
        if token is None or token.access_token in self._rejected:
            return False
        now = self._clock()
        refresh_at, stale_at = self._plan(token, now, fetched=False, jitter=False)
        if background:
            # Renewing ahead: only a token that needs no renewing yet will do.
            return token != current and now < refresh_at
        return now < stale_at

    def _fetch(self, current: Token | None, *, background: bool = False) -> Token:
        """One token request: the refresh grant when possible, else the grant."""
        provider = self.provider
        refresh = getattr(provider, "refresh", None)
        if current is not None and current.refresh_token and callable(refresh):
            try:
                token = self._request(
                    lambda: refresh(current), "refresh_token", current, background
                )
            except OAuthError as exc:
                log.info(
                    "refresh token refused by the token endpoint (%s); using the grant",
                    exc.error,
                )
            else:
                with self._mutex:
                    self._counts.fetches += 1
                log.info("refreshed token %s with the refresh token", token.fingerprint)
                return token
        grant = getattr(provider, "grant_type", None)
        token = self._request(
            provider.fetch_token, grant if isinstance(grant, str) and grant else None, current,
            background,
        )  # fmt: skip
        with self._mutex:
            self._counts.fetches += 1
        expires = (
            "unknown" if token.expires_at is None else f"{token.expires_at - self._clock():.0f}s"
        )
        log.info("fetched token %s for %r; expires in %s", token.fingerprint, provider, expires)
        return token

    def _request(
        self,
        call: Callable[[], object],
        grant: str | None,
        current: Token | None,
        background: bool,
    ) -> Token:
        """One token request through the provider, timed, observed and told as an event."""
        events = self._events
        started = time.monotonic()
        try:
            with events.observe(self, grant, background):
                token = self._call_provider(call)
        except TokenError as exc:
            events.emit(
                "fetch_failed",
                self._clock(),
                duration=time.monotonic() - started,
                error=_events.error_text(exc),
                grant=grant,
            )
            raise
        now = self._clock()
        left = None if current is None or current.expires_at is None else current.expires_at - now
        kind: _events.EventKind = "refreshed" if background else "fetched"
        events.emit_token(
            kind, token, now, duration=time.monotonic() - started, grant=grant, remaining=left
        )
        return token

    def _call_provider(self, call: Callable[[], object]) -> Token:
        try:
            token = call()
        except TokenError:
            raise
        except Exception as exc:
            raise _wrap_error(exc, self.provider) from exc
        if not isinstance(token, Token):
            raise InvalidTokenResponse(
                f"{self.provider!r} returned a {type(token).__name__}, not a Token"
            )
        _check_header_safe(token, self.provider)
        return token

    def _plan(
        self, token: Token, now: float, *, fetched: bool, jitter: bool = True
    ) -> tuple[float, float]:
        """When to renew ``token`` in the background, and when it is no longer usable."""
        expires_at = token.expires_at
        if expires_at is None:
            return _INF, _INF
        issued = token.issued_at if token.issued_at is not None and token.issued_at <= now else now
        lifetime = expires_at - issued
        stale_at = expires_at - min(self.leeway, max(lifetime, 0.0) / 2)
        if fetched:
            stale_at = max(stale_at, now + _MIN_REUSE)
        if self.refresh_ahead is None or lifetime <= 0:
            return stale_at, stale_at
        refresh_at = issued + lifetime * self.refresh_ahead
        usable = stale_at - issued
        if refresh_at >= stale_at and usable > 0:
            # A short lifetime (under about four leeways) ends, leeway taken
            # off, before refresh_ahead of it has passed: it would never be
            # renewed in the background, and every renewal would make callers
            # wait. Plan on the usable part of the lifetime instead.
            refresh_at = issued + usable * self.refresh_ahead
        ahead = self.refresh_ahead or 1.0
        if fetched:
            if jitter and self.refresh_jitter:
                # Processes that each fetch their own token drift apart.
                refresh_at -= _JITTER.random() * self.refresh_jitter * lifetime
            # A token just fetched is not renewed at once, even if it says it
            # was issued long ago: that would be a second request for nothing.
            # But it still gets a background window before it goes stale: a
            # floor of a whole _MIN_REUSE would close that window for tokens
            # of a few seconds and make every renewal a foreground wait.
            refresh_at = max(refresh_at, now + min(_MIN_REUSE, (stale_at - now) * ahead))
        else:
            # Taken from the storage: planned as the process that fetched it
            # planned it (the same floor, from when it was obtained), then a
            # little later, never earlier. That process renews it first and
            # the others find the new token stored when their turn comes: a
            # fleet renews as often as one process, and no two race for it.
            refresh_at = max(refresh_at, issued + min(_MIN_REUSE, (stale_at - issued) * ahead))
            if jitter and self.refresh_jitter:
                room = max(stale_at - refresh_at, 0.0) / 2
                later = _JITTER.random() * self.refresh_jitter * lifetime
                refresh_at += min(later, room)
        return min(refresh_at, stale_at), stale_at

    def _adopt(self, token: Token, *, fetched: bool) -> Token:
        now = self._clock()
        refresh_at, stale_at = self._plan(token, now, fetched=fetched)
        with self._mutex:
            previous = self._entry
            if (
                previous is not None
                and previous.token.expires_at is not None
                and token.expires_at is not None
                and token.expires_at <= previous.token.expires_at
                and now >= previous.refresh_at
            ):
                # The server answered a renewal with the same expiry (or the
                # same token): renewing again before it expires would only get
                # the same answer. Wait for expiry instead of looping.
                refresh_at = stale_at
            self._entry = _Entry(token, refresh_at, stale_at)
            handed = self._handed
            handed.pop(token.header_value, None)
            self._adoptions += 1
            handed[token.header_value] = (token, self._adoptions)
            while len(handed) > _HANDED_KEPT:
                del handed[next(iter(handed))]
            self._failure = None
            self._outages = 0
            if not fetched:
                self._counts.storage_hits += 1
        if not fetched:
            log.debug("using token %s from %r", token.fingerprint, self.storage)
            self._events.emit_token("shared", token, now)
        return token

    # -- storage -----------------------------------------------------------

    def _load(self) -> Token | None:
        return None if self._guard is None else self._guard.load()

    def _store(self, token: Token, *, wait: bool) -> None:
        guard = self._guard
        if guard is None:
            return
        ttl = None
        if token.expires_at is not None:
            ttl = token.expires_at - self._clock()
            if ttl <= 0:
                return
            ttl = min(ttl, _MAX_STORE_TTL)  # a custom provider's 1e300 is no TTL a backend takes
        guard.save(token, ttl, wait=wait)


def _check_header_safe(token: Token, provider: object) -> None:
    """Refuse a token that cannot go into an ``Authorization`` header as it is.

    Any provider's token passes here, custom ones and callables included: a
    CR or LF would let the token's source add headers (or a whole request) to
    every API request, and a NUL or other control byte is refused by servers
    or cut short by them. The message names the field, never its value.

    Raises:
        InvalidTokenResponse: the access token or token type is not a non-empty
            string of visible ASCII characters.
    """
    for field, value in (("access_token", token.access_token), ("token_type", token.token_type)):
        if not isinstance(value, str) or not _header_safe(value):
            kind = type(value).__name__ if not isinstance(value, str) else "string"
            raise InvalidTokenResponse(
                f"{provider!r} returned a token whose {field} cannot go into an HTTP "
                f"header: it must be a non-empty string of visible ASCII characters "
                f"(no CR, LF, NUL, other control characters or spaces); got a {kind}"
                + (f" of {len(value)} characters" if isinstance(value, str) else "")
            )


def _check_number(
    name: str, value: object, *, minimum: float, maximum: float | None = None
) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f">= {minimum:g}" + (f" and <= {maximum:g}" if maximum is not None else "")
        raise ConfigurationError(f"{name} must be a number {bound}, not {value!r}")
