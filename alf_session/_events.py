"""Events: what a :class:`~alf_session.TokenManager` did, told to whoever listens.

A manager emits a :class:`TokenEvent` at the few points where something
happens to its token: a token request succeeded or failed, a token was taken
from the storage, invalidated or refused by an API, the storage failed or
answered again. Never on the hot path: a request served from memory emits
nothing and pays nothing.

Delivery is off the caller's path too. :meth:`_Emitter.emit` puts the event
on one queue per process; a daemon thread (``alf-session-events``) hands it,
in order, to the manager's ``on_event`` callback and to the listeners that
:func:`alf_session.otel.instrument` adds. So a callback never runs while the
manager holds a lock or in a request's thread, a slow one delays no request,
and one that raises is logged and skipped. An event carries no secret and no
token: the token is named by its fingerprint (a short hash), the credential
by one too, and an error by its class and its message (which, by the
contract of :mod:`alf_session.errors`, holds no secret either).

:func:`observe_token_request` is the other hook: a context manager around
each token request, for spans that must be current while the request runs
(so that an instrumented HTTP client's own span nests under it).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from . import _fork

if TYPE_CHECKING:
    from .manager import TokenManager
    from .token import Token

__all__ = ["EventKind", "TokenEvent"]

log = logging.getLogger("alf_session.events")

EventKind = Literal[
    "fetched",
    "refreshed",
    "shared",
    "invalidated",
    "fetch_failed",
    "storage_fault",
    "storage_recovered",
    "retried_401",
]

# Events waiting for the delivery thread beyond this are dropped (and counted):
# a callback stuck for good must not grow the process without bound.
_MAX_QUEUED = 10_000
# Longest the interpreter waits at exit for the events still queued.
_EXIT_WAIT = 1.0


@dataclass(frozen=True)
class TokenEvent:
    """Something that happened to a manager's token, as ``on_event`` receives it.

    Attributes:
        kind: What happened:

            * ``"fetched"``: a token request made because no valid token was
              at hand (or :meth:`~alf_session.TokenManager.force_refresh`)
              succeeded.
            * ``"refreshed"``: a token request made ahead of expiry, in the
              background, succeeded.
            * ``"shared"``: a token was taken from the shared storage instead
              of fetched.
            * ``"invalidated"``: the cached token was dropped
              (:meth:`~alf_session.TokenManager.invalidate`, or after a 401).
            * ``"fetch_failed"``: a token request failed (``error`` says why).
            * ``"storage_fault"``: a storage call failed or timed out, or the
              storage held garbage under the key (``error`` says which).
            * ``"storage_recovered"``: the storage answers again after a fault.
            * ``"retried_401"``: an API answered 401 to the token and the
              request is being sent once more with another.
        credential: A fingerprint of the credential (12 hex digits of a hash
            of its cache key), the same for every process that shares it.
        duration: Seconds the token request took (``fetched``,
            ``refreshed``, ``fetch_failed``), else ``None``.
        error: ``"ClassName: message"`` for ``fetch_failed`` and
            ``storage_fault``, else ``None``.
        expires_in: Seconds the token the event is about is valid for, from
            :attr:`time` (``None`` when its expiry is unknown or there is no
            token).
        grant: The grant of the token request: ``"client_credentials"``,
            ``"password"``, ``"refresh_token"``, …; ``None`` for a provider
            that does not say, or an event that is not a token request.
        fingerprint: The fingerprint of the token the event is about (a
            10-character hash, as in the log lines), never the token.
        remaining: For ``fetched`` and ``refreshed``, seconds that were left
            on the token it replaces (negative once expired; ``None`` if there
            was none or its expiry is unknown).
        time: When it happened, in UNIX seconds (the manager's clock).

    Never carries a client secret, a password, an access or refresh token,
    an assertion or a private key.

    .. versionadded:: 0.2
    """

    kind: EventKind
    credential: str
    duration: float | None = None
    error: str | None = None
    expires_in: float | None = None
    grant: str | None = None
    fingerprint: str | None = None
    remaining: float | None = None
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready ``dict`` (for a log line or a message bus)."""
        return asdict(self)


Listener = Callable[[TokenEvent], object]
RequestObserver = Callable[
    ["TokenManager", "str | None", bool], "contextlib.AbstractContextManager[object]"
]

# What alf_session.otel.instrument() (or another integration) adds for every
# manager: listeners get every event; observers wrap every token request.
_listeners: tuple[Listener, ...] = ()
_observers: tuple[RequestObserver, ...] = ()
# Every live manager, for instruments that read their counters on collection.
_managers: weakref.WeakSet[TokenManager] = weakref.WeakSet()
_registry_lock = threading.Lock()


def add_listener(listener: Listener) -> None:
    """Hand every event of every manager to ``listener`` too (in the delivery thread)."""
    global _listeners
    with _registry_lock:
        if listener not in _listeners:
            _listeners = (*_listeners, listener)


def remove_listener(listener: Listener) -> None:
    global _listeners
    with _registry_lock:
        _listeners = tuple(x for x in _listeners if x != listener)  # bound methods: ==


def add_observer(observer: RequestObserver) -> None:
    """Run every token request of every manager inside ``observer(manager, grant, background)``."""
    global _observers
    with _registry_lock:
        if observer not in _observers:
            _observers = (*_observers, observer)


def remove_observer(observer: RequestObserver) -> None:
    global _observers
    with _registry_lock:
        _observers = tuple(x for x in _observers if x != observer)


def register(manager: TokenManager) -> None:
    """Count ``manager`` among the live ones (for instruments that read counters)."""
    with _registry_lock:
        _managers.add(manager)


def live_managers() -> list[TokenManager]:
    """The managers alive in this process now."""
    with _registry_lock:
        return list(_managers)


def credential_fingerprint(name: str) -> str:
    """12 hex digits naming a credential: the same in every process that shares it."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]


class _Emitter:
    """A manager's side of the events: builds them and queues them for delivery."""

    __slots__ = ("__weakref__", "callback", "credential")

    def __init__(self, callback: Listener | None, credential: str) -> None:
        if callback is not None and not callable(callback):
            from .errors import ConfigurationError

            raise ConfigurationError(
                f"on_event must be a callable taking a TokenEvent, not {type(callback).__name__}"
            )
        self.callback = callback
        self.credential = credential

    def __getstate__(self) -> tuple[Listener | None, str]:
        return self.callback, self.credential

    def __setstate__(self, state: tuple[Listener | None, str]) -> None:
        self.callback, self.credential = state

    def emit(self, kind: EventKind, now: float, **fields: Any) -> None:
        """Queue an event for ``on_event`` and the listeners; nothing if none listens."""
        callbacks = _listeners if self.callback is None else (self.callback, *_listeners)
        if not callbacks:
            return
        event = TokenEvent(kind, self.credential, time=now, **fields)
        _dispatcher.put(event, callbacks)

    def emit_token(self, kind: EventKind, token: Token | None, now: float, **fields: Any) -> None:
        """:meth:`emit` for an event about ``token``: its fingerprint and time left."""
        if self.callback is None and not _listeners:
            return
        if token is not None:
            fields["fingerprint"] = token.fingerprint
            if token.expires_at is not None:
                fields["expires_in"] = token.expires_at - now
        self.emit(kind, now, **fields)

    def observe(
        self, manager: TokenManager, grant: str | None, background: bool
    ) -> contextlib.AbstractContextManager[object]:
        """The context a token request runs in: the observers', or nothing."""
        observers = _observers
        if not observers:
            return contextlib.nullcontext()
        return _Observed([observer(manager, grant, background) for observer in observers])


class _Observed:
    """The observers' contexts around one token request; none of their faults escapes."""

    __slots__ = ("_contexts", "_entered")

    def __init__(self, contexts: list[contextlib.AbstractContextManager[object]]) -> None:
        self._contexts = contexts
        self._entered: list[contextlib.AbstractContextManager[object]] = []

    def __enter__(self) -> None:
        for context in self._contexts:
            try:
                context.__enter__()
            except Exception:  # instrumentation must never fail a token request
                log.warning("token request observer %r failed; skipped", context, exc_info=True)
            else:
                self._entered.append(context)

    def __exit__(self, *exc_info: Any) -> None:
        # Never suppresses: the token request's own outcome stands.
        for context in reversed(self._entered):
            try:
                context.__exit__(*exc_info)
            except Exception as exc:
                if exc is not exc_info[1]:  # a generator context re-raises what it was given
                    log.warning("token request observer %r failed", context, exc_info=True)


def error_text(exc: BaseException) -> str:
    """``"ClassName: message"`` of one of the library's errors (whose messages hold no secret)."""
    from .errors import TokenError

    if isinstance(exc, TokenError):
        text = str(exc)
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return type(exc).__name__  # not ours: it might quote anything


class _Dispatcher:
    """One queue and one daemon thread per process, delivering events in order."""

    def __init__(self) -> None:
        self._reset()
        _fork.register(self)

    def _reset(self) -> None:
        self._queue: queue.Queue[tuple[Any, tuple[Listener, ...]]] = queue.Queue(_MAX_QUEUED)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self.dropped = 0

    def _after_fork(self) -> None:
        # The parent's thread does not exist here, and its queue's lock may be
        # held: start clean. Events the parent had queued stay the parent's.
        self._reset()

    def put(self, event: TokenEvent, callbacks: tuple[Listener, ...]) -> None:
        self._ensure_thread()
        try:
            self._queue.put_nowait((event, callbacks))
        except queue.Full:
            with self._lock:
                self.dropped += 1
                first = self.dropped == 1
            if first:
                log.warning(
                    "%d token events wait for an on_event callback that does not return; "
                    "dropping events until it does",
                    _MAX_QUEUED,
                )

    def _ensure_thread(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            thread = self._thread
            if thread is not None and thread.is_alive():
                return
            thread = threading.Thread(target=self._run, name="alf-session-events", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # interpreter shutting down: nothing will be delivered
                return
            self._thread = thread

    def _run(self) -> None:
        pending = self._queue
        while True:
            event, callbacks = pending.get()
            if isinstance(event, threading.Event):  # a flush() marker
                event.set()
                continue
            for callback in callbacks:
                try:
                    callback(event)
                except Exception as exc:  # a callback never fails the library
                    log.warning(
                        "on_event callback %r raised %s on a %r event; the event is skipped "
                        "for it, requests are not affected",
                        callback,
                        type(exc).__name__,
                        event.kind,
                        exc_info=True,
                    )

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every event queued so far was delivered; ``False`` on timeout."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return self._queue.empty()
        done = threading.Event()
        try:
            self._queue.put((done, ()), timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)


_dispatcher = _Dispatcher()


def flush(timeout: float = 5.0) -> bool:
    """Wait until every event emitted so far was handed to its callbacks."""
    return _dispatcher.flush(timeout)


@atexit.register
def _flush_at_exit() -> None:
    if _dispatcher._pid == os.getpid():
        _dispatcher.flush(_EXIT_WAIT)
