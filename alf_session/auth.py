""":class:`BearerAuth`: the token as a ``requests`` auth, for sessions you don't own."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, cast

from requests import PreparedRequest, Response
from requests.auth import AuthBase

from . import _flow
from .errors import ConfigurationError
from .manager import TokenManager

__all__ = ["BearerAuth"]

log = logging.getLogger(__name__)


class BearerAuth(AuthBase):
    """Puts the manager's token on a request, and retries it once on a 401.

    Use it for ``auth=`` on one call, or as ``session.auth`` of a session
    that an SDK created::

        sdk_session.auth = BearerAuth(manager)

    Like every ``requests`` auth, it sets the header (replacing one already
    there, so ``headers={"Authorization": None}`` does not stop it) and is
    not applied again on redirect hops: requests drops the header on a
    change of origin, so the token never follows a redirect to another host.

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
        if not isinstance(manager, TokenManager):
            raise ConfigurationError(
                f"BearerAuth needs a TokenManager, not {type(manager).__name__}"
            )
        self._flow = _flow.requests_flow(manager, _flow.normalize_hosts(token_hosts))

    @property
    def manager(self) -> TokenManager:
        """The :class:`~alf_session.TokenManager` that supplies tokens."""
        return cast(TokenManager, self._flow.source)

    @property
    def token_hosts(self) -> frozenset[str] | None:
        """The hosts the token may be sent to, in canonical form; ``None``: every host."""
        return self._flow.hosts

    def __repr__(self) -> str:
        return f"BearerAuth({self.manager!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BearerAuth) and other.manager is self.manager

    def __hash__(self) -> int:
        return id(self.manager)

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        if self._flow.attach(request) is not None:
            hookable: Any = request  # register_hook is untyped in types-requests
            hookable.register_hook("response", self._on_response)
        return request

    def _on_response(self, response: Response, **kwargs: Any) -> Response:
        # requests' auth hooks run before the caller's (prepare_auth comes
        # before prepare_hooks), so a raising hook sees the final response.
        return _flow.retry_in_hook(
            self._flow, response, lambda request: getattr(response, "connection", None), kwargs
        )
