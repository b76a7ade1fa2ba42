"""This process's memory as a shared storage: the managers given it share a token."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from . import _fork
from ._base import DEFAULT_PREFIX, TokenStorage, new_owner

__all__ = ["MemoryStorage"]


class MemoryStorage(TokenStorage):
    """A storage in this process's memory, shared by the managers given it.

    Useful to let several sessions with the same credential share one token,
    and in tests. Thread-safe; after ``fork()`` the child has its own copy.

    .. versionadded:: 0.1
    """

    can_lock = True
    blocking = False

    def __init__(
        self, *, prefix: str = DEFAULT_PREFIX, clock: Callable[[], float] | None = None
    ) -> None:
        super().__init__(prefix=prefix)
        self._clock = clock or time.monotonic
        self._data: dict[str, tuple[str, float | None]] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._mutex = threading.Lock()
        _fork.register(self)

    def _after_fork(self) -> None:
        self._mutex = threading.Lock()
        self._locks.clear()

    def _now(self) -> float:
        return self._clock()

    def load(self, key: str) -> str | None:
        with self._mutex:
            item = self._data.get(key)
            if item is None:
                return None
            value, deadline = item
            if deadline is not None and deadline <= self._now():
                del self._data[key]
                return None
            return value

    def save(self, key: str, value: str, ttl: float | None) -> None:
        with self._mutex:
            self._data[key] = (value, None if ttl is None else self._now() + ttl)

    def delete(self, key: str, expected: str | None = None) -> None:
        with self._mutex:
            item = self._data.get(key)
            if item is not None and (expected is None or item[0] == expected):
                del self._data[key]

    def acquire_lock(self, key: str, ttl: float) -> str | None:
        with self._mutex:
            now = self._now()
            held = self._locks.get(key)
            if held is not None and held[1] > now:
                return None
            owner = new_owner()
            self._locks[key] = (owner, now + ttl)
            return owner

    def release_lock(self, key: str, owner: str) -> None:
        with self._mutex:
            held = self._locks.get(key)
            if held is not None and held[0] == owner:
                del self._locks[key]
