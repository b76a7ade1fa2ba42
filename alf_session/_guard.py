"""The storage guard: every call a manager makes to its shared tier.

A :class:`~alf_session.TokenManager` is the state machine of one credential.
This module stands between it and a storage that may be slow, dead or hold
garbage, so that the manager never has to think about one:

* **Bounded, without a thread per call.** A call runs in the caller's thread
  when the client's own timeouts bound it within ``storage_timeout`` (a
  redis-py client with socket timeouts and a short retry policy, pymemcache
  with timeouts, a local directory, memory: see :func:`own_bound`). Any other
  call runs on the backend's one long-lived worker thread, and its caller
  waits at most ``storage_timeout`` for the answer.
* **Known failing means skipped.** A fault marks the backend failing for every
  manager of the process that uses it. While it fails, calls are skipped at
  once: no caller waits on it. After ``storage_retry_interval`` the worker
  probes it, off the request path, and the first answer ends the outage.
* **Off the request path.** Writes whose answer the caller does not need
  (storing a token just fetched, releasing the fetch lock, deleting a token an
  API refused) are queued on the worker. A read of a key first waits (within
  the bound) for this process's queued writes to that key, so a process reads
  its own writes; other processes wait on the fetch lock, which is released
  after the token is stored.
* **Warn once.** One WARNING per outage per process and backend, and one INFO
  when it ends. Garbage under a key is counted at each read and warned about
  once a minute.
* **One codec.** A token is stored as one JSON string
  (:meth:`Token.to_dict`). Whatever else is under the key is garbage: ignored,
  and overwritten by the next save.

Backends are shared: every guard (one per manager) on the same client, cache
object or directory uses one :class:`_Backend`, hence one worker thread and one
outage, however many credentials a process holds.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from . import _fork
from ._base import TokenStorage
from .errors import InvalidTokenResponse
from .token import Token

__all__ = ["StorageFault", "StorageGuard", "own_bound"]

log = logging.getLogger("alf_session.manager")

_T = TypeVar("_T")

# Garbage under a key is warned about at most this often (a process polling a
# lock reads it often).
_WARN_INTERVAL = 60.0
# Writes queued per backend beyond which a new one is dropped (and counted):
# a hung backend must not grow the queue without end.
_MAX_QUEUED = 1024
# A worker with nothing to do for this long ends; the next job starts another.
_WORKER_IDLE = 60.0


class StorageFault(Exception):
    """A storage call failed, timed out, or was skipped while the storage fails."""


def encode(token: Token) -> str:
    """The stored form of ``token``: one compact JSON string."""
    return json.dumps(token.to_dict(), separators=(",", ":"))


def decode(raw: object) -> Token:
    """The token stored as ``raw`` (``str`` or ``bytes``).

    Raises:
        ValueError: ``raw`` is not a stored token (garbage).
    """
    try:
        if isinstance(raw, (bytes, bytearray)):
            raw = bytes(raw).decode("utf-8")
        if not isinstance(raw, str):
            raise ValueError(f"stored value is a {type(raw).__name__}")
        return Token.from_dict(json.loads(raw))
    except (ValueError, InvalidTokenResponse, RecursionError) as exc:
        raise ValueError(f"not a stored token ({type(exc).__name__})") from None


# -- how long a call can take by the client's own timeouts --------------------


def own_bound(storage: TokenStorage) -> float | None:
    """The longest one call to ``storage`` can take by its own timeouts.

    ``None`` when nothing in the client bounds it (or it can't be told): its
    calls then run on the backend's worker, bounded from outside.
    """
    if not storage.blocking:
        return 0.0
    inner = getattr(storage, "storage", None)
    if isinstance(inner, TokenStorage):  # EncryptedStorage: the wrapped one's
        return own_bound(inner)
    from ._file import FileStorage

    if isinstance(storage, FileStorage):
        # Local files: a read takes no lock and the fetch lock is tried once.
        # Writes wait for another process's write (a few µs, or until the
        # kernel drops a dead writer's lock) and go through the worker.
        return 0.0
    client = getattr(storage, "client", None)
    if client is not None:
        return _redis_bound(client)
    obj = getattr(storage, "obj", None)
    if obj is not None and type(obj).__module__.startswith("pymemcache"):
        return _memcache_bound(obj)
    return None


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value) if value < float("inf") and value >= 0 else None


def _retry_cost(retry: Any) -> tuple[int, float] | None:
    """(retries, longest total backoff) of a redis-py ``Retry``, or None if unknown."""
    if retry is None:
        return 0, 0.0
    retries = getattr(retry, "_retries", None)
    backoff = getattr(retry, "_backoff", None)
    if not isinstance(retries, int) or retries < 0:
        return None
    if retries == 0:
        return 0, 0.0
    cap, base = getattr(backoff, "_cap", None), getattr(backoff, "_base", None)
    if _finite(cap) is not None and _finite(base) is not None:
        # Exponential backoffs, with or without jitter: at most min(cap, base·2^i).
        total = sum(min(float(cap), float(base) * 2**i) for i in range(1, retries + 1))  # type: ignore[arg-type]  # checked finite
        return retries, total
    constant = getattr(backoff, "_backoff", None)
    if _finite(constant) is not None:
        return retries, float(constant) * retries  # type: ignore[arg-type]  # checked finite
    return None


def _redis_bound(client: Any) -> float | None:
    get_kwargs = getattr(client, "get_connection_kwargs", None)
    if not callable(get_kwargs):
        return None
    try:
        kwargs = get_kwargs()
    except Exception:  # noqa: BLE001 - an unknown client: bound it from outside
        return None
    if not isinstance(kwargs, dict):
        return None
    read = _finite(kwargs.get("socket_timeout"))
    connect = _finite(kwargs.get("socket_connect_timeout"))
    if read is None or connect is None:
        return None
    # RedisCluster retries at the cluster level (its nodes' connections don't).
    retry = getattr(client, "retry", None) if hasattr(client, "nodes_manager") else None
    cost = _retry_cost(retry if retry is not None else kwargs.get("retry"))
    if cost is None:
        return None
    retries, backoff = cost
    per_try = connect + read
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    if manager is not None:
        # A Sentinel-managed master: a new connection first asks the sentinels,
        # one after another, where the master is.
        for sentinel in getattr(manager, "sentinels", None) or [None]:
            asked = _redis_bound(sentinel) if sentinel is not None else None
            if asked is None:
                return None
            per_try += asked
    return (retries + 1) * per_try + backoff


def _memcache_bound(obj: Any) -> float | None:
    read = _finite(getattr(obj, "timeout", None))
    connect = _finite(getattr(obj, "connect_timeout", None))
    if read is None:
        return None
    return read + (read if connect is None else connect)


# -- one backend: its health, its worker --------------------------------------


class _Job:
    __slots__ = ("call", "done", "error", "key", "on_error", "result")

    def __init__(
        self,
        call: Callable[[], Any],
        key: str | None,
        on_error: Callable[[], None] | None,
        wait: bool,
    ) -> None:
        self.call = call
        self.key = key
        self.on_error = on_error
        self.done: threading.Event | None = threading.Event() if wait else None
        self.result: Any = None
        self.error: BaseException | None = None


def _describe_fault(exc: BaseException) -> str:
    # Only transport errors are quoted: a backend's other messages might echo
    # the value it was given, which holds the token.
    name = type(exc).__name__
    if isinstance(exc, (OSError, TimeoutError)) or "Connection" in name or "Timeout" in name:
        text = str(exc)
        return f"{name}: {text}"[:200] if text else name
    return name


class _Backend:
    """What this process knows of one storage backend, shared by its guards.

    Thread-safe; fork-safe (a child starts with no worker and no queue, and
    forgets an outage only the parent saw).
    """

    def __init__(self, storage: TokenStorage) -> None:
        self.name = repr(storage)
        self.bound = own_bound(storage)
        # Every guard on this backend, told when it answers again after a
        # fault. Once none is left, nothing needs the worker, not even to
        # probe a storage that never came back.
        self.guards: weakref.WeakSet[StorageGuard] = weakref.WeakSet()
        self._reset()
        _fork.register(self)

    def _reset(self) -> None:
        self.mutex = threading.Lock()
        self.changed = threading.Condition(self.mutex)  # a queued write finished
        self.jobs: list[_Job] = []
        self.queued: dict[str | None, int] = {}  # writes queued or running, by key
        self.worker: threading.Thread | None = None
        self.busy_since: float | None = None  # monotonic start of the running job
        self.failing = False
        self.probe_at = 0.0  # monotonic: when the worker may probe a failing backend
        self.probe: Callable[[], object] | None = None
        self.retry_interval = 1.0
        self.threads_started = 0

    def _after_fork(self) -> None:
        # The worker, and the writes it had queued, are the parent's.
        self._reset()

    # -- health ---------------------------------------------------------

    def usable(self) -> bool:
        """Whether calls may go to the backend: it is not known to fail."""
        return not self.failing

    def fault(self, reason: str, probe: Callable[[], object], retry_interval: float) -> None:
        """Note a fault: the backend fails until ``probe`` succeeds on the worker."""
        with self.mutex:
            first = not self.failing
            self.failing = True
            self.probe = probe
            self.retry_interval = retry_interval
            self.probe_at = time.monotonic() + retry_interval
            self._start_worker()
            self.changed.notify_all()
        if first:
            log.warning(
                "token storage %s failed (%s); using this process's memory and the token "
                "endpoint until it answers again",
                self.name,
                reason,
            )

    def answered(self) -> None:
        if self.failing:
            with self.mutex:
                ended, self.failing = self.failing, False
                self.probe = None
            if ended:
                log.info("token storage %s answers again; sharing tokens through it", self.name)
                for guard in list(self.guards):
                    guard.recovered()

    def _run_probe(self, probe: Callable[[], object]) -> None:
        try:
            probe()
        except Exception as exc:  # noqa: BLE001 - still failing: probe again later
            with self.mutex:
                if self.failing and self.probe is None:
                    self.probe = probe
                    self.probe_at = time.monotonic() + max(self.retry_interval, 0.05)
            log.debug("token storage %s still fails (%s)", self.name, _describe_fault(exc))
        else:
            self.answered()

    # -- the worker -----------------------------------------------------

    def stuck(self, timeout: float) -> bool:
        """Whether the worker has been on one job for longer than ``timeout``."""
        since = self.busy_since
        return since is not None and time.monotonic() - since > timeout

    def submit(self, job: _Job) -> bool:
        """Queue ``job`` for the worker; False when the queue is full."""
        with self.mutex:
            if len(self.jobs) >= _MAX_QUEUED:
                return False
            if job.key is not None and job.done is None:
                self.queued[job.key] = self.queued.get(job.key, 0) + 1
            self._enqueue(job)
            return True

    def _enqueue(self, job: _Job) -> None:
        """Caller holds ``mutex``."""
        self.jobs.append(job)
        self.changed.notify_all()
        self._start_worker()

    def _start_worker(self) -> None:
        """Caller holds ``mutex``."""
        if self.worker is not None:
            return
        worker = threading.Thread(target=self._work, name="alf-session-storage", daemon=True)
        self.worker = worker
        self.threads_started += 1
        try:
            worker.start()
        except RuntimeError:  # interpreter shutting down: the jobs are dropped
            self.worker = None
            self.jobs.clear()
            self.queued.clear()

    def _next_job(self, me: threading.Thread) -> _Job | None:
        """The next job: a queued call, or a probe when one is due. Caller holds ``mutex``.

        ``None`` when this worker should end: idle for a while (and no
        outage to probe), or replaced after a fork.
        """
        idle_until = time.monotonic() + _WORKER_IDLE
        while self.worker is me:
            if self.jobs:
                return self.jobs.pop(0)
            now = time.monotonic()
            probe = self.probe if self.failing and len(self.guards) else None
            if probe is not None:
                if now >= self.probe_at:
                    self.probe = None
                    return _Job(functools.partial(self._run_probe, probe), None, None, wait=False)
                self.changed.wait(self.probe_at - now)
            elif now >= idle_until or not self.guards:
                self.worker = None
            else:
                self.changed.wait(idle_until - now)
        return None

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self.mutex:
                job = self._next_job(me)
                if job is None:
                    return
                self.busy_since = time.monotonic()
            try:
                job.result = job.call()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller or counted
                job.error = exc
            finally:
                with self.mutex:
                    self.busy_since = None
                    if job.key is not None and job.done is None:
                        left_queued = self.queued.get(job.key, 1) - 1
                        if left_queued:
                            self.queued[job.key] = left_queued
                        else:
                            self.queued.pop(job.key, None)
                    self.changed.notify_all()
            if job.done is not None:
                job.done.set()

    def wait_for_writes(self, key: str, timeout: float) -> bool:
        """Wait until no write to ``key`` is queued; False if ``timeout`` ran out."""
        if not self.queued:
            return True
        deadline = time.monotonic() + timeout
        with self.mutex:
            while self.queued.get(key):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
        return True

    def drain(self, timeout: float) -> bool:
        """Wait until every queued write has run (or ``timeout``); True if done."""
        deadline = time.monotonic() + timeout
        with self.mutex:
            while self.jobs or self.busy_since is not None:
                left = deadline - time.monotonic()
                if left <= 0 or self.worker is None:
                    return not self.jobs
                self.changed.wait(left)
        return True


# Backends by the identity of what they store in: a client, a cache object, a
# directory. Weak values: a backend lives as long as a guard uses it.
_backends: weakref.WeakValueDictionary[Any, _Backend] = weakref.WeakValueDictionary()
_backends_lock = threading.Lock()


def _identity(storage: TokenStorage) -> Any:
    inner = getattr(storage, "storage", None)
    if isinstance(inner, TokenStorage):
        return _identity(inner)
    directory = getattr(storage, "directory", None)
    if isinstance(directory, str):
        return (type(storage).__name__, directory)
    for name in ("client", "obj"):
        obj = getattr(storage, name, None)
        if obj is not None:
            return ("client", id(obj))
    return ("storage", id(storage))


def _backend_for(storage: TokenStorage) -> _Backend:
    key = _identity(storage)
    with _backends_lock:
        backend = _backends.get(key)
        if backend is None:
            backend = _backends[key] = _Backend(storage)
            # Keeps the object whose id() is the key alive as long as the
            # backend: an id is never reused while its entry exists.
            backend.anchor = storage  # type: ignore[attr-defined]  # set once, here
        return backend


def drain_all(timeout: float = 2.0) -> None:
    """Run what every backend has queued, within ``timeout`` seconds overall.

    Called as the interpreter (or a multiprocessing child) exits, so that a
    token fetched just before is stored for the other processes.
    """
    deadline = time.monotonic() + timeout
    for backend in list(_backends.values()):
        backend.drain(max(0.0, deadline - time.monotonic()))


def _register_exit_hook() -> None:
    # threading._register_atexit runs before the interpreter joins its threads,
    # and in multiprocessing children too, which leave by os._exit() and never
    # run atexit. concurrent.futures relies on it; atexit where it is missing.
    register = getattr(threading, "_register_atexit", None)
    if callable(register):
        try:
            register(drain_all)
            return
        except RuntimeError:  # already shutting down
            return
    import atexit

    atexit.register(drain_all)


_register_exit_hook()


# -- one manager's view -------------------------------------------------------


class StorageGuard:
    """One credential's key in one storage, with every call guarded.

    Args:
        storage: The storage.
        key: The credential's key in it.
        timeout: ``storage_timeout``: bound of each call a caller waits on.
        retry_interval: ``storage_retry_interval``: rest after a fault before
            the storage is probed again.
        count_error: Called once per failed call or garbage read, with what
            went wrong (no secret: transport errors only are quoted).
        on_recover: Called when the storage answers again after a fault.

    Thread-safe; fork-safe through the backend it shares.
    """

    def __init__(
        self,
        storage: TokenStorage,
        key: str,
        *,
        timeout: float,
        retry_interval: float,
        count_error: Callable[[str], None],
        on_recover: Callable[[], None] | None = None,
    ) -> None:
        self.storage = storage
        self.key = key
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.count_error = count_error
        self.on_recover = on_recover
        self.backend = _backend_for(storage)
        self.backend.guards.add(self)
        bound = self.backend.bound
        # In the caller's thread when the client's own timeouts bound the call.
        self.inline = bound is not None and bound <= timeout * (1 + 1e-9)
        self._garbage_warned_at = -float("inf")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["backend"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.backend = _backend_for(self.storage)
        self.backend.guards.add(self)

    @property
    def usable(self) -> bool:
        """Whether the storage is not known to be failing."""
        return self.backend.usable()

    # -- calls ------------------------------------------------------------

    def call(self, call: Callable[[], _T]) -> _T:
        """Run ``call`` now and return its answer, within ``timeout``.

        Raises:
            StorageFault: the storage is failing, or this call failed.
        """
        backend = self.backend
        if not backend.usable():
            raise StorageFault("storage is failing")
        if self.inline:
            if not backend.wait_for_writes(self.key, self.timeout):
                self._fault(f"own writes still queued after {self.timeout:g}s")
            try:
                result = call()
            except Exception as exc:  # noqa: BLE001 - any backend error is a fault
                self._fault(_describe_fault(exc))
            backend.answered()
            return result
        if backend.stuck(self.timeout):
            self._fault(f"a call has had no answer for over {self.timeout:g}s")
        job = _Job(call, self.key, None, wait=True)
        if not backend.submit(job):
            self._fault("too many calls queued")
        assert job.done is not None  # noqa: S101 - wait=True made it
        if not job.done.wait(self.timeout):
            self._fault(f"no answer within {self.timeout:g}s")
        if job.error is not None:
            self._fault(_describe_fault(job.error))
        backend.answered()
        return job.result  # type: ignore[no-any-return]

    def later(self, call: Callable[[], object]) -> None:
        """Run ``call`` on the worker, off the caller's path; faults are counted."""
        backend = self.backend
        if not backend.usable():
            return
        guard = self

        def run() -> None:
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - any backend error is a fault
                try:
                    guard._fault(_describe_fault(exc))
                except StorageFault:
                    pass
            else:
                backend.answered()

        if not self.storage.blocking:
            run()  # memory: nothing to wait for, no reason to hand it over
        elif not backend.submit(_Job(run, self.key, None, wait=False)):
            self.count_error("too many calls queued")

    def recovered(self) -> None:
        on_recover = self.on_recover
        if on_recover is not None:
            try:
                on_recover()
            except Exception:  # telling must not break the worker
                log.debug("storage recovery callback failed", exc_info=True)

    def _fault(self, reason: str) -> NoReturn:
        self.count_error(reason)
        storage, key = self.storage, self.key
        self.backend.fault(reason, lambda: storage.load(key), self.retry_interval)
        raise StorageFault(reason)

    def attempt(self, call: Callable[[], _T]) -> _T | None:
        """:meth:`call`, with ``None`` for a fault."""
        try:
            return self.call(call)
        except StorageFault:
            return None

    # -- the token under the key -----------------------------------------

    def load(self) -> Token | None:
        """The token stored under the key; ``None`` if none, garbage, or a fault."""
        storage, key = self.storage, self.key
        raw = self.attempt(lambda: storage.load(key))
        return None if raw is None else self.decode(raw)

    def decode(self, raw: object) -> Token | None:
        """``raw`` read under the key as a token; garbage is counted, warned about, None."""
        try:
            return decode(raw)
        except ValueError:
            self.count_error("an unreadable value under the key")
            now = time.monotonic()
            if now - self._garbage_warned_at >= _WARN_INTERVAL:
                self._garbage_warned_at = now
                log.warning(
                    "ignoring an unreadable value under %s in %s; it will be overwritten",
                    self.key,
                    self.backend.name,
                )
            return None

    def save(self, token: Token, ttl: float | None, *, wait: bool) -> None:
        """Store ``token`` for ``ttl`` seconds; ``wait=False`` queues it."""
        storage, key, value = self.storage, self.key, encode(token)
        if wait:
            self.attempt(lambda: storage.save(key, value, ttl))
        else:
            self.later(lambda: storage.save(key, value, ttl))

    def delete(self, token: Token | None, *, wait: bool) -> None:
        """Delete the stored token: ``token`` only (compare-and-delete), or whatever is there."""
        storage, key = self.storage, self.key

        def delete() -> None:
            if token is None:
                storage.delete(key)
                return
            raw = storage.load(key)
            if raw is None:
                return
            try:
                stored = decode(raw)
            except ValueError:
                return
            if stored == token:
                # Atomic where the storage can: a newer token stored meanwhile survives.
                storage.delete(key, raw)

        if wait:
            self.attempt(delete)
        else:
            self.later(delete)

    # -- the fetch lock ---------------------------------------------------

    def release_lock(self, owner: str) -> None:
        """Release the fetch lock ``owner`` took, after the queued writes."""
        storage, key = self.storage, self.key
        self.later(lambda: storage.release_lock(key, owner))

    def wait_for_lock(
        self, lock_ttl: float, lock_wait: float, accept: Callable[[Token], bool]
    ) -> tuple[str | None, Token | None]:
        """Take the fetch lock, or wait for its holder's token.

        Args:
            lock_ttl: How long the lock lives if its holder dies.
            lock_wait: Longest wait for another process's token; 0 tries
                the lock once.
            accept: Whether a stored token will do.

        Returns:
            ``(owner, None)`` when this process should fetch holding the lock,
            ``(None, token)`` when another process stored a token meanwhile,
            ``(None, None)`` when the storage failed or the wait ran out (fetch
            without the lock).
        """
        storage, key = self.storage, self.key
        deadline = time.monotonic() + lock_wait
        pause = 0.01
        while True:
            try:
                owner = self.call(lambda: storage.acquire_lock(key, lock_ttl))
            except StorageFault:
                return None, None
            if owner is None and lock_wait <= 0:
                return None, None  # one try asked for: held by another process
            if owner is not None:
                # Someone may have stored a token between our read and the lock.
                shared = self.load()
                if shared is not None and accept(shared):
                    self.release_lock(owner)
                    return None, shared
                return owner, None
            if time.monotonic() + pause > deadline:
                log.warning(
                    "waited %gs for another process's token fetch; fetching here", lock_wait
                )
                return None, None
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
            if not self.usable:
                return None, None
            shared = self.load()
            if shared is not None and accept(shared):
                return None, shared
