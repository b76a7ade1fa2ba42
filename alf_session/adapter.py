""":class:`TokenAdapter`: the token as a transport adapter, mounted on any session."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, cast

from requests import PreparedRequest, Response
from requests.adapters import DEFAULT_POOLBLOCK, DEFAULT_POOLSIZE, DEFAULT_RETRIES, HTTPAdapter
from urllib3.util.retry import Retry

from . import _flow
from .errors import ConfigurationError
from .manager import TokenManager

__all__ = ["TokenAdapter"]

log = logging.getLogger(__name__)


class _Authorized:
    """A no-op response hook that marks a request we put a token on.

    requests copies a request's hooks onto each redirect hop, so the mark
    travels with the hops. A marked request without an ``Authorization``
    header is a hop whose header requests dropped on a change of host: the
    adapter must not put the token back (a naive adapter mounted on
    ``"https://"`` does, and leaks the token to wherever the API redirects).
    The mark remembers the origin the token went to: on a hop back to that
    origin where requests swapped the token for ``~/.netrc`` credentials,
    the token is put back.
    """

    __slots__ = ("origin",)

    def __init__(self, origin: tuple[str, str, int | None]) -> None:
        self.origin = origin

    def __call__(self, response: Response, **kwargs: Any) -> None:
        return None


def _mark_of(request: PreparedRequest) -> _Authorized | None:
    for hook in request.hooks.get("response", ()):
        if isinstance(hook, _Authorized):
            return hook
    return None


class TokenAdapter(HTTPAdapter):
    """An :class:`~requests.adapters.HTTPAdapter` that adds the manager's token.

    Mount it on any session, for a prefix or a whole scheme, so that a
    requests-based SDK gets tokens without changing its code::

        sdk_session.mount("https://api.example.com/", TokenAdapter(manager))

    A header the request already has wins. A 401 to our token invalidates it
    and the request is sent once more through this adapter with a new one.

    Args:
        manager: The :class:`~alf_session.TokenManager` that supplies tokens.
        token_hosts: Host names the token may be sent to; ``None``: every
            host that reaches this adapter.
        pool_connections: As :class:`~requests.adapters.HTTPAdapter`.
        pool_maxsize: As :class:`~requests.adapters.HTTPAdapter`.
        max_retries: As :class:`~requests.adapters.HTTPAdapter`.
        pool_block: As :class:`~requests.adapters.HTTPAdapter`.

    Raises:
        ConfigurationError: ``manager`` is not a TokenManager, or a
            ``token_hosts`` entry can never match.

    .. versionadded:: 0.1
    """

    __attrs__ = [  # noqa: RUF012 - HTTPAdapter declares it a plain list
        *HTTPAdapter.__attrs__,
        "manager",
        "token_hosts",
    ]

    def __init__(
        self,
        manager: TokenManager,
        *,
        token_hosts: Iterable[str] | str | None = None,
        pool_connections: int = DEFAULT_POOLSIZE,
        pool_maxsize: int = DEFAULT_POOLSIZE,
        max_retries: Retry | int = DEFAULT_RETRIES,
        pool_block: bool = DEFAULT_POOLBLOCK,
    ) -> None:
        if not isinstance(manager, TokenManager):
            raise ConfigurationError(
                f"TokenAdapter needs a TokenManager, not {type(manager).__name__}"
            )
        self._flow = _flow.requests_flow(manager, _flow.normalize_hosts(token_hosts))
        super().__init__(
            pool_connections=pool_connections,
            pool_maxsize=pool_maxsize,
            max_retries=max_retries,
            pool_block=pool_block,
        )

    @property
    def manager(self) -> TokenManager:
        """The :class:`~alf_session.TokenManager` that supplies tokens."""
        return cast(TokenManager, self._flow.source)

    @property
    def token_hosts(self) -> frozenset[str] | None:
        """The hosts the token may be sent to, in canonical form; ``None``: every host."""
        return self._flow.hosts

    def __setstate__(self, state: dict[str, Any]) -> None:
        manager = state.pop("manager")
        hosts = state.pop("token_hosts", None)
        self._flow = _flow.requests_flow(manager, _flow.normalize_hosts(hosts))
        base: Any = super()  # not declared in types-requests
        base.__setstate__(state)

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> Response:
        """Add the token (see the class docstring), send, and retry once on a 401 to it."""
        flow = self._flow
        header = _flow.authorization(request.headers)
        mark = _mark_of(request)
        if mark is None:
            # A header the caller set wins; one requests made of ~/.netrc does not.
            if (header is None or _flow.from_netrc(request.url, header)) and flow.attach(
                request
            ) is not None:
                mark = _Authorized(_flow.url_origin(request.url or ""))
                hookable: Any = request  # register_hook is untyped in types-requests
                hookable.register_hook("response", mark)
        elif header is not None:
            origin = _flow.url_origin(request.url or "")
            if origin == mark.origin:
                if _flow.from_netrc(request.url, header):
                    # A redirect hop within the origin the token went to, where
                    # requests' rebuild_auth put ~/.netrc credentials over it.
                    flow.attach(request)
            elif not flow.allowed(request) and flow.source._token_for_header(header):
                # A hop to another origin that requests let keep the header
                # (an upgrade to https) but token_hosts does not allow.
                del request.headers["Authorization"]
        response = super().send(request, *args, **kwargs)
        if response.status_code != 401:
            return response
        # Ours if it carries a token of our manager: put on here, or kept by
        # requests on a redirect hop within the origin it was put on for.
        retry = flow.retry_for(request, response)
        if retry is None:
            return response
        _flow.drain(response)
        final = super().send(retry, *args, **kwargs)
        final.history.insert(0, response)
        flow.refused_retry(retry, final)
        return final
