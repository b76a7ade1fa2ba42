"""httpx on the same token engine: ``TokenAuth``, ``TokenClient``, ``AsyncTokenClient``.

Install with ``pip install "alf-session[httpx]"``. ``import alf_session``
does not import httpx; importing this module does.

::

    from alf_session.httpx import AsyncTokenClient

    async with AsyncTokenClient("https://idp.example/oauth/token", "orders", secret,
                                token_hosts=["api.example.com"]) as client:
        response = await client.get("https://api.example.com/orders")

Every request to an allowed host carries the token; a 401 to that token drops
it (only it) and sends the request once more with a new one, if its body can
be sent again. The rules are those of :class:`~alf_session.TokenSession`, from
the one request flow they all drive (``alf_session._flow``): a header the
caller set wins, ``token_hosts`` is judged on the host httpx connects to, and
a redirect hop never gets a token added (httpx drops the header on a change of
origin, and it stays dropped). In async code the token comes from
:meth:`~alf_session.TokenManager.aget_token`, so the event loop never waits for
the token endpoint, the shared storage or another thread's fetch.

.. versionadded:: 0.2
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from . import _flow
from .errors import ConfigurationError
from .manager import ManagerOptions, TokenManager
from .session import manager_from_credentials

if TYPE_CHECKING:
    from urllib3.util.retry import Retry

    from ._base import KeyValueStore
    from .providers import Scope, Timeout
    from .storage import TokenStorage

__all__ = ["AsyncTokenClient", "TokenAuth", "TokenClient"]

_MANAGER_OPTIONS = frozenset(ManagerOptions.__annotations__)


class HttpxWire:
    """How the request flow reads and writes httpx requests and responses."""

    __slots__ = ()

    def origin(self, request: httpx.Request) -> _flow.Origin:
        # What httpx (httpcore) connects to: the scheme, the IDNA-encoded host
        # and the port of httpx's own parse of the URL.
        url = request.url
        scheme = url.scheme
        host = _flow.canonical_host(url.raw_host.decode("ascii", "replace"))
        port = url.port if url.port is not None else _flow._DEFAULT_PORTS.get(scheme)
        return scheme, host, port

    def authorization(self, request: httpx.Request) -> str | None:
        value: str | None = request.headers.get("authorization")
        return value

    def set_authorization(self, request: httpx.Request, value: str) -> None:
        request.headers["Authorization"] = value

    def status(self, response: httpx.Response) -> int:
        return response.status_code

    def request_of(self, response: httpx.Response) -> httpx.Request | None:
        try:
            return response.request  # the last redirect hop
        except RuntimeError:  # a Response built by hand has none
            return None

    def replayable(self, request: httpx.Request) -> bool:
        # httpx reads bytes, str, form and JSON bodies when the request is
        # built; a stream (a generator, an async iterator, a multipart upload
        # of files) is read as it is sent, and may not be there a second time.
        return hasattr(request, "_content")

    def resend(
        self, request: httpx.Request, response: httpx.Response, header: str
    ) -> httpx.Request:
        retry = httpx.Request(
            request.method,
            request.url,
            headers=request.headers.copy(),
            stream=request.stream,  # a ByteStream: the body read above, sent again
            extensions=dict(request.extensions),
        )
        retry.headers["Authorization"] = header
        if response.cookies:
            # As httpx's DigestAuth does: the client's jar has them, but the
            # request was built before they existed.
            httpx.Cookies(response.cookies).set_cookie_header(retry)
        setattr(retry, _flow.RETRIED_ATTR, True)
        return retry

    def is_retry(self, request: httpx.Request) -> bool:
        return getattr(request, _flow.RETRIED_ATTR, False) is True


_WIRE = HttpxWire()


class TokenAuth(httpx.Auth):
    """An :class:`httpx.Auth` that puts a :class:`~alf_session.TokenManager`'s
    token on requests and sends a request once more after a 401 to it.

    Works with :class:`httpx.Client` (``get_token``) and
    :class:`httpx.AsyncClient` (``aget_token``: the event loop never blocks).
    ``auth=TokenAuth(manager)`` on a client, or on one request.

    Args:
        manager: Supplies the tokens; one manager can serve any number of
            clients, sessions and threads, sync and async at once.
        token_hosts: Host names (``"api.example.com"``, or
            ``"localhost:8080"`` with a port) the token may be sent to.
            ``None``: every host.

    Redirects are httpx's to follow: it drops the header on a change of
    origin, but keeps it from ``http://host`` to ``https://host`` (port 80 to
    443) without asking the auth. :class:`TokenClient` and
    :class:`AsyncTokenClient` add a request hook that holds ``token_hosts``
    on that hop too; with ``TokenAuth`` on a client of your own, name the host
    without a port (or both ports) if it redirects so.

    Thread-safety: holds no state of its own per request; safe to share.

    .. versionadded:: 0.2
    """

    def __init__(
        self, manager: TokenManager, *, token_hosts: Iterable[str] | str | None = None
    ) -> None:
        if not isinstance(manager, TokenManager):
            raise ConfigurationError(
                f"TokenAuth needs a TokenManager, not {type(manager).__name__}"
            )
        self._flow: _flow.RequestFlow[httpx.Request, httpx.Response] = _flow.RequestFlow(
            manager, _flow.normalize_hosts(token_hosts), _WIRE
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
        return f"TokenAuth({self._flow.source!r})"

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """The flow for :class:`httpx.Client`.

        Raises:
            TokenError: no token could be obtained; nothing is sent.
        """
        flow = self._flow
        if "authorization" not in request.headers:  # a header the caller set wins
            flow.attach(request)
        response = yield request
        if response.status_code != 401:
            return
        retry = flow.retry_for(request, response)
        if retry is not None:
            response = yield retry
            flow.refused_retry(retry, response)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """The flow for :class:`httpx.AsyncClient`: the same steps, with the
        manager's waits off the event loop.

        Raises:
            TokenError: no token could be obtained; nothing is sent.
        """
        flow = self._flow
        if "authorization" not in request.headers:  # a header the caller set wins
            await flow.aattach(request)
        response = yield request
        if response.status_code != 401:
            return
        retry = await flow.aretry_for(request, response)
        if retry is not None:
            response = yield retry
            await flow.arefused_retry(retry, response)


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``kwargs`` as (manager options, httpx options)."""
    manager_options = {k: v for k, v in kwargs.items() if k in _MANAGER_OPTIONS}
    return manager_options, {k: v for k, v in kwargs.items() if k not in _MANAGER_OPTIONS}


def _hop_guard(auth: TokenAuth) -> Callable[[httpx.Request], None]:
    """A request hook that takes our token off a redirect hop ``token_hosts`` forbids.

    httpx keeps the ``Authorization`` header on a redirect from ``http`` to
    ``https`` on the same host (its ``_is_https_redirect``), port 80 to 443,
    without asking the auth: a ``token_hosts`` entry with a port would not
    hold there. httpx runs request hooks for every hop, after the auth flow.
    """
    flow = auth._flow
    source = flow.source

    def guard(request: httpx.Request) -> None:
        header = request.headers.get("authorization")
        if header is not None and not flow.allowed(request):
            if source._token_for_header(header) is not None:
                del request.headers["authorization"]

    return guard


def _with_hop_guard(auth: TokenAuth, kwargs: dict[str, Any], *, is_async: bool) -> None:
    if auth.token_hosts is None:
        return  # every host may have it: nothing to guard, nothing to pay
    guard = _hop_guard(auth)
    hook: Callable[[httpx.Request], Any] = guard
    if is_async:

        async def hook(request: httpx.Request) -> None:
            guard(request)

    hooks = dict(kwargs.get("event_hooks") or {})
    hooks["request"] = [hook, *hooks.get("request", [])]
    kwargs["event_hooks"] = hooks


def _token_auth(owner: str, kwargs: dict[str, Any], **credentials: Any) -> TokenAuth:
    """The :class:`TokenAuth` of a client built from :class:`~alf_session.TokenSession`'s
    credential keywords; takes the manager options out of ``kwargs``."""
    if "auth" in kwargs:
        raise ConfigurationError(
            f"{owner} puts its token on requests itself; pass auth= on a request to "
            "override it there, or use an httpx client with auth=TokenAuth(manager)"
        )
    manager_options, _ = _split(kwargs)
    for name in manager_options:
        del kwargs[name]
    token_hosts = credentials.pop("token_hosts")
    manager = manager_from_credentials(owner, manager_options=manager_options, **credentials)
    return TokenAuth(manager, token_hosts=token_hosts)


class TokenClient(httpx.Client):
    """An :class:`httpx.Client` that carries its own token, like
    :class:`~alf_session.TokenSession`.

    Takes :class:`~alf_session.TokenSession`'s credential keywords (or a
    ``token_manager``), :class:`~alf_session.TokenManager`'s options
    (``leeway``, ``refresh_ahead``, …) and every :class:`httpx.Client`
    keyword (``base_url``, ``timeout``, ``transport``, …) except ``auth``.

    Args:
        token_endpoint: The token URL (``https://``, or ``http://`` on loopback).
        client_id: The client's id.
        client_secret: The client's secret (never logged, shown or stored).
        scope: ``"read write"`` or ``["read", "write"]``.
        audience: The ``audience`` parameter.
        token_storage: The shared tier (see :class:`~alf_session.TokenSession`).
        token_retry: A urllib3 ``Retry`` or an int for the token request.
        token_timeout: Seconds (or ``(connect, read)``) for the token request.
        auth_method: ``"client_secret_basic"`` or ``"client_secret_post"``.
        token_manager: A :class:`~alf_session.TokenManager` instead of the
            credentials above.
        token_hosts: Host names the token may be sent to; ``None``: every host.
        extra_params: More form parameters for the token request.
        allow_insecure_http: Allow a plain-http token endpoint that is not loopback.
        **kwargs: :class:`~alf_session.TokenManager` options and
            :class:`httpx.Client` keywords.

    Raises:
        ConfigurationError: the arguments don't describe one credential.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        token_endpoint: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        scope: Scope = None,
        audience: str | None = None,
        token_storage: TokenStorage | KeyValueStore | str | None = None,
        token_retry: Retry | int | None = None,
        token_timeout: Timeout = 10,
        auth_method: str = "client_secret_basic",
        token_manager: TokenManager | None = None,
        token_hosts: Iterable[str] | str | None = None,
        extra_params: Mapping[str, str] | None = None,
        allow_insecure_http: bool = False,
        **kwargs: Any,
    ) -> None:
        auth = _token_auth(
            type(self).__name__,
            kwargs,
            token_endpoint=token_endpoint,
            client_id=client_id,
            client_secret=client_secret,
            scope=scope,
            audience=audience,
            token_storage=token_storage,
            token_retry=token_retry,
            token_timeout=token_timeout,
            auth_method=auth_method,
            token_manager=token_manager,
            token_hosts=token_hosts,
            extra_params=extra_params,
            allow_insecure_http=allow_insecure_http,
        )
        _with_hop_guard(auth, kwargs, is_async=False)
        super().__init__(auth=auth, **kwargs)
        self.token_auth = auth

    @property
    def token_manager(self) -> TokenManager:
        """The :class:`~alf_session.TokenManager` that supplies this client's tokens."""
        return self.token_auth.token_manager

    @property
    def token_hosts(self) -> frozenset[str] | None:
        """The hosts the token may be sent to; ``None``: every host."""
        return self.token_auth.token_hosts

    def __repr__(self) -> str:
        return f"<TokenClient {self.token_manager!r}>"


class AsyncTokenClient(httpx.AsyncClient):
    """An :class:`httpx.AsyncClient` that carries its own token.

    The same keywords as :class:`TokenClient`. Tokens come from
    :meth:`~alf_session.TokenManager.aget_token`: a cached token is a
    lock-free read, and a fetch never blocks the event loop. Runs under
    asyncio and trio.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        token_endpoint: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        scope: Scope = None,
        audience: str | None = None,
        token_storage: TokenStorage | KeyValueStore | str | None = None,
        token_retry: Retry | int | None = None,
        token_timeout: Timeout = 10,
        auth_method: str = "client_secret_basic",
        token_manager: TokenManager | None = None,
        token_hosts: Iterable[str] | str | None = None,
        extra_params: Mapping[str, str] | None = None,
        allow_insecure_http: bool = False,
        **kwargs: Any,
    ) -> None:
        auth = _token_auth(
            type(self).__name__,
            kwargs,
            token_endpoint=token_endpoint,
            client_id=client_id,
            client_secret=client_secret,
            scope=scope,
            audience=audience,
            token_storage=token_storage,
            token_retry=token_retry,
            token_timeout=token_timeout,
            auth_method=auth_method,
            token_manager=token_manager,
            token_hosts=token_hosts,
            extra_params=extra_params,
            allow_insecure_http=allow_insecure_http,
        )
        _with_hop_guard(auth, kwargs, is_async=True)
        super().__init__(auth=auth, **kwargs)
        self.token_auth = auth

    @property
    def token_manager(self) -> TokenManager:
        """The :class:`~alf_session.TokenManager` that supplies this client's tokens."""
        return self.token_auth.token_manager

    @property
    def token_hosts(self) -> frozenset[str] | None:
        """The hosts the token may be sent to; ``None``: every host."""
        return self.token_auth.token_hosts

    def __repr__(self) -> str:
        return f"<AsyncTokenClient {self.token_manager!r}>"
