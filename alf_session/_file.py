"""A directory as the shared token storage of the processes of one host."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
import time
from typing import Protocol

from . import _fork
from ._base import DEFAULT_PREFIX, TokenStorage, new_owner

__all__ = ["FileStorage"]

log = logging.getLogger("alf_session.storage")

# Longest a save or compare-and-delete waits for another process's write.
_WRITE_WAIT = 5.0


class _HeldLocks:
    """The fetch locks this process holds, by owner, whatever FileStorage took them.

    Process-wide, so that any FileStorage of the process can give up a lock
    that another one kept past its ttl.
    """

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.locks: dict[str, tuple[_Lock, float]] = {}  # owner -> (lock, monotonic deadline)
        # Locks a forked child inherited. They stay referenced so that they are
        # never finalized: finalizing one would unlock the parent's lock (flock
        # locks belong to the open file, which parent and child share).
        self.inherited: list[_Lock] = []
        _fork.register(self)

    def _after_fork(self) -> None:
        self.inherited.extend(lock for lock, _ in self.locks.values())
        self.locks = {}
        self.mutex = threading.Lock()

    def add(self, owner: str, lock: _Lock, ttl: float) -> None:
        with self.mutex:
            self.locks[owner] = (lock, time.monotonic() + ttl)

    def pop(self, owner: str) -> _Lock | None:
        with self.mutex:
            held = self.locks.pop(owner, None)
        return None if held is None else held[0]

    def drop_expired(self) -> None:
        # A lock kept past its ttl by a holder in this process (one that hung,
        # or whose release call failed) is given up, as Redis would expire it.
        now = time.monotonic()
        with self.mutex:
            expired = [owner for owner, (_, deadline) in self.locks.items() if deadline <= now]
            locks = [self.locks.pop(owner)[0] for owner in expired]
        for lock in locks:
            lock.release()


class _Lock(Protocol):
    def acquire(self, timeout: float) -> bool: ...
    def release(self) -> None: ...


class _FileLockLock:
    """An OS file lock through the ``filelock`` library (fcntl, or msvcrt on Windows)."""

    def __init__(self, path: str) -> None:
        import filelock

        # thread_local=False: the manager may release from another thread
        # than the one that acquired (each storage call runs in its own).
        self._lock = filelock.FileLock(path, mode=0o600, thread_local=False)
        self._timeout = filelock.Timeout

    def acquire(self, timeout: float) -> bool:
        try:
            self._lock.acquire(timeout=timeout, poll_interval=0.01)
        except self._timeout:
            return False
        return True

    def release(self) -> None:
        self._lock.release()


class _FcntlLock:
    """``flock(2)`` directly, where ``filelock`` is not installed."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None

    def acquire(self, timeout: float) -> bool:
        import fcntl

        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.01)
            else:
                self._fd = fd
                return True

    def release(self) -> None:
        import fcntl

        fd, self._fd = self._fd, None
        if fd is not None:
            # Unlock before closing: a child forked meanwhile holds the same
            # open file, and closing alone would leave it locked.
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _lock_class() -> type[_FileLockLock] | type[_FcntlLock] | None:
    try:
        import filelock  # noqa: F401 - probing only
    except ImportError:
        try:
            import fcntl  # noqa: F401 - probing only
        except ImportError:  # Windows without filelock: no cross-process lock
            return None
        return _FcntlLock
    return _FileLockLock


class FileStorage(TokenStorage):
    """Tokens in a directory shared by the processes of one host.

    The embedded choice for several worker processes (gunicorn, uwsgi,
    multiprocessing) without a server. One file per token, written
    atomically (a temporary file, then :func:`os.replace`), readable by its
    owner only (0600, in a directory created 0700), holding the token's
    expiry so that an expired token is never read back. The fetch lock is an
    OS file lock (the ``filelock`` library, extra ``file``; ``fcntl``
    without it): the kernel releases it when its holder dies, and a holder
    that outlives its ``ttl`` in this process gives it up.

    Not for a directory shared between hosts (NFS): use Redis there.

    Args:
        directory: The directory; created (0700) if missing.
        prefix: Namespace put in front of every key.

    Raises:
        ConfigurationError: the directory can't be created or isn't one.

    Thread-safe and fork-safe: a forked child never holds its parent's locks.

    .. versionadded:: 0.1
    """

    def __init__(self, directory: str | os.PathLike[str], *, prefix: str = DEFAULT_PREFIX) -> None:
        from .errors import ConfigurationError

        super().__init__(prefix=prefix)
        self.directory = os.path.abspath(os.fspath(directory))
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise ConfigurationError(f"token storage {self.directory!r} is not a directory")
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            mode = os.stat(self.directory).st_mode
        except OSError as exc:
            raise ConfigurationError(
                f"cannot use {self.directory!r} as token storage: {exc.strerror or exc}"
            ) from None
        if not stat.S_ISDIR(mode):
            raise ConfigurationError(f"token storage {self.directory!r} is not a directory")
        if os.name == "posix" and mode & 0o022:
            # They can't read a token (each file is 0600) but could replace one.
            log.warning(
                "token storage directory %s is writable by other users (mode %o); make it 0700",
                self.directory,
                stat.S_IMODE(mode),
            )
        self._lock_class = _lock_class()
        self.can_lock = self._lock_class is not None

    def __repr__(self) -> str:
        return f"FileStorage({self.directory!r})"

    def _path(self, key: str, suffix: str) -> str:
        # A hash of the key: a valid file name on every OS, whatever the prefix.
        name = hashlib.sha256(key.encode()).hexdigest()[:40]
        return os.path.join(self.directory, name + suffix)

    # -- values ------------------------------------------------------------

    def load(self, key: str) -> str | None:
        try:
            with open(self._path(key, ".token"), encoding="utf-8", errors="replace") as file:
                content = file.read()
        except FileNotFoundError:
            return None
        try:
            envelope = json.loads(content)
            value, expires_at = envelope["value"], envelope["expires_at"]
        except (ValueError, TypeError, KeyError):
            return content or None  # garbage: the manager warns and overwrites it
        if not isinstance(value, str):
            return content
        if isinstance(expires_at, (int, float)) and expires_at <= time.time():
            return None
        return value

    def save(self, key: str, value: str, ttl: float | None) -> None:
        expires_at = None if ttl is None else time.time() + ttl
        data = json.dumps({"value": value, "expires_at": expires_at}, separators=(",", ":"))
        with self._writing(key):
            self._write(self._path(key, ".token"), data)

    def delete(self, key: str, expected: str | None = None) -> None:
        path = self._path(key, ".token")
        with self._writing(key):
            if expected is not None and self.load(key) != expected:
                return
            try:
                os.remove(path)
            except FileNotFoundError:
                pass

    def _write(self, path: str, data: str) -> None:
        # mkstemp creates the file 0600; os.replace swaps it in atomically, so
        # a reader sees the old token or the new one, never half of one.
        fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".token")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(data)
            os.replace(temp, path)
        except BaseException:
            try:
                os.remove(temp)
            except OSError:
                pass
            raise

    def _writing(self, key: str) -> _Held:
        """A short cross-process lock around a write or a compare-and-delete."""
        return _Held(self._new_lock(self._path(key, ".write")), _WRITE_WAIT)

    def _new_lock(self, path: str) -> _Lock:
        cls = self._lock_class
        if cls is None:
            return _NoLock()
        return cls(path)

    # -- fetch lock --------------------------------------------------------

    def acquire_lock(self, key: str, ttl: float) -> str | None:
        if self._lock_class is None:
            return None
        _held.drop_expired()
        lock = self._new_lock(self._path(key, ".lock"))
        if not lock.acquire(0):
            return None
        owner = new_owner()
        _held.add(owner, lock, ttl)
        return owner

    def release_lock(self, key: str, owner: str) -> None:
        lock = _held.pop(owner)
        if lock is not None:
            lock.release()
        _held.drop_expired()


class _NoLock:
    def acquire(self, timeout: float) -> bool:
        return True

    def release(self) -> None:
        pass


class _Held:
    """Context manager: take ``lock`` within ``timeout`` or raise TimeoutError."""

    def __init__(self, lock: _Lock, timeout: float) -> None:
        self._lock = lock
        self._timeout = timeout

    def __enter__(self) -> None:
        if not self._lock.acquire(self._timeout):
            raise TimeoutError(f"another process held the token file for {self._timeout:g}s")

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


_held = _HeldLocks()
