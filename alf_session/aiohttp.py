"""aiohttp on the same token engine: :class:`TokenMiddleware`.

Install with ``pip install "alf-session[aiohttp]"`` (aiohttp 3.12 or later,
which has client middlewares). ``import alf_session`` does not import
aiohttp; importing this module does.

::

    from alf_session import ClientCredentials, TokenManager
    from alf_session.aiohttp import TokenMiddleware

    manager = TokenManager(ClientCredentials("https://idp.example/oauth/token", "orders", secret))
    async with aiohttp.ClientSession(middlewares=[TokenMiddleware(manager)]) as session:
        async with session.get("https://api.example.com/orders") as response:
            ...

The rules are those of :class:`~alf_session.TokenSession`, from the one
request flow every front door drives (``alf_session._flow``): the token only
to ``token_hosts``, a header the caller set wins, one retry after a 401 to our
token when the body can be sent again, and no token across a change of origin
on redirects. Tokens come from :meth:`~alf_session.TokenManager.aget_token`:
the event loop never waits for the token endpoint.

.. versionadded:: 0.2
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from typing import Any

from aiohttp import ClientError, ClientHandlerType, ClientRequest, ClientResponse

from . import _flow
from .errors import ConfigurationError, TokenError
from .manager import TokenManager

__all__ = ["TokenMiddleware"]

_REDIRECTS = frozenset((301, 302, 303, 307, 308))


class AiohttpWire:
    """How the request flow reads and writes aiohttp client requests and responses.

    A middleware sees each redirect hop as a request of its own, so the
    request that got a response is always the one it sent: ``request_of``
    has nothing to add.
    """

    __slots__ = ()

    def origin(self, request: ClientRequest) -> _flow.Origin:
        # What aiohttp connects to: yarl's parse of the URL (the connection
        # key is its host, port and scheme), the host IDNA-encoded.
        url = request.url
        return url.scheme, _flow.canonical_host(url.raw_host or ""), url.port

    def authorization(self, request: ClientRequest) -> str | None:
        return request.headers.get("Authorization")

    def set_authorization(self, request: ClientRequest, value: str) -> None:
        request.headers["Authorization"] = value

    def status(self, response: ClientResponse) -> int:
        return response.status

    def request_of(self, response: ClientResponse) -> ClientRequest | None:
        return None

    def replayable(self, request: ClientRequest) -> bool:
        # aiohttp's payloads say themselves whether they were used up: bytes,
        # str, forms, JSON and seekable files can be sent again, a stream not.
        body = request.body
        return body == b"" or not getattr(body, "consumed", True)

    def resend(
        self, request: ClientRequest, response: ClientResponse, header: str
    ) -> ClientRequest:
        # aiohttp sends a ClientRequest again as it is (its DigestAuthMiddleware
        # does): the same object, with the new header and the 401's cookies,
        # which the session's jar only gets once the middleware returns.
        request.headers["Authorization"] = header
        request.update_cookies(response.cookies)
        setattr(request, _flow.RETRIED_ATTR, True)
        return request

    def is_retry(self, request: ClientRequest) -> bool:
        return getattr(request, _flow.RETRIED_ATTR, False) is True


_WIRE = AiohttpWire()


class _Hop:
    """A redirect that a middleware let through: the next request of the same
    ``session.request`` call is its hop."""

    __slots__ = ("call", "carried", "origin")

    def __init__(self, call: object, origin: _flow.Origin, carried: bool) -> None:
        self.call = call
        self.origin = origin
        self.carried = carried


# Stands for "the call" when aiohttp's requests do not tell (see _call_of).
_ANY_CALL = object()


def _call_of(request: ClientRequest) -> object:
    # aiohttp builds one ClientRequest per hop, all with the same list of
    # traces, made once per session.request() call: what tells a hop of this
    # call from the next call. Without it (a future aiohttp), every request
    # that follows a redirect in the same task counts as its hop: a token
    # is then missing where one was due, never sent where it was not.
    traces = getattr(request, "_traces", None)
    return traces if isinstance(traces, list) else _ANY_CALL


class TokenMiddleware:
    """An aiohttp client middleware that puts a :class:`~alf_session.TokenManager`'s
    token on requests and sends a request once more after a 401 to it.

    ``aiohttp.ClientSession(middlewares=[TokenMiddleware(manager)])``, or
    ``middlewares=`` on one request.

    Args:
        manager: Supplies the tokens; one manager can serve aiohttp, httpx
            and requests at once, and its single flight is shared by all.
        token_hosts: Host names (``"api.example.com"``, or
            ``"localhost:8080"`` with a port) the token may be sent to.
            ``None``: every host.

    Redirects: aiohttp runs middlewares again for each hop. The token goes on
    a hop only while the chain stays within the origin it was first sent to,
    as aiohttp keeps an ``Authorization`` header the caller set.

    Thread-safety: holds no state of its own per request; safe to share.

    .. versionadded:: 0.2
    """

    __slots__ = ("_flow", "_last_redirect")

    def __init__(
        self, manager: TokenManager, *, token_hosts: Iterable[str] | str | None = None
    ) -> None:
        if not isinstance(manager, TokenManager):
            raise ConfigurationError(
                f"TokenMiddleware needs a TokenManager, not {type(manager).__name__}"
            )
        self._flow: _flow.RequestFlow[ClientRequest, ClientResponse] = _flow.RequestFlow(
            manager, _flow.normalize_hosts(token_hosts), _WIRE
        )
        # Per task (a context variable) and per middleware (several may be
        # chained, each with its own manager): the redirect this middleware
        # saw answer the task's last request, if it was one.
        self._last_redirect: contextvars.ContextVar[_Hop | None] = contextvars.ContextVar(
            "alf_session_aiohttp_redirect", default=None
        )

    @property
    def token_manager(self) -> TokenManager:
        """The :class:`~alf_session.TokenManager` that supplies the tokens."""
        return self._flow.source  # type: ignore[return-value]  # built with one

    @property
    def token_hosts(self) -> frozenset[str] | None:
        """The hosts the token may be sent to, in canonical form; ``None``: every host."""
        return self._flow.hosts

    def __repr__(self) -> str:
        return f"TokenMiddleware({self._flow.source!r})"

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        """Run one request (or redirect hop) through the flow.

        Raises:
            TokenError: no token could be obtained; nothing is sent. It is
                also an :class:`aiohttp.ClientError`, so that aiohttp lets it
                through as it is, and code that catches aiohttp's errors
                around a request catches it too.
        """
        try:
            return await self._run(request, handler)
        except TokenError as exc:
            raise _as_client_error(exc) from exc.__cause__

    async def _run(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        flow = self._flow
        carried = True
        last_redirect = self._last_redirect
        hop = last_redirect.get()
        if hop is not None:
            last_redirect.set(None)
            if hop.call is _call_of(request):
                # A redirect hop: the token stays on it only within the origin.
                carried = hop.carried and _WIRE.origin(request) == hop.origin
        if carried and "Authorization" not in request.headers:
            await flow.aattach(request)
        response = await handler(request)
        status = response.status
        if status in _REDIRECTS:
            last_redirect.set(_Hop(_call_of(request), _WIRE.origin(request), carried))
            return response
        if status != 401:
            return response
        retry = await flow.aretry_for(request, response)
        if retry is None:
            return response
        await _drain(response)
        response = await handler(retry)
        await flow.arefused_retry(retry, response)
        return response


async def _drain(response: ClientResponse) -> None:
    """Let go of a 401 we replace.

    Its body is read (and the connection goes back to the pool) only when
    its ``Content-Length`` says it is small; any other is closed unread: a
    hostile API can answer 401 with an endless body, which aiohttp alone
    would never read unasked.
    """
    length = response.content_length
    if length is None or length > _flow._DRAIN_LIMIT:
        response.close()
        return
    try:
        await response.read()
    except Exception:  # noqa: BLE001, S110 - a broken 401 body must not stop the retry
        pass
    response.release()


# Each TokenError class, also made an aiohttp ClientError (see _as_client_error).
_CLIENT_ERRORS: dict[type[TokenError], type[TokenError]] = {}


def _as_client_error(exc: TokenError) -> TokenError:
    """``exc`` as an instance of its own class and of :class:`aiohttp.ClientError`.

    A :class:`TokenError` is a ``requests.RequestException``, hence an
    ``OSError``; aiohttp turns an ``OSError`` out of a middleware into a
    ``ClientOSError`` that only chains it, and would lose the typed error
    (``InvalidClient``, …). An ``aiohttp.ClientError`` it passes on as it is.
    """
    if isinstance(exc, ClientError):
        return exc
    cls = type(exc)
    mixed = _CLIENT_ERRORS.get(cls)
    if mixed is None:
        mixed = type(
            cls.__name__,
            (cls, ClientError),
            {
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__doc__": cls.__doc__,
                "__reduce_ex__": _reduce_as_plain,
            },
        )
        _CLIENT_ERRORS[cls] = mixed
    clone = exc._clone()
    clone.__class__ = mixed
    return clone


def _reduce_as_plain(self: TokenError, protocol: Any) -> Any:
    # Pickled (to another process, a task queue) as the plain class, which
    # pickle finds by its name: the mixed one it could not.
    reduced = self.__reduce__()  # (class, args, state), as exceptions reduce
    return (type(self).__mro__[1], *reduced[1:])
