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
        header = _flow.authorization(request.headers)
        mark = _mark_of(request)
        if mark is None:
            # A header the caller set wins; one requests made of ~/.netrc does not.
            if (header is None or _flow.from_netrc(request.url, header)) and (
                self.token_hosts is None or _flow.host_allowed(request.url, self.token_hosts)
            ):
                _flow.attach(request, self.manager.get_token())
                mark = _Authorized(_flow.origin(request.url))
                request.register_hook("response", mark)  # type: ignore[no-untyped-call]  # untyped in requests
        elif (
            header is not None
            and mark.origin == _flow.origin(request.url)
            and _flow.from_netrc(request.url, header)
        ):
            # A redirect hop within the origin the token went to, where
            # requests' rebuild_auth put ~/.netrc credentials over it.
            _flow.attach(request, self.manager.get_token())
        response = super().send(request, *args, **kwargs)
        if response.status_code != 401:
            return response
        # Ours if it carries a token of our manager: put on here, or kept by
        # requests on a redirect hop within the origin it was put on for.
        token = _flow.sent_token(response, request, self.manager)
        if token is None:
            return response
        if not _flow.replayable(request):
            self.manager.invalidate(token)  # not retried, but refused all the same
            return response
        retry = _flow.retry_request(request, self.manager._replace_refused(token))
        _flow.drain(response)
        final = super().send(retry, *args, **kwargs)
        final.history.insert(0, response)
        return final
