"""A real OAuth token server and a protected API on loopback, stdlib only.

They back ``alf-session demo``, :mod:`alf_session.testing` and the project's
own tests and benchmarks. Both are real HTTP servers on ``127.0.0.1`` (port
0 picks a free one), each in its own thread, safe to drive from many threads
and processes at once.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlsplit

__all__ = ["APIServer", "TokenRequest", "TokenServer"]


class TokenRequest:
    """One request the token server received (for assertions in tests)."""

    __slots__ = ("form", "grant_type", "headers", "time")

    def __init__(self, form: dict[str, str], headers: dict[str, str], when: float) -> None:
        self.form = form
        self.headers = headers
        self.grant_type = form.get("grant_type", "")
        self.time = when

    def __repr__(self) -> str:
        return f"TokenRequest(grant_type={self.grant_type!r})"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Many threads connect at once in tests; the default backlog of 5 drops
    # SYNs, and a dropped SYN costs the client a 1 s retransmission.
    request_queue_size = 128


class _Base:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self, port: int = 0) -> None:
        """Listen on 127.0.0.1 (``port`` 0: a free one) in a daemon thread."""
        self._httpd = _Server(("127.0.0.1", port), self._handler())
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started; call start() first")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "alf-session-test"
    # Headers and body go out in two writes; with Nagle's algorithm on, the
    # body waits for the client's delayed ACK: 40 ms per keep-alive request.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read counts, not access logs

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # A generator body arrives chunked; read it all, or its bytes
            # would be taken for the next request on this connection.
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers, then the blank line
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, body: bytes | str | dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        if isinstance(body, dict):
            data = json.dumps(body).encode()
            ctype = "application/json"
        else:
            data = body.encode() if isinstance(body, str) else body
            ctype = "text/plain"
        headers = dict(headers or {})
        headers.setdefault("Content-Type", ctype)
        headers.setdefault("Cache-Control", "no-store")
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class TokenServer(_Base):
    """An RFC 6749 token endpoint at ``/token``.

    Supports ``client_credentials``, ``password`` and ``refresh_token`` grants,
    client authentication by HTTP Basic (form-url-encoded as §2.3.1 says) and
    in the body. Issues opaque tokens (or JWT-shaped ones with ``jwt=True``)
    and records every request.

    Knobs, settable at any time: ``expires_in`` (``None`` leaves it out),
    ``delay`` (seconds before answering), ``issue_refresh_tokens``,
    :meth:`fail_next` / ``failure`` to answer with an error instead.

    Args:
        client_id: The accepted client id.
        client_secret: The accepted client secret.
        users: username → password for the password grant.
        expires_in: Lifetime of issued tokens, in seconds.
        clock: The server's clock (UNIX seconds).
    """

    def __init__(
        self,
        client_id: str = "demo-client",
        client_secret: str = "demo-secret",  # noqa: S107 - a test server's credential
        *,
        users: dict[str, str] | None = None,
        expires_in: float | None = 3600,
        clock: Callable[[], float] = time.time,
        jwt: bool = False,
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.users = dict(users or {})
        self.expires_in = expires_in
        self.clock = clock
        self.jwt = jwt
        self.delay = 0.0
        self.issue_refresh_tokens = False
        self.requests: list[TokenRequest] = []
        #: A (status, body) to answer every request with, instead of a token.
        self.failure: tuple[int, bytes | str | dict[str, Any]] | None = None
        self._fail_queue: list[tuple[int, bytes | str | dict[str, Any], dict[str, str]]] = []
        self._tokens: dict[str, tuple[float | None, str]] = {}  # token -> (expires_at, client)
        self._refresh: dict[str, str] = {}  # refresh token -> client/user
        self._revoked: set[str] = set()

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    @property
    def count(self) -> int:
        """How many token requests arrived."""
        with self._lock:
            return len(self.requests)

    def fail_next(
        self,
        status: int,
        body: bytes | str | dict[str, Any] = "",
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` and ``body``."""
        with self._lock:
            self._fail_queue.extend([(status, body, dict(headers or {}))] * times)

    def issue(self, subject: str = "client") -> tuple[str, float | None]:
        """Mint a token as a grant would (without a request); returns it and its expiry."""
        now = self.clock()
        expires_at = None if self.expires_in is None else now + self.expires_in
        if self.jwt:
            header = _b64({"alg": "none", "typ": "JWT"})
            claims: dict[str, Any] = {"sub": subject, "jti": secrets.token_hex(8)}
            if expires_at is not None:
                claims["exp"] = int(expires_at)
            token = f"{header}.{_b64(claims)}.sig"
        else:
            token = "at-" + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = (expires_at, subject)
        return token, expires_at

    def revoke(self, token: str | None = None) -> None:
        """Revoke ``token``, or every token issued so far."""
        with self._lock:
            self._revoked.update([token] if token else list(self._tokens))

    def check(self, token: str) -> str | None:
        """Why ``token`` is not valid now (``None`` if it is)."""
        with self._lock:
            known = self._tokens.get(token)
            revoked = token in self._revoked
        if known is None:
            return "unknown token"
        if revoked:
            return "token revoked"
        if known[0] is not None and known[0] <= self.clock():
            return "token expired"
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(_Handler):
            def do_POST(self) -> None:
                body = self._body()
                form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
                with server._lock:
                    server.requests.append(
                        TokenRequest(form, dict(self.headers.items()), time.time())
                    )
                    queued = server._fail_queue.pop(0) if server._fail_queue else None
                if server.delay:
                    time.sleep(server.delay)
                if urlsplit(self.path).path != "/token":
                    self._send(404, "not found")
                    return
                if queued is not None:
                    self._send(queued[0], queued[1], queued[2])
                    return
                if server.failure is not None:
                    self._send(*server.failure)
                    return
                status, answer = server._grant(form, self.headers.get("Authorization"))
                self._send(status, answer)

        return Handler

    def _grant(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            try:
                pair = base64.b64decode(authorization[6:]).decode()
                user, _, password = pair.partition(":")
                client_id, secret = unquote_plus(user), unquote_plus(password)
            except ValueError:
                return 400, {"error": "invalid_request", "error_description": "bad Basic header"}
        if client_id != self.client_id or secret != self.client_secret:
            return 401, {
                "error": "invalid_client",
                "error_description": "Client authentication failed",
            }
        grant = form.get("grant_type")
        subject = client_id
        if grant == "password":
            user = form.get("username", "")
            if self.users.get(user) != form.get("password") or user not in self.users:
                return 400, {"error": "invalid_grant", "error_description": "Bad user credentials"}
            subject = user
        elif grant == "refresh_token":
            with self._lock:
                owner = self._refresh.pop(form.get("refresh_token", ""), None)
            if owner is None:
                return 400, {"error": "invalid_grant", "error_description": "Unknown refresh token"}
            subject = owner
        elif grant != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if form.get("scope") == "forbidden":
            return 400, {"error": "invalid_scope", "error_description": "scope not allowed"}
        token, _ = self.issue(subject)
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if self.expires_in is not None:
            answer["expires_in"] = self.expires_in
        if form.get("scope"):
            answer["scope"] = form["scope"]
        if self.issue_refresh_tokens or grant in ("password", "refresh_token"):
            refresh = "rt-" + secrets.token_urlsafe(24)
            with self._lock:
                self._refresh[refresh] = subject
            answer["refresh_token"] = refresh
        return 200, answer


class APIServer(_Base):
    """A protected API that accepts only valid tokens of one :class:`TokenServer`.

    Every path answers JSON: ``200 {"ok": true, "path": …, "method": …,
    "body_length": …}`` for a valid bearer token, ``401`` with
    ``WWW-Authenticate`` otherwise. ``/redirect?to=URL`` answers a 302 to
    ``URL`` (with a valid token or without). Records the ``Authorization``
    header of every request in :attr:`seen`.
    """

    def __init__(self, tokens: TokenServer) -> None:
        super().__init__()
        self.tokens = tokens
        self.calls = 0
        self.unauthorized = 0
        self.seen: list[str | None] = []

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(_Handler):
            def _handle(self) -> None:
                body = self._body()
                auth = self.headers.get("Authorization")
                url = urlsplit(self.path)
                with api._lock:
                    api.calls += 1
                    api.seen.append(auth)
                if url.path == "/redirect":
                    target = dict(parse_qsl(url.query)).get("to", "/")
                    self._send(302, "", {"Location": target})
                    return
                reason = "no bearer token"
                if auth and auth.startswith("Bearer "):
                    reason = api.tokens.check(auth[7:]) or ""
                if reason:
                    with api._lock:
                        api.unauthorized += 1
                    self._send(
                        401,
                        {"error": "invalid_token", "error_description": reason},
                        {"WWW-Authenticate": f'Bearer error="invalid_token", error="{reason}"'},
                    )
                    return
                self._send(
                    200,
                    {
                        "ok": True,
                        "path": url.path,
                        "method": self.command,
                        "body_length": len(body),
                    },
                )

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        return Handler


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@contextmanager
def running(**token_options: Any) -> Iterator[tuple[TokenServer, APIServer]]:
    """A started token server and API, stopped on exit."""
    tokens = TokenServer(**token_options)
    api = APIServer(tokens)
    tokens.start()
    api.start()
    try:
        yield tokens, api
    finally:
        api.stop()
        tokens.stop()
