""":class:`TokenAdapter`: the token as a transport adapter, mounted on any session."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

from . import _flow
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
    """

    __slots__ = ()

    def __call__(self, response: Response, **kwargs: Any) -> None:
        return None


_MARK = _Authorized()


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
        **kwargs: Passed to :class:`~requests.adapters.HTTPAdapter`
            (``pool_connections``, ``pool_maxsize``, ``max_retries``, …).

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
        **kwargs: Any,
    ) -> None:
        self.manager = manager
        self.token_hosts = _flow.normalize_hosts(token_hosts)
        super().__init__(**kwargs)

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> Response:
        token = None
        if "Authorization" not in request.headers:
            hooks = request.hooks.get("response", [])
            hop_stripped = any(hook is _MARK for hook in hooks)
            if not hop_stripped and (
                self.token_hosts is None or _flow.host_allowed(request.url, self.token_hosts)
            ):
                token = self.manager.get_token()
                _flow.attach(request, token)
                request.register_hook("response", _MARK)  # type: ignore[no-untyped-call]  # untyped in requests
        response = super().send(request, *args, **kwargs)
        if token is None or _flow.sent_token(response, request) is None:
            return response
        if not _flow.replayable(request):
            return response
        retry = _flow.retry_request(request, self.manager._replace_refused(token))
        _flow.drain(response)
        final = super().send(retry, *args, **kwargs)
        final.history.insert(0, response)
        return final
