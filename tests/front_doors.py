"""Every way of putting a manager's token on requests, behind one uniform call.

Tests that must hold for every front door take the ``client`` fixture of
their module, parametrized over :data:`KINDS`, and build a :class:`Client`.
A new front door (httpx, aiohttp) is added here once and every such test
runs against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import requests

from alf_session import BearerAuth, TokenAdapter, TokenManager, TokenSession

#: The front doors: TokenSession, BearerAuth on a plain session, TokenAdapter
#: mounted on a plain session.
KINDS = ["session", "auth", "adapter"]


class Client:
    """One way of putting the manager's token on requests, with a uniform call."""

    def __init__(
        self,
        kind: str,
        manager: TokenManager,
        *,
        token_hosts: Iterable[str] | str | None = None,
    ) -> None:
        self.kind = kind
        self.manager = manager
        if kind == "session":
            self.session: requests.Session = TokenSession(
                token_manager=manager, token_hosts=token_hosts
            )
        elif kind == "auth":
            self.session = requests.Session()
            self.session.auth = BearerAuth(manager, token_hosts=token_hosts)
        elif kind == "adapter":
            self.session = requests.Session()
            self.session.mount("http://", TokenAdapter(manager, token_hosts=token_hosts))
        else:
            raise ValueError(f"no front door {kind!r}")

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return self.session.request(method, url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self.session.close()
