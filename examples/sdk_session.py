"""Give tokens to an SDK you don't own: python-gitlab, unchanged.

    pip install python-gitlab
    python examples/sdk_session.py

Many SDKs build their own ``requests.Session``. Without touching their code,
alf-session can put the token on every request they make, in two ways:

* mount a :class:`~alf_session.TokenAdapter` on the SDK's session, for the
  API's URL only: ``gl.session.mount(url, TokenAdapter(manager))``;
* or set the session's auth: ``gl.session.auth = BearerAuth(manager)``.

(An SDK that accepts a session, as python-gitlab does with
``gitlab.Gitlab(url, session=...)``, can also be handed a TokenSession.)
Either way the SDK never sees a 401 from an expired or revoked token: the
request is retried once with a new token.

Runs offline: the token server of ``alf-session demo`` and a small fake of
the GitLab REST API on 127.0.0.1 that accepts only that server's tokens.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from alf_session import BearerAuth, ClientCredentials, TokenAdapter, TokenManager
from alf_session.testing import TokenServer, local_servers

PROJECT = {
    "id": 42,
    "name": "orders",
    "path_with_namespace": "shop/orders",
    "default_branch": "main",
}
ISSUES = [
    {"id": 1, "iid": 1, "project_id": 42, "title": "Orders API returns 500 on empty cart"},
    {"id": 2, "iid": 2, "project_id": 42, "title": "Add pagination to /orders"},
]


@contextmanager
def fake_gitlab(idp: TokenServer) -> Iterator[str]:
    """A few GitLab v4 endpoints that want a valid bearer token from ``idp``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            auth = self.headers.get("Authorization", "")
            problem = idp.check(auth[7:]) if auth.startswith("Bearer ") else "no token"
            path = self.path.split("?")[0]
            if problem:
                self.answer(401, {"message": f"401 Unauthorized ({problem})"})
            elif path in ("/api/v4/projects/42", "/api/v4/projects/shop%2Forders"):
                self.answer(200, PROJECT)
            elif path == "/api/v4/projects/42/issues":
                self.answer(200, ISSUES)
            else:
                self.answer(404, {"message": "404 Not Found"})

        def answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def main() -> int:
    try:
        import gitlab
    except ImportError:
        print("skipped: this example needs python-gitlab (pip install python-gitlab)")
        return 0

    with (
        local_servers(client_id="ci-bot", client_secret="s3cret") as (idp, _),
        fake_gitlab(idp) as url,
    ):
        # One manager per credential; every session that uses it shares its token.
        manager = TokenManager(ClientCredentials(idp.token_url, "ci-bot", "s3cret", scope="api"))

        # 1. Mount an adapter on the session python-gitlab made, for GitLab's URL only:
        #    requests to any other host through this session get no token.
        gl = gitlab.Gitlab(url)
        gl.session.mount(f"{url}/", TokenAdapter(manager))
        project = gl.projects.get("shop/orders")
        print(f"TokenAdapter: python-gitlab read project {project.path_with_namespace!r}")

        # 2. Or set the auth of the SDK's session.
        other = gitlab.Gitlab(url)
        other.session.auth = BearerAuth(manager)
        issues = other.projects.get(42, lazy=True).issues.list(get_all=False)
        print(f"BearerAuth: python-gitlab listed {len(issues)} issues: {issues[0].title!r}")
        print(f"token requests so far: {idp.count} (both SDK sessions share one token)")

        # 3. The token is revoked: GitLab answers 401, alf-session gets a new
        #    token and retries; python-gitlab never sees the 401.
        idp.revoke()
        project = gl.projects.get(42)
        issues = other.projects.get(42, lazy=True).issues.list(get_all=False)
        print(
            f"after a revocation: project {project.name!r} and {len(issues)} issues read, "
            f"token requests: {idp.count}, 401s retried: {manager.stats.retries_on_401}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
