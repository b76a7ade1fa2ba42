"""The rules of the request flow, as pure functions.

Shared by :class:`~alf_session.TokenSession`, :class:`~alf_session.BearerAuth`
and :class:`~alf_session.TokenAdapter`, so that all three decide alike which
host may get the token, which body can be sent again, and which 401 calls for
a retry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from requests.auth import _basic_auth_str
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from requests.utils import get_netrc_auth, rewind_body

from .errors import ConfigurationError

if TYPE_CHECKING:
    from requests import Response

    from .manager import TokenManager
    from .token import Token

# Set on the PreparedRequest of a retry, so that it is never retried again.
RETRIED_ATTR = "_alf_session_retried"

_DEFAULT_PORTS = {"http": 80, "https": 443}

# Largest 401 body read before a retry so that its connection can be reused.
_DRAIN_LIMIT = 64 * 1024


def normalize_hosts(hosts: Iterable[str] | str | None) -> frozenset[str] | None:
    """``token_hosts`` as a frozenset of lower-case ``host`` or ``host:port``.

    Raises:
        ConfigurationError: not a sequence of host names.
    """
    if hosts is None:
        return None
    if isinstance(hosts, str):
        hosts = [hosts]
    result = set()
    for host in hosts:
        if not isinstance(host, str) or not host.strip() or "/" in host:
            raise ConfigurationError(
                f"token_hosts must hold host names such as 'api.example.com' or "
                f"'localhost:8080' (no scheme or path), not {host!r}"
            )
        entry = host.strip().lower().rstrip(".")
        result.add(entry)
        result.add(_as_connected(entry, host))
    return frozenset(result)


def _as_connected(entry: str, given: str) -> str:
    """``entry`` spelt as :func:`host_allowed` sees the host of a prepared
    URL: IDNA-encoded as requests encodes it (``bücher.example`` is
    ``xn--bcher-kva.example`` on the wire), an IPv6 literal without brackets
    unless a port follows."""
    port = ""
    if entry.startswith("["):
        name, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:
        name, _, port = entry.partition(":")
    else:
        name = entry
    name = name.rstrip(".")
    if not name.isascii():
        try:
            encoded = PreparedRequest._get_idna_encoded_host(name)  # type: ignore[attr-defined]  # private in requests
            name = encoded.lower().rstrip(".")
        except UnicodeError:
            raise ConfigurationError(
                f"token_hosts holds {given!r}, which is not a valid host name"
            ) from None
    if not port:
        return name
    return f"[{name}]:{port}" if ":" in name else f"{name}:{port}"


@lru_cache(maxsize=256)
def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    host = (parts.hostname or "").rstrip(".")
    return scheme, host, port if port is not None else _DEFAULT_PORTS.get(scheme)


def host_allowed(url: str | None, hosts: frozenset[str] | None) -> bool:
    """Whether the token may be sent to ``url`` under ``token_hosts``.

    ``None`` allows every host; an entry ``host`` allows that host on any
    port, ``host:port`` on that port only (default ports included).
    """
    if hosts is None:
        return True
    if not url:
        return False
    _, host, port = _origin(url)
    if not host:
        return False
    if host in hosts:
        return True
    if port is None:
        return False
    if ":" in host:  # IPv6 literal
        return f"[{host}]:{port}" in hosts
    return f"{host}:{port}" in hosts


def authorization(headers: Mapping[str, str]) -> str | None:
    """The ``Authorization`` header in ``headers`` (any case), or ``None``.

    ``requests``' ``CaseInsensitiveDict`` has no ``__contains__`` or ``get`` of
    its own: both go through ``Mapping``, which raises and catches a
    ``KeyError`` when the header is absent (the usual case for us), and that
    costs more than the rest of the hot path (~1 µs). Its ``_store`` maps the
    lower-case name to ``(name, value)``, so look there when it is exactly
    that class.
    """
    if type(headers) is CaseInsensitiveDict:
        item = headers._store.get("authorization")  # type: ignore[attr-defined]  # private in types-requests
        return None if item is None else item[1]
    return headers.get("Authorization")


def attach(request: PreparedRequest, token: Token) -> None:
    """Put ``token`` on ``request``.

    Nothing else is written to the request: which token it carries is told by
    its header (see :func:`sent_token`). Adding an attribute to every request
    would turn its key-sharing ``__dict__`` into a private one, which costs
    more than the rest of the hot path.
    """
    headers = request.headers
    if type(headers) is CaseInsensitiveDict:
        # What CaseInsensitiveDict.__setitem__ does, without its Python frame.
        headers._store["authorization"] = ("Authorization", token.header_value)  # type: ignore[attr-defined]  # private in types-requests
    else:
        headers["Authorization"] = token.header_value


def sent_token(response: Response, request: PreparedRequest, manager: TokenManager) -> Token | None:
    """The token of ``manager`` that a 401 ``response`` to ``request`` refused,
    if it calls for a retry.

    A retry is called for when the response is a 401, the request that got it
    (``request`` itself, or its last redirect hop) carried a token ``manager``
    handed out, ``request`` carried the same one (so a hop that requests
    stripped, or filled from ``~/.netrc``, does not count), and neither was
    already a retry.
    """
    if response.status_code != 401 or getattr(request, RETRIED_ATTR, False):
        return None
    final = response.request
    if final is None or getattr(final, RETRIED_ATTR, False):
        return None
    header = authorization(final.headers)
    if header is None or (final is not request and authorization(request.headers) != header):
        return None
    return manager._token_for_header(header)


def replayable(request: PreparedRequest) -> bool:
    """Whether ``request``'s body can be sent a second time.

    ``None``, bytes and str bodies (which dict, list and json bodies become)
    can; a file-like body can if requests recorded where it started; a
    generator or other iterator cannot.
    """
    body = request.body
    if body is None or isinstance(body, (bytes, str)):
        return True
    if hasattr(body, "read"):
        return isinstance(getattr(request, "_body_position", None), int)
    return False


def retry_request(request: PreparedRequest, token: Token) -> PreparedRequest:
    """A copy of ``request`` with its body rewound and ``token`` on it."""
    retry = request.copy()
    if hasattr(retry.body, "read"):
        rewind_body(retry)
    attach(retry, token)
    setattr(retry, RETRIED_ATTR, True)
    return retry


def origin(url: str | None) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``url``, with the scheme's default port filled in."""
    return _origin(url or "")


def from_netrc(url: str | None, header: str) -> bool:
    """Whether ``header`` is what requests made of ``~/.netrc`` for ``url``.

    requests puts netrc credentials on every request without ``auth`` (and
    on every redirect hop, over the header that was there): they are not
    the caller's choice, and the token must win over them. Only a ``Basic``
    header is checked, so other requests never pay for reading the file.
    """
    if not url or not header.startswith("Basic "):
        return False
    credentials = get_netrc_auth(url)
    return credentials is not None and header == _basic_auth_str(*credentials)


def drain(response: Response) -> None:
    """Let go of a response we are about to replace.

    A body not read yet (``stream=True``, or under an adapter or an auth
    hook, which see the response before requests reads it) is read only
    when its ``Content-Length`` says it is small, so that the connection goes
    back to the pool. Any other is not read: a hostile API can answer 401
    with an endless body, which plain requests would hand back at once with
    ``stream=True``; closing drops the connection instead.
    """
    if not response._content_consumed:  # type: ignore[attr-defined]  # private in requests
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= _DRAIN_LIMIT:
            try:
                _ = response.content
            except Exception:  # noqa: BLE001, S110 - a broken 401 body must not stop the retry
                pass
    response.close()
