"""The request flow: one place that decides where the token goes and what a 401 means.

Every front door -- :class:`~alf_session.TokenSession`,
:class:`~alf_session.BearerAuth`, :class:`~alf_session.TokenAdapter`, and the
httpx and aiohttp ones to come -- is a thin *driver* of :class:`RequestFlow`.
The flow does no I/O: like httpx's generator ``Auth.auth_flow``, it looks at
requests and responses and says what to send; the driver sends. So one set
of rules holds for every HTTP library, and ``tests/test_flow.py`` checks them
without a network.

The flow, for one request::

    token = flow.attach(request)           # may this host get a token? put it on
    response = yield request               # the driver sends it
    retry = flow.retry_for(request, response)
    if retry is not None:                  # a 401 refused our token: once more
        yield retry                        # the driver drains the 401, sends this

:meth:`RequestFlow.auth_flow` is exactly that generator; a driver for a
library with httpx's ``auth_flow`` shape can hand it over as it is.
:meth:`RequestFlow.aauth_flow` is the same for an event loop (asyncio or
trio): the token comes from ``aget_token`` and a 401 is judged in a thread
(it may touch the storage and the token endpoint), so the loop never blocks. The
requests drivers call the steps themselves, because requests splits them
(``prepare_request`` attaches, ``send`` and response hooks see the 401) and
because the hot path must not pay for a generator.

What :meth:`RequestFlow.retry_for` decides on a response:

1. Only a 401 matters, and never to a request that is already a retry.
2. The token that was refused is the one in the ``Authorization`` header of
   the request that got the 401 (a redirect hop, when the library followed
   redirects), and it must be the header the original request carried: a hop
   whose header the library stripped (a change of origin) or replaced (with
   ``~/.netrc`` credentials) does not count. The manager tells whether that
   header holds one of its tokens (:meth:`TokenSource._token_for_header`);
   only such a 401 is ours. A header the caller set is never replaced.
3. The manager is told (:meth:`TokenSource._refused`): it drops that token
   only (a newer one that another thread or process stored is kept) and,
   when the request can be sent again, hands out a replacement -- unless
   replacements were refused on their own retries twice within
   ``failure_ttl``: then the API refuses every fresh token, and fetching one
   per request would only hammer the token endpoint, so the 401 is returned
   as it is while that lasts. (A refused retry is reported too:
   :meth:`refused_retry`.)
4. A body that cannot be replayed (a generator, a file whose start is
   unknown) is not sent again; the token is still dropped.
5. The retry is a copy of the request with its body rewound, the cookies the
   401 set, the new token, and a mark that it is a retry. The driver drains
   and closes the 401 and keeps it in the history, as requests does for its
   own auth retries (``HTTPDigestAuth.handle_401``).

Writing a driver for another library means writing a :class:`Wire` for its
request and response types (``RequestsWire`` below is the reference) and
deciding where ``attach`` runs: before each request is sent, never on a
redirect hop (a hop inherits the header, or loses it on a change of origin).

Where the token may go (``token_hosts``) is judged on the origin the
transport will connect to, read the way the transport reads the URL
(:func:`url_origin` for requests: ``urllib.parse`` on the prepared URL, as
``requests.adapters.HTTPAdapter`` does), never on the URL the caller typed:
``"http://evil.example\\\\@api.example.com/"`` reads as ``api.example.com`` to
:func:`urllib.parse.urlsplit` but as ``evil.example`` to urllib3, which
requests prepares URLs with. Host names are compared in canonical form:
lower case, IDNA (``bücher.example`` is ``xn--bcher-kva.example``), one
trailing dot dropped, IP addresses in their standard spelling (``[::1]``,
``127.0.0.1`` for ``127.1``), ports explicit.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import socket
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from requests.structures import CaseInsensitiveDict
from requests.utils import get_netrc_auth, rewind_body

from .errors import ConfigurationError

if TYPE_CHECKING:
    from requests import PreparedRequest, Response
    from requests.adapters import BaseAdapter

    from .token import Token

__all__ = [
    "RequestFlow",
    "RequestsWire",
    "TokenSource",
    "Wire",
    "normalize_hosts",
    "url_origin",
]

#: ``(scheme, host, port)``: where a request goes, host in canonical form and
#: the scheme's default port filled in.
Origin = tuple[str, str, int | None]

_DEFAULT_PORTS = {"http": 80, "https": 443}

# Largest 401 body read before a retry so that its connection can be reused.
_DRAIN_LIMIT = 64 * 1024

# Set on a retry, so that it is never retried again (only retries carry it:
# an attribute on every request would cost the hot path, see attach()).
RETRIED_ATTR = "_alf_session_retried"

R = TypeVar("R")
S = TypeVar("S")
S_contra = TypeVar("S_contra", contravariant=True)


# -- what the flow needs from a manager and from an HTTP library ----------------------------


class TokenSource(Protocol):
    """What the flow needs from a :class:`~alf_session.TokenManager`.

    Four methods, documented in the manager: ``get_token`` and
    ``aget_token`` (public) for the token to attach, ``_token_for_header``
    to recognise one of its tokens in the header a refused request carried,
    and ``_refused`` to report a 401.
    """

    def get_token(self) -> Token: ...

    async def aget_token(self) -> Token: ...

    def _token_for_header(self, value: str) -> Token | None: ...

    def _refused(self, token: Token, *, replace: bool, again: bool = False) -> Token | None: ...


class Wire(Protocol[R, S_contra]):
    """How the flow reads and writes one HTTP library's requests (``R``) and
    responses (``S``). No method does network I/O."""

    def origin(self, request: R) -> Origin:
        """Where the transport will connect for ``request`` (see :func:`url_origin`)."""
        ...

    def authorization(self, request: R) -> str | None:
        """The request's ``Authorization`` header, or ``None``."""
        ...

    def set_authorization(self, request: R, value: str) -> None:
        """Set the request's ``Authorization`` header."""
        ...

    def status(self, response: S_contra) -> int:
        """The response's status code."""
        ...

    def request_of(self, response: S_contra) -> R | None:
        """The request that got ``response`` (the last redirect hop)."""
        ...

    def replayable(self, request: R) -> bool:
        """Whether the request's body can be sent a second time."""
        ...

    def resend(self, request: R, response: S_contra, header: str) -> R:
        """A copy of ``request`` to send again after ``response``: body rewound,
        the cookies ``response`` set, ``Authorization: header``, marked as a retry."""
        ...

    def is_retry(self, request: R) -> bool:
        """Whether ``request`` was made by :meth:`resend`."""
        ...


# -- the flow ----------------------------------------------------------------------------------


class RequestFlow(Generic[R, S]):
    """The token rules of one front door: which host gets the token, and what
    to do on a 401. Immutable and free of I/O; one instance serves all threads.

    Args:
        source: Supplies tokens and hears about refused ones (a
            :class:`~alf_session.TokenManager`).
        hosts: ``token_hosts`` as :func:`normalize_hosts` returns it (``None``:
            every host).
        wire: Reads and writes the HTTP library's requests and responses.
    """

    __slots__ = ("hosts", "source", "wire")

    def __init__(self, source: TokenSource, hosts: frozenset[str] | None, wire: Wire[R, S]) -> None:
        self.source = source
        self.hosts = hosts
        self.wire = wire

    def allowed(self, request: R) -> bool:
        """Whether ``token_hosts`` lets the token go where ``request`` goes."""
        return self.hosts is None or host_allowed(self.wire.origin(request), self.hosts)

    def attach(self, request: R) -> Token | None:
        """Put the token on ``request`` if its origin may get one.

        The driver decides before whether a header already there wins.

        Raises:
            TokenError: no token could be obtained; the request must not be sent.
        """
        if self.hosts is not None and not host_allowed(self.wire.origin(request), self.hosts):
            return None
        token = self.source.get_token()
        self.wire.set_authorization(request, token.header_value)
        return token

    def retry_for(self, request: R, response: S, *, resend: bool = True) -> R | None:
        """What to send after ``response`` to ``request``: a retry, or ``None``.

        See the module docstring for the rule. Tells the manager about a token
        an API refused, whether or not a retry follows. ``resend=False``: the
        driver cannot send a retry (the token is still dropped).

        Raises:
            TokenError: a replacement token could not be obtained.
        """
        wire = self.wire
        if wire.status(response) != 401 or wire.is_retry(request):
            return None
        final = wire.request_of(response)
        if final is None:
            final = request
        header = wire.authorization(final)
        if header is None or (final is not request and wire.authorization(request) != header):
            return None
        token = self.source._token_for_header(header)
        if token is None:
            return None  # not our token: the caller's header, or ~/.netrc's
        if final is not request and wire.is_retry(final):
            # A hop of our own retry was refused too: the manager hears of it
            # (it bounds a 401 loop), nothing is sent again.
            self.source._refused(token, replace=False, again=True)
            return None
        if not resend or not wire.replayable(request):
            # Not sent again, but refused all the same: dropped, so that the
            # next request gets a new token instead of another 401.
            self.source._refused(token, replace=False)
            return None
        new = self.source._refused(token, replace=True)
        if new is None:
            return None
        return wire.resend(request, response, new.header_value)

    def refused_retry(self, retry: R, response: S) -> None:
        """Tell the manager that ``response`` refused our ``retry`` as well.

        Nothing is sent again; the manager uses it to bound a 401 loop.
        """
        if self.wire.status(response) != 401:
            return
        header = self.wire.authorization(retry)
        token = None if header is None else self.source._token_for_header(header)
        if token is not None:
            self.source._refused(token, replace=False, again=True)

    def auth_flow(self, request: R) -> Generator[R, S, None]:
        """The whole flow as a generator, for drivers shaped like httpx's ``Auth``.

        Yields the request to send (with the token when its origin may get
        one), receives the response, and yields at most one retry.
        """
        self.attach(request)
        response = yield request
        retry = self.retry_for(request, response)
        if retry is not None:
            response = yield retry
            self.refused_retry(retry, response)

    # -- the same, for drivers in an event loop (asyncio or trio) --

    async def aattach(self, request: R) -> Token | None:
        """:meth:`attach` without blocking the event loop (``aget_token``)."""
        if self.hosts is not None and not host_allowed(self.wire.origin(request), self.hosts):
            return None
        token = await self.source.aget_token()
        self.wire.set_authorization(request, token.header_value)
        return token

    async def aretry_for(self, request: R, response: S, *, resend: bool = True) -> R | None:
        """:meth:`retry_for` without blocking the event loop.

        A response that is not a 401 is judged in the loop; a 401 (which may
        touch the storage and the token endpoint) in a thread of its own.
        """
        if self.wire.status(response) != 401:
            return None
        from ._async import run_sync  # the 401 path only: keeps asyncio out of the import

        return await run_sync(lambda: self.retry_for(request, response, resend=resend))

    async def arefused_retry(self, retry: R, response: S) -> None:
        """:meth:`refused_retry` without blocking the event loop."""
        if self.wire.status(response) == 401:
            from ._async import run_sync

            await run_sync(lambda: self.refused_retry(retry, response))

    async def aauth_flow(self, request: R) -> AsyncGenerator[R, S]:
        """:meth:`auth_flow` for drivers in an event loop; same steps, same rules."""
        await self.aattach(request)
        response = yield request
        retry = await self.aretry_for(request, response)
        if retry is not None:
            response = yield retry
            await self.arefused_retry(retry, response)


# -- hosts -------------------------------------------------------------------------------------


def _v6_text(address: ipaddress.IPv6Address) -> str:
    """One spelling of an IPv6 address on every Python: RFC 5952's
    compressed form, with an IPv4-mapped address in dotted quad (RFC 5952
    section 5), which Python 3.13 prints and older versions do not."""
    mapped = address.ipv4_mapped
    if mapped is not None:
        return f"::ffff:{mapped}"
    return address.compressed


_IPV4ISH = re.compile(r"[0-9][0-9a-fA-FxX.]*")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")
_BRACKETED = re.compile(r"\[([^\[\]]+)\](?::([0-9]+))?")
# Characters that can never be part of a host name a URL connects to: a
# token_hosts entry holding one is a URL, a pattern or a typo.
_NOT_IN_HOSTS = re.compile(r"[\s/\\?#@%*,;<>\"'`|{}^]|[\x00-\x1f\x7f]")


def canonical_host(host: str) -> str:
    """``host`` as the transport resolves it, in one spelling.

    Lower case; one trailing dot dropped (``example.com.`` is the same name);
    IPv6 and IPv4 addresses in standard form (the resolver reads ``127.1`` and
    ``0x7f.0.0.1`` as ``127.0.0.1``); a Unicode name in IDNA (as requests
    encodes it before connecting). A host that is none of these is returned
    lower-cased, to be compared as it is.
    """
    if host.endswith(".") and len(host) > 1:
        host = host[:-1]
    if ":" in host:
        try:
            return _v6_text(ipaddress.IPv6Address(host))
        except ValueError:
            return host.lower()
    if _IPV4ISH.fullmatch(host):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            return host.lower()
    if not host.isascii():
        try:
            return _idna(host)
        except ValueError:
            return host.lower()
    return host.lower()


def _idna(host: str) -> str:
    # As requests' PreparedRequest._get_idna_encoded_host does it (UTS 46).
    import idna  # a dependency of requests; imported only for Unicode hosts

    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(str(exc)) from None


@lru_cache(maxsize=512)
def url_origin(url: str) -> Origin:
    """``(scheme, host, port)`` that requests connects to for the prepared ``url``.

    requests' ``HTTPAdapter`` picks the connection with ``urllib.parse`` on
    the prepared URL (``requests.adapters._urllib3_request_context``), and
    ``resolve_redirects`` sends each redirect hop to such a URL too; this
    reads it the same way. A URL requests could not connect to gives an
    empty host.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return scheme, "", None
    host = canonical_host(parts.hostname or "")
    return scheme, host, port if port is not None else _DEFAULT_PORTS.get(scheme)


def host_allowed(origin: Origin, hosts: frozenset[str]) -> bool:
    """Whether ``origin`` is in ``hosts`` (as :func:`normalize_hosts` returns them).

    An entry ``host`` allows that host on any port, ``host:port`` on that
    port only (the scheme's default port counts).
    """
    _, host, port = origin
    if not host:
        return False
    if host in hosts:
        return True
    if port is None:
        return False
    if ":" in host:  # IPv6 literal
        return f"[{host}]:{port}" in hosts
    return f"{host}:{port}" in hosts


def normalize_hosts(hosts: Iterable[str] | str | None) -> frozenset[str] | None:
    """``token_hosts`` in canonical form: ``host``, ``host:port``, ``[v6]:port``.

    Accepts Unicode names (stored in IDNA), IPv6 literals with or without
    brackets, any case and a trailing dot.

    Raises:
        ConfigurationError: an entry that no URL's host could ever match (a
            URL, a path, a pattern, a bad port or IDNA name), with the reason.
    """
    if hosts is None:
        return None
    if isinstance(hosts, str):
        hosts = [hosts]
    try:
        entries = list(hosts)
    except TypeError:
        raise ConfigurationError(
            f"token_hosts must be a host name or a list of them, not {type(hosts).__name__}"
        ) from None
    return frozenset(_normalize_host(entry) for entry in entries)


def _normalize_host(entry: object) -> str:
    def refuse(why: str) -> ConfigurationError:
        return ConfigurationError(
            f"token_hosts entry {entry!r} can never match a URL's host: {why}. "
            "Give host names such as 'api.example.com', 'bücher.example', "
            "'localhost:8080', '10.0.0.7' or '[::1]:8443'"
        )

    if not isinstance(entry, str):
        raise refuse(f"it is a {type(entry).__name__}, not a string")
    text = entry.strip()
    if not text:
        raise refuse("it is empty")
    if "://" in text:
        raise refuse("it is a URL; give only its host (and port)")
    bad = _NOT_IN_HOSTS.search(text)
    if bad:
        raise refuse(f"host names cannot contain {bad.group()!r}")
    port: str | None = None
    bracketed = _BRACKETED.fullmatch(text)
    if bracketed:
        host, port = bracketed.group(1), bracketed.group(2)
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise refuse("the part in brackets is not an IPv6 address") from None
        host = _v6_text(address)
    elif text.count(":") > 1:
        try:
            host = _v6_text(ipaddress.IPv6Address(text))
        except ValueError:
            raise refuse("it is not an IPv6 address (put one in brackets to add a port)") from None
    else:
        host, colon, port = text.partition(":")
        if colon and not port:
            raise refuse("the port after ':' is missing")
        host = _canonical_name(host, refuse)
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise refuse(f"{port!r} is not a port number (1-65535)")
        return f"[{host}]:{int(port)}" if ":" in host else f"{host}:{int(port)}"
    return host


def _canonical_name(host: str, refuse: Callable[[str], ConfigurationError]) -> str:
    if not host:
        raise refuse("the host name is empty")
    if host.endswith(".") and len(host) > 1:
        host = host[:-1]
    if _IPV4ISH.fullmatch(host):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            raise refuse("it is not an IPv4 address") from None
    if not host.isascii():
        try:
            host = _idna(host)
        except ValueError as exc:
            raise refuse(f"it is not a valid international (IDNA) name ({exc})") from None
    host = host.lower()
    if len(host) > 253 or not all(
        len(label) < 64 and _LABEL.fullmatch(label) for label in host.split(".")
    ):
        raise refuse("it is not a valid host name")
    return host


# -- requests ----------------------------------------------------------------------------------


def _fast_headers_work() -> bool:
    """Whether requests' ``CaseInsensitiveDict`` keeps its items as this module expects.

    The hot path reads and writes the ``Authorization`` header through the
    dict's private ``_store`` (see :func:`authorization`). Should requests
    change that, the public API is used instead, a little slower.
    """
    try:
        headers: Any = CaseInsensitiveDict({"X-Probe": "1"})  # Any: _store is private
        store = headers._store
        if store.get("x-probe") != ("X-Probe", "1"):
            return False
        store["authorization"] = ("Authorization", "Bearer probe")
        return headers.get("AUTHORIZATION") == "Bearer probe" and list(headers) == [
            "X-Probe",
            "Authorization",
        ]
    except Exception:  # noqa: BLE001 - any surprise means: don't rely on it
        return False


#: Whether the hot path may use ``CaseInsensitiveDict._store``; decided once.
FAST_HEADERS = _fast_headers_work()
# Typed Any so that ``type(x) is _CID`` does not narrow x to a class whose
# ``_store`` is private (undeclared in types-requests).
_CID: Any = CaseInsensitiveDict


def authorization(headers: Any) -> str | None:
    """The ``Authorization`` header in ``headers`` (any case), or ``None``.

    ``requests``' ``CaseInsensitiveDict`` has no ``__contains__`` or ``get`` of
    its own: both go through ``Mapping``, which raises and catches a
    ``KeyError`` when the header is absent (the usual case for us), and that
    costs more than the rest of the hot path (~1 µs). Its ``_store`` maps the
    lower-case name to ``(name, value)``, so look there when it is exactly
    that class and behaves as expected (:data:`FAST_HEADERS`).

    A ``bytes`` value (requests sends those as they are) comes back decoded
    as latin-1, the way requests encodes ``str`` values on the wire.
    """
    if type(headers) is _CID and FAST_HEADERS:
        item = headers._store.get("authorization")
        if item is None:
            return None
        value = item[1]
    else:
        value = headers.get("Authorization")
    if value is None or type(value) is str:
        return value
    return _as_text(value)


def _as_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    return None if value is None else str(value)


def set_authorization(headers: Any, value: str) -> None:
    """Set ``Authorization: value`` in ``headers``."""
    if type(headers) is _CID and FAST_HEADERS:
        # What CaseInsensitiveDict.__setitem__ does, without its Python frame.
        headers._store["authorization"] = ("Authorization", value)
    else:
        headers["Authorization"] = value


def removed_by_caller(headers: object) -> bool:
    """Whether request ``headers`` (as given to requests) set ``Authorization``
    to ``None``: requests' way to say "no such header on this call"."""
    if isinstance(headers, Mapping):
        if None not in headers.values():
            return False
        items: Iterable[Any] = headers.items()
    else:
        items = headers  # type: ignore[assignment]  # requests also takes a list of pairs
    return any(
        value is None and isinstance(name, str) and name.lower() == "authorization"
        for name, value in items
    )


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


def _basic_auth(username: str, password: str) -> str:
    # What requests.auth._basic_auth_str makes of str credentials (private
    # there, so not imported): latin-1, as requests encodes them.
    raw = f"{username}:{password}".encode("latin1")
    return "Basic " + base64.b64encode(raw).decode("ascii")


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
    if credentials is None:
        return False
    try:
        return header == _basic_auth(*credentials)
    except UnicodeEncodeError:
        return False


def drain(response: Response) -> None:
    """Let go of a response we are about to replace.

    A body not read yet (``stream=True``, or under an adapter or an auth
    hook, which see the response before requests reads it) is read only
    when its ``Content-Length`` says it is small, so that the connection goes
    back to the pool. Any other is not read: a hostile API can answer 401
    with an endless body, which plain requests would hand back at once with
    ``stream=True``; closing drops the connection instead.
    """
    # Private in requests (and undeclared in types-requests): read it as Any.
    consumed: Any = getattr(response, "_content_consumed", False)
    if not consumed:
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= _DRAIN_LIMIT:
            try:
                _ = response.content
            except Exception:  # noqa: BLE001, S110 - a broken 401 body must not stop the retry
                pass
    response.close()


def retry_in_hook(
    flow: RequestFlow[PreparedRequest, Response],
    response: Response,
    adapter_for: Callable[[PreparedRequest], BaseAdapter | None],
    kwargs: dict[str, Any],
) -> Response:
    """Drive the 401 step from a requests response hook.

    What requests' own ``HTTPDigestAuth.handle_401`` does: the retry goes
    straight to the transport adapter with the hook's ``kwargs`` (``timeout``,
    ``verify``, …); the 401 goes into its history; ``Session.send`` then
    persists the cookies of both and follows the retry's redirects. Hooks
    after this one see the final response.
    """
    request = response.request
    if request is None:
        return response
    adapter = adapter_for(request)
    retry = flow.retry_for(request, response, resend=adapter is not None)
    if retry is None or adapter is None:
        return response
    drain(response)
    final = adapter.send(retry, **kwargs)
    final.history.append(response)
    final.request = retry
    flow.refused_retry(retry, final)
    return final


class RequestsWire:
    """:class:`Wire` for requests' ``PreparedRequest`` and ``Response``."""

    __slots__ = ()

    def origin(self, request: PreparedRequest) -> Origin:
        return url_origin(request.url or "")

    def authorization(self, request: PreparedRequest) -> str | None:
        return authorization(request.headers)

    def set_authorization(self, request: PreparedRequest, value: str) -> None:
        set_authorization(request.headers, value)

    def status(self, response: Response) -> int:
        return response.status_code

    def request_of(self, response: Response) -> PreparedRequest | None:
        return response.request

    def replayable(self, request: PreparedRequest) -> bool:
        return replayable(request)

    def resend(self, request: PreparedRequest, response: Response, header: str) -> PreparedRequest:
        retry = request.copy()
        if hasattr(retry.body, "read"):
            rewind_body(retry)
        # As requests' HTTPDigestAuth.handle_401 does: the retry carries the
        # cookies the 401 set.
        jar = getattr(retry, "_cookies", None)
        raw = getattr(response, "raw", None)
        if jar is not None and raw is not None:
            from requests.cookies import extract_cookies_to_jar

            extract: Any = extract_cookies_to_jar  # untyped in types-requests
            extract(jar, request, raw)
            retry.prepare_cookies(jar)
        set_authorization(retry.headers, header)
        setattr(retry, RETRIED_ATTR, True)
        return retry

    def is_retry(self, request: PreparedRequest) -> bool:
        return getattr(request, RETRIED_ATTR, False) is True


#: The one :class:`RequestsWire` every requests driver uses (it has no state).
REQUESTS = RequestsWire()


def requests_flow(source: TokenSource, hosts: frozenset[str] | None) -> RequestFlow[Any, Any]:
    """The flow of a requests front door."""
    return RequestFlow(source, hosts, REQUESTS)
