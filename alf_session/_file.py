"""A directory as the shared token storage of the processes of one host."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
import threading
import time
import weakref
from typing import Protocol

from . import _fork
from ._base import DEFAULT_PREFIX, GARBAGE, TokenStorage, new_owner

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
    """An OS file lock through the ``filelock`` library: Windows (msvcrt) only.

    On POSIX :class:`_FcntlLock` is used instead: filelock opens its file by
    path, following a symlink planted in its place (and truncating its
    target).
    """

    def __init__(self, path: str, dir_fd: int | None = None) -> None:
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
    """``flock(2)`` on a file opened inside the storage's directory, never through a symlink."""

    def __init__(self, path: str, dir_fd: int | None = None) -> None:
        self._path = path if dir_fd is None else os.path.basename(path)
        self._dir_fd = dir_fd
        self._fd: int | None = None

    def acquire(self, timeout: float) -> bool:
        import fcntl

        fd = _open_lock_file(self._path, self._dir_fd)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.01)
            except BaseException:
                os.close(fd)
                raise
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
        import fcntl  # noqa: F401 - probing only
    except ImportError:
        try:
            import filelock  # noqa: F401 - probing only
        except ImportError:  # Windows without filelock: no cross-process lock
            return None
        return _FileLockLock
    return _FcntlLock


# O_NOFOLLOW: a symlink in place of the file fails with ELOOP instead of being
# followed. O_NONBLOCK: a FIFO planted in place of the file opens at once
# instead of waiting for a writer (and is then refused for not being a file).
# Both are absent on Windows, where the directory checks are absent too.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

# Largest token file read back: a token response is a few kB (a JWT access
# token, an id_token); anything this big is not ours (golang/oauth2 reads at
# most 1 MiB of a token response).
MAX_FILE_BYTES = 1 << 20


def _untrusted(st: os.stat_result) -> str | None:
    """Why a file or directory may not be trusted, or None if it may.

    Trusted: owned by this process's effective user and writable by nobody
    else. On Windows (no ``geteuid``) nothing is checked.
    """
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None:
        return None
    if st.st_uid != geteuid():
        return f"it is owned by uid {st.st_uid}, not by this process's user (uid {geteuid()})"
    if st.st_mode & 0o022:
        return f"others can write it (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _open_lock_file(name: str, dir_fd: int | None) -> int:
    """Open (creating 0600) a lock file, never through a symlink, only if it is ours.

    Anything else found under the lock's name (a symlink, a FIFO, a
    directory, a file of another user or that others can write) was planted:
    it is unlinked (unlink never follows a symlink) and a fresh file made,
    once. Unlinking a good lock file would let two processes lock two files,
    so only an untrusted one is.
    """
    flags = os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC
    for attempt in (1, 2):
        try:
            fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
        except OSError as exc:
            # ELOOP: a symlink; EISDIR: a directory; ENXIO: a FIFO with no reader.
            if attempt == 2:
                raise
            log.warning("replacing an untrusted lock file %s (%s)", name, exc.strerror)
            _remove_entry(name, dir_fd)
            continue
        st = os.fstat(fd)
        reason = None if stat.S_ISREG(st.st_mode) else "it is not a regular file"
        reason = reason or _untrusted(st)
        if reason is None:
            return fd
        os.close(fd)
        if attempt == 2:
            raise PermissionError(f"lock file {name} is not trusted: {reason}")
        log.warning("replacing an untrusted lock file %s (%s)", name, reason)
        _remove_entry(name, dir_fd)
    raise AssertionError("unreachable")  # pragma: no cover


def _remove_entry(name: str, dir_fd: int | None) -> None:
    """Remove a file, symlink or empty directory planted under ``name``."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except IsADirectoryError:
        os.rmdir(name, dir_fd=dir_fd)
    except PermissionError:
        # Linux says EISDIR for a directory, macOS EPERM.
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


class FileStorage(TokenStorage):
    """Tokens in a directory shared by the processes of one host.

    The embedded choice for several worker processes (gunicorn, uwsgi,
    multiprocessing) without a server. One file per token, written
    atomically (a temporary file, then :func:`os.replace`), readable by its
    owner only (0600, in a directory created 0700), holding the token's
    expiry so that an expired token is never read back. The fetch lock is an
    OS file lock (``flock``; the ``filelock`` library, extra ``file``, on
    Windows): the kernel releases it when its holder dies, and a holder that
    outlives its ``ttl`` in this process gives it up.

    Files that another user can touch are never trusted (POSIX):

    * the directory must belong to this process's user and be writable by
      nobody else, or construction fails with a :class:`ConfigurationError`
      (anyone who can write it could plant files and symlinks in it). It is
      opened once; every file is then opened relative to that handle, so a
      directory renamed or replaced afterwards is never used;
    * a token file is opened without following a symlink and without waiting
      on a FIFO, and is read only if it is a regular file of this user, that
      nobody else can write, of at most 1 MiB. Anything else is ignored as
      garbage (counted, warned about) and replaced by the next save;
    * a lock file is opened the same way; a planted one is removed and made
      afresh.

    Every process that shares the directory must run as the same user (the
    owner of the directory and of its files). The directory's parents are
    not checked: a parent that others can write lets them move the directory
    away and put another in its place, which is noticed only while it is
    being opened (after that the open handle is used). Not for a directory
    shared between hosts (NFS): use Redis there.

    Args:
        directory: The directory; created (0700) if missing.
        prefix: Namespace put in front of every key.

    Raises:
        ConfigurationError: the directory can't be created or isn't one, or
            belongs to another user, or others can write it.

    Thread-safe and fork-safe: a forked child never holds its parent's locks.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       A directory of another user, or that others can write, is refused (it
       was only warned about); symlinks and FIFOs are never followed; reads
       are bounded.
    """

    def __init__(self, directory: str | os.PathLike[str], *, prefix: str = DEFAULT_PREFIX) -> None:
        from .errors import ConfigurationError

        super().__init__(prefix=prefix)
        try:
            path = os.fspath(directory)
        except TypeError:
            raise ConfigurationError(
                f"FileStorage needs a directory path (str or os.PathLike), "
                f"not {type(directory).__name__}"
            ) from None
        if not isinstance(path, str) or not path or "\0" in path:
            raise ConfigurationError(
                "FileStorage needs a directory path as a non-empty str without NUL characters"
            )
        self.directory = os.path.abspath(path)
        self._dir_fd: int | None = None
        self._warned_at = -float("inf")
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise ConfigurationError(f"token storage {self.directory!r} is not a directory")
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            self._dir_fd = self._open_directory()
        except ConfigurationError:
            raise
        except OSError as exc:
            raise ConfigurationError(
                f"cannot use {self.directory!r} as token storage: {exc.strerror or exc}"
            ) from None
        self._lock_class = _lock_class()
        self.can_lock = self._lock_class is not None

    def _open_directory(self) -> int | None:
        """Open the directory once and check who may write it; None where dir_fd is unsupported."""
        from .errors import ConfigurationError

        if not (os.open in os.supports_dir_fd and hasattr(os, "O_DIRECTORY")):
            if not os.path.isdir(self.directory):
                raise ConfigurationError(f"token storage {self.directory!r} is not a directory")
            return None
        link = os.lstat(self.directory)
        if stat.S_ISLNK(link.st_mode) and link.st_uid not in (0, os.geteuid()):
            raise ConfigurationError(
                f"token storage {self.directory!r} is a symlink owned by uid {link.st_uid}, "
                "not by this process's user: someone else may have planted it; "
                "point FileStorage at the real directory"
            )
        # A symlink of ours (or root's) is configuration and is followed; a
        # directory is opened without following anything, and must be the one
        # lstat saw: a symlink swapped in between the two is never followed.
        linked = stat.S_ISLNK(link.st_mode)
        flags = os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC | (0 if linked else os.O_NOFOLLOW)
        try:
            fd = os.open(self.directory, flags)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            raise ConfigurationError(
                f"token storage {self.directory!r} was replaced while it was being opened; "
                "someone else can write its parent directory: use a directory whose "
                "parents only this user (or root) can write"
            ) from None
        try:
            st = os.fstat(fd)
            if not linked and (st.st_dev, st.st_ino) != (link.st_dev, link.st_ino):
                raise ConfigurationError(
                    f"token storage {self.directory!r} was replaced while it was being "
                    "opened; someone else can write its parent directory: use a directory "
                    "whose parents only this user (or root) can write"
                )
            reason = _untrusted(st)
            if reason is not None:
                raise ConfigurationError(
                    f"token storage {self.directory!r} is not safe: {reason}, so other users "
                    "could plant or replace token files. Use a directory of this user that "
                    f"only it can write (chmod 700 {self.directory}), or a new path "
                    "(FileStorage creates it 0700)"
                )
        except BaseException:
            os.close(fd)
            raise
        weakref.finalize(self, os.close, fd)
        return fd

    def __repr__(self) -> str:
        return f"FileStorage({self.directory!r})"

    def _path(self, key: str, suffix: str) -> str:
        # A hash of the key: a valid file name on every OS, whatever the prefix.
        name = hashlib.sha256(key.encode()).hexdigest()[:40]
        return os.path.join(self.directory, name + suffix)

    def _name(self, key: str, suffix: str) -> str:
        """What to open ``key``'s file by: a name in the open directory, or a path."""
        path = self._path(key, suffix)
        return path if self._dir_fd is None else os.path.basename(path)

    # -- values ------------------------------------------------------------

    def load(self, key: str) -> str | None:
        content = self._read(self._name(key, ".token"))
        if content is None:
            return None
        try:
            envelope = json.loads(content)
            value, expires_at = envelope["value"], envelope["expires_at"]
        except (ValueError, TypeError, KeyError, RecursionError):
            return GARBAGE if content else None  # the manager warns and overwrites it
        if not isinstance(value, str):
            return GARBAGE
        if isinstance(expires_at, (int, float)) and expires_at <= time.time():
            return None
        return value

    def _read(self, name: str) -> str | None:
        """The text of a token file we may trust, GARBAGE for any other, None if absent."""
        try:
            fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _CLOEXEC, dir_fd=self._dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK, errno.ENXIO, errno.EACCES):
                # A symlink (ELOOP; EMLINK on FreeBSD) or a socket in its place.
                self._ignoring(name, exc.strerror or type(exc).__name__)
                return GARBAGE
            raise
        try:
            st = os.fstat(fd)
            reason = None if stat.S_ISREG(st.st_mode) else "it is not a regular file"
            reason = reason or _untrusted(st)
            if reason is None and st.st_size > MAX_FILE_BYTES:
                reason = f"it holds {st.st_size} bytes, more than a token"
            if reason is not None:
                self._ignoring(name, reason)
                return GARBAGE
            data = os.read(fd, MAX_FILE_BYTES + 1)  # one read: a regular file gives all
            if len(data) > MAX_FILE_BYTES:
                return GARBAGE  # it grew after fstat
            return data.decode("utf-8", "replace")
        finally:
            os.close(fd)

    def _ignoring(self, name: str, reason: str) -> None:
        # Once a minute at most: a process waiting on the lock reads often.
        now = time.monotonic()
        if now - self._warned_at >= 60:
            self._warned_at = now
            log.warning("ignoring %s in %r: %s; the next save replaces it", name, self, reason)
        else:
            log.debug("ignoring %s in %r: %s", name, self, reason)

    def save(self, key: str, value: str, ttl: float | None) -> None:
        expires_at = None if ttl is None else time.time() + ttl
        data = json.dumps({"value": value, "expires_at": expires_at}, separators=(",", ":"))
        with self._writing(key):
            self._write(self._name(key, ".token"), data)

    def delete(self, key: str, expected: str | None = None) -> None:
        name = self._name(key, ".token")
        with self._writing(key):
            if expected is not None and self.load(key) != expected:
                return
            try:
                # unlink removes a symlink, never its target.
                os.unlink(name, dir_fd=self._dir_fd)
            except FileNotFoundError:
                pass

    def _write(self, name: str, data: str) -> None:
        # A new file (O_EXCL: never an existing one, never through a symlink),
        # 0600; os.replace swaps it in atomically, so a reader sees the old
        # token or the new one, never half of one. What it replaces (a
        # symlink, a FIFO, another user's file) is only a directory entry.
        dir_fd = self._dir_fd
        base = "" if dir_fd is not None else self.directory + os.sep
        temp = f"{base}.tmp-{os.urandom(8).hex()}.token"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(data)
            try:
                os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno not in (errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY):
                    raise
                # An empty directory in the token's place: garbage, removed.
                os.rmdir(name, dir_fd=dir_fd)
                os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=dir_fd)
            except OSError:
                pass
            raise

    def _writing(self, key: str) -> _Held:
        """A short cross-process lock around a write or a compare-and-delete."""
        return _Held(self._new_lock(key, ".write"), _WRITE_WAIT)

    def _new_lock(self, key: str, suffix: str) -> _Lock:
        cls = self._lock_class
        if cls is None:
            return _NoLock()
        return cls(self._path(key, suffix), self._dir_fd)

    # -- fetch lock --------------------------------------------------------

    def acquire_lock(self, key: str, ttl: float) -> str | None:
        if self._lock_class is None:
            return None
        _held.drop_expired()
        lock = self._new_lock(key, ".lock")
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
