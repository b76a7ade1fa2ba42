"""One ``fork()`` hook for the whole package.

Objects that own locks, threads or sockets register here; in a forked child
each gets ``_after_fork()`` called, so that the child never inherits a lock
held by a parent thread (which no child thread could ever release) or a pool
of sockets that the parent is still using. One registration per module and a
``WeakSet`` of live objects, as CPython's ``logging`` does it.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Protocol

log = logging.getLogger("alf_session")


class _ForkAware(Protocol):
    def _after_fork(self) -> None: ...


_live: weakref.WeakSet[_ForkAware] = weakref.WeakSet()


def register(obj: _ForkAware) -> None:
    """Call ``obj._after_fork()`` in every child forked while ``obj`` lives."""
    _live.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_live):
        try:
            obj._after_fork()
        except Exception:  # a hook must not break the child
            log.debug("after-fork reset of %s failed", type(obj).__name__, exc_info=True)


if hasattr(os, "register_at_fork"):  # absent on Windows, which has no fork()
    os.register_at_fork(after_in_child=_after_fork_in_child)
