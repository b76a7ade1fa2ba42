"""Ready-made credentials: an assertion or a subject token from a string, a
callable, a file read again at each token request, or a TokenManager.

Workload identity platforms hand a process a short-lived JWT in a file that
they rewrite before it expires (a Kubernetes projected service-account
token, ``AZURE_FEDERATED_TOKEN_FILE``, ``AWS_WEB_IDENTITY_TOKEN_FILE``), or
behind a call (GitHub Actions' OIDC endpoint). Reading the source again at
every token request is what keeps up with their rotation; the value itself
is never kept, logged, shown or stored.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ConfigurationError, CredentialSourceError, TokenError

__all__ = ["CredentialSource"]

# A compact JWS/JWT: three base64url parts. Such a string is taken as the
# assertion itself; any other string must name a file.
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
# Projected tokens are a few KiB. A larger file is not one (a planted device
# or a log file); reading stops here.
_MAX_FILE = 64 * 1024


class CredentialSource:
    """One ready-made credential, got afresh at each :meth:`get`.

    Args:
        value: A JWT string (used as it is), a path (``str`` naming an
            existing file, or any :class:`os.PathLike`, which may appear
            later) read at each call, a callable returning the string, or,
            with ``managers=True``, a :class:`~alf_session.TokenManager`
            whose current access token is the value.
        name: What the value is (``"client_assertion"``, ``"subject_token"``),
            for messages.
        managers: Whether a TokenManager is accepted.

    Thread-safe. The value never appears in a repr or a message.
    """

    __slots__ = ("_call", "kind", "name", "path", "target")

    def __init__(self, value: object, *, name: str, managers: bool = False) -> None:
        self.name = name
        self.path: Path | None = None
        #: The TokenManager or callable the value comes from, else ``None``.
        self.target: Any = None
        if isinstance(value, os.PathLike):
            self.kind = "file"
            self.path = Path(value)
            self._call: Callable[[], str] = self._read
        elif isinstance(value, str):
            if not value.strip():
                raise ConfigurationError(f"{name} must not be empty")
            if _JWT_SHAPE.fullmatch(value.strip()):
                fixed = value.strip()
                self.kind = "string"
                self._call = lambda: fixed
            elif len(value) < 4096 and "\n" not in value and os.path.isfile(value):
                self.kind = "file"
                self.path = Path(value)
                self._call = self._read
            else:
                # Not quoted: it might be a credential in some other format.
                raise ConfigurationError(
                    f"{name} is a string that is neither a JWT nor the path of an existing "
                    "file; pass pathlib.Path(...) for a file that is written later"
                )
        elif managers and callable(getattr(value, "get_token", None)):
            self.kind = "manager"
            manager = self.target = value
            self._call = lambda: _from_manager(manager)
        elif callable(value):
            self.kind = "callable"
            func = self.target = value
            self._call = lambda: self._from_callable(func)
        else:
            accepted = "a JWT string, a path or a callable"
            if managers:
                accepted += " or a TokenManager"
            raise ConfigurationError(f"{name} must be {accepted}, not {type(value).__name__}")

    def __repr__(self) -> str:
        where = f" {str(self.path)!r}" if self.path is not None else ""
        return f"<{self.name} from a {self.kind}{where}>"

    def identity(self) -> str:
        """Names the source for a storage key, never by its value: a file by its
        path, a manager by its credential's key, a callable by its qualified
        name, a fixed string by a (one-way) hash of it."""
        if self.kind == "file":
            return f"file:{self.path}"
        if self.kind == "manager":
            provider = getattr(self.target, "provider", None)
            return f"manager:{getattr(provider, 'cache_key', None) or type(provider).__name__}"
        if self.kind == "callable":
            module = getattr(self.target, "__module__", "")
            return f"callable:{module}.{getattr(self.target, '__qualname__', '?')}"
        import hashlib

        return "string:" + hashlib.sha256(self._call().encode()).hexdigest()[:32]

    def get(self) -> str:
        """The credential now.

        Raises:
            CredentialSourceError: the file is missing, unreadable, empty or
                too large, or the callable failed or returned no string.
            TokenError: a TokenManager source could not get its token.
        """
        return self._call()

    def _read(self) -> str:
        assert self.path is not None  # noqa: S101 - set with kind "file"
        where = f"{self.name} file {str(self.path)[:200]!r}"
        try:
            # O_NONBLOCK: a FIFO planted at the path must not hang the caller
            # in open(); it is refused just below as not a regular file.
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            hint = (
                "; is the volume (projected token, workload identity) mounted?"
                if exc.errno == errno.ENOENT
                else ""
            )
            raise CredentialSourceError(
                f"cannot read {where}: {exc.strerror or type(exc).__name__}{hint}"
            ) from None
        try:
            try:
                regular = stat.S_ISREG(os.fstat(fd).st_mode)
                data = _read_at_most(fd, _MAX_FILE + 1) if regular else b""
            except OSError as exc:
                # (TokenError is an OSError too: nothing of ours is raised in here.)
                raise CredentialSourceError(
                    f"cannot read {where}: {exc.strerror or type(exc).__name__}"
                ) from None
        finally:
            os.close(fd)
        if not regular:
            raise CredentialSourceError(f"{where} is not a regular file")
        if len(data) > _MAX_FILE:
            raise CredentialSourceError(f"{where} is over {_MAX_FILE // 1024} KiB: not a token")
        try:
            text = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise CredentialSourceError(f"{where} is not UTF-8 text") from None
        if not text:
            raise CredentialSourceError(
                f"{where} is empty; the platform may not have written the token yet"
            )
        return text

    def _from_callable(self, func: Callable[[], Any]) -> str:
        name = getattr(func, "__qualname__", type(func).__name__)
        try:
            value = func()
        except TokenError:
            raise
        except Exception as exc:
            # The type only: the callable's own message may contain anything.
            raise CredentialSourceError(
                f"the {self.name} callable {name} failed with {type(exc).__name__}; "
                "see the chained exception"
            ) from exc
        if not isinstance(value, str) or not value.strip():
            got = "an empty string" if isinstance(value, str) else type(value).__name__
            raise CredentialSourceError(
                f"the {self.name} callable {name} returned {got}; it must return the token string"
            )
        return value.strip()


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _from_manager(manager: Any) -> str:
    token = manager.get_token()
    value: str = token.access_token
    return value
