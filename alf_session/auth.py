""":class:`BearerAuth`: the token as a ``requests`` auth, for sessions you don't own."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from requests import PreparedRequest, Response
from requests.auth import AuthBase
from requests.cookies import extract_cookies_to_jar

from . import _flow
from .manager import TokenManager

__all__ = ["BearerAuth"]

log = logging.getLogger(__name__)


class BearerAuth(AuthBase):
    """Puts the manager's token on a request, and retries it once on a 401.

    Use it for ``auth=`` on one call, or as ``session.auth`` of a session
    that an SDK created::

        sdk_session.auth = BearerAuth(manager)

    Like every ``requests`` auth, it sets the header (replacing one already
    there) and is not applied again on redirect hops, so the token never
    follows a redirect to another host.

    On a redirect *within* the host, a session with ``trust_env`` puts
    ``~/.netrc`` credentials for that host over any header, this one too:
    an auth cannot prevent that. :class:`~alf_session.TokenSession` and
    :class:`~alf_session.TokenAdapter` keep the token there.

    Args:
        manager: The :class:`~alf_session.TokenManager` that supplies tokens.
        token_hosts: Host names the token may be sent to; ``None``: every host.

    Thread-safety: one instance may serve many threads; it keeps no
    per-request state on itself.

    .. versionadded:: 0.1
    """

    def __init__(
        self, manager: TokenManager, *, token_hosts: Iterable[str] | str | None = None
    ) -> None:
        self.manager = manager
        self.token_hosts = _flow.normalize_hosts(token_hosts)

    def __repr__(self) -> str:
        return f"BearerAuth({self.manager!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BearerAuth) and other.manager is self.manager

    def __hash__(self) -> int:
        return id(self.manager)

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        if self.token_hosts is None or _flow.host_allowed(request.url, self.token_hosts):
            _flow.attach(request, self.manager.get_token())
            request.register_hook("response", self._on_response)  # type: ignore[no-untyped-call]  # untyped in requests
        return request

    def _on_response(self, response: Response, **kwargs: Any) -> Response:
        request = response.request
        token = _flow.sent_token(response, request, self.manager)
        if token is None:
            return response
        if not _flow.replayable(request):
            self.manager.invalidate(token)  # not retried, but refused all the same
            return response
        retry = _flow.retry_request(request, self.manager._replace_refused(token))
        # As requests' digest auth does: keep cookies the 401 set.
        jar = getattr(retry, "_cookies", None)
        if jar is not None:
            extract_cookies_to_jar(jar, request, response.raw)  # type: ignore[no-untyped-call]  # untyped in requests
            retry.prepare_cookies(jar)
        _flow.drain(response)
        final: Response = response.connection.send(retry, **kwargs)
        final.history.append(response)
        final.request = retry
        return final
