"""A real OAuth token server and a protected API on loopback, stdlib only.

They back ``alf-session demo``, :mod:`alf_session.testing` and the project's
own tests and benchmarks. Both are real HTTP servers on ``127.0.0.1`` (port
0 picks a free one), each in its own thread, safe to drive from many threads
and processes at once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
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

    __slots__ = ("client_cert", "form", "grant_type", "headers", "time")

    def __init__(
        self,
        form: dict[str, str],
        headers: dict[str, str],
        when: float,
        client_cert: str | None = None,
    ) -> None:
        self.form = form
        self.headers = headers
        self.grant_type = form.get("grant_type", "")
        self.time = when
        #: The ``x5t#S256`` thumbprint of the client certificate presented, if any.
        self.client_cert = client_cert

    def __repr__(self) -> str:
        return f"TokenRequest(grant_type={self.grant_type!r})"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Many threads connect at once in tests; the default backlog of 5 drops
    # SYNs, and a dropped SYN costs the client a 1 s retransmission.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError, TimeoutError)):
            return  # a TLS client refused or gone: expected in tests of mTLS
        super().handle_error(request, client_address)


class _Base:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        #: The TLS context the server listens with (``https://``), or ``None``.
        self.tls: ssl.SSLContext | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self, port: int = 0, *, tls: ssl.SSLContext | None = None) -> None:
        """Listen on 127.0.0.1 (``port`` 0: a free one) in a daemon thread.

        With ``tls`` (a server-side :class:`ssl.SSLContext`), the server speaks
        https; a context with ``verify_mode`` ``CERT_REQUIRED`` refuses clients
        without a certificate it trusts, ``CERT_OPTIONAL`` records the one given.
        """
        self.tls = tls or self.tls
        self._httpd = _Server(("127.0.0.1", port), self._handler())
        if self.tls is not None:
            # The handshake happens in the handler's thread (see _Handler.setup),
            # so a client that connects and stalls holds up nobody else.
            self._httpd.socket = self.tls.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
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
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

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

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()  # failures go to _Server.handle_error
            self.request.settimeout(None)
        super().setup()

    def handle(self) -> None:
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError):
            pass  # a TLS client that gave up, or was refused: nothing to answer

    def peer_thumbprint(self) -> str | None:
        """``x5t#S256`` of the client certificate on this connection, if any."""
        if not isinstance(self.request, ssl.SSLSocket):
            return None
        der = self.request.getpeercert(binary_form=True)
        return thumbprint(der) if der else None

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


JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN
_ASYMMETRIC_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
_ASYMMETRIC_ALGS += ["ES256", "ES384", "ES512", "EdDSA"]
_HMAC_ALGS = ["HS256", "HS384", "HS512"]
#: Client authentication methods the server knows (RFC 8414 names).
SERVER_AUTH_METHODS = (
    "client_secret_basic",
    "client_secret_post",
    "client_secret_jwt",
    "private_key_jwt",
    "tls_client_auth",
    "self_signed_tls_client_auth",
    "none",
)


def thumbprint(der: bytes) -> str:
    """RFC 8705 §3.1 ``x5t#S256`` of a DER certificate."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


class TokenServer(_Base):
    """An RFC 6749 token endpoint at ``/token``, with its metadata document.

    Grants: ``client_credentials``, ``password``, ``refresh_token``, the JWT
    bearer grant (RFC 7523 §2.1, for issuers in ``trusted_issuers``) and
    token exchange (RFC 8693, subject tokens judged by ``subject_validator``).

    Client authentication, each method checked for real: HTTP Basic
    (form-url-encoded as RFC 6749 §2.3.1 says), in the body, ``client_secret_jwt``
    (HMAC with the secret), ``private_key_jwt`` (signature against the
    client's key in ``client_keys``), ``tls_client_auth`` /
    ``self_signed_tls_client_auth`` (the certificate's thumbprint in
    ``client_certs``; start the server with ``tls=``) and ``none`` (ids in
    ``public_clients``). An assertion must have ``iss`` = ``sub`` = the client,
    ``aud`` = the token URL or the issuer, an ``exp`` in the future and at most
    ``max_assertion_lifetime`` (300 s) after ``iat``, and a ``jti`` never seen before; the first
    reason one is refused is kept in :attr:`refusals`. PyJWT is imported only
    when an assertion arrives.

    ``GET /.well-known/openid-configuration`` and
    ``/.well-known/oauth-authorization-server[/path]`` answer the metadata
    (RFC 8414) of :attr:`issuer`; :attr:`metadata` overrides its fields,
    ``metadata_at`` chooses which of the two places answer.

    Tokens issued over a connection with a client certificate are bound to it
    (RFC 8705 §3): :meth:`check` refuses them with another certificate.

    Knobs, settable at any time: ``expires_in`` (``None`` leaves it out),
    ``delay`` (seconds before answering), ``issue_refresh_tokens``,
    :meth:`fail_next` / ``failure`` to answer with an error instead.

    Args:
        client_id: The accepted client id.
        client_secret: The accepted client secret.
        users: username → password for the password grant.
        expires_in: Lifetime of issued tokens, in seconds.
        clock: The server's clock (UNIX seconds); assertions are judged on it.
        client_keys: client id → public key (a ``cryptography`` key or PEM)
            for ``private_key_jwt``.
        client_certs: client id → ``x5t#S256`` thumbprint for the mTLS methods.
        public_clients: client ids that may authenticate with ``none``.
        auth_methods: The methods accepted and announced; default all.
        trusted_issuers: issuer → public key, for the JWT bearer grant.
        subject_validator: ``(subject_token, subject_token_type) -> subject or
            None`` for token exchange; default: tokens this server issued.
        issuer_path: Path of the issuer identifier after the base URL.
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
        client_keys: dict[str, Any] | None = None,
        client_certs: dict[str, str] | None = None,
        public_clients: set[str] | None = None,
        auth_methods: tuple[str, ...] | None = None,
        trusted_issuers: dict[str, Any] | None = None,
        subject_validator: Callable[[str, str], str | None] | None = None,
        issuer_path: str = "",
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.users = dict(users or {})
        self.expires_in = expires_in
        self.clock = clock
        self.jwt = jwt
        self.client_keys = dict(client_keys or {})
        self.client_certs = dict(client_certs or {})
        self.public_clients = set(public_clients or ())
        self.auth_methods = tuple(auth_methods or SERVER_AUTH_METHODS)
        self.trusted_issuers = dict(trusted_issuers or {})
        self.subject_validator = subject_validator
        self.issuer_path = issuer_path
        #: Fields that override the metadata document (``None`` removes one).
        self.metadata: dict[str, Any] = {}
        #: Which well-known places answer: "oidc", "oauth" (RFC 8414).
        self.metadata_at: tuple[str, ...] = ("oidc", "oauth")
        self.metadata_requests = 0
        #: Longest an assertion may live (``exp`` - ``iat``), in seconds.
        self.max_assertion_lifetime = 300.0
        self.delay = 0.0
        self.issue_refresh_tokens = False
        self.requests: list[TokenRequest] = []
        #: Claims of every assertion accepted (client assertions and grants).
        self.assertions: list[dict[str, Any]] = []
        #: Why each refused assertion or credential was refused.
        self.refusals: list[str] = []
        #: A (status, body) to answer every request with, instead of a token.
        self.failure: tuple[int, bytes | str | dict[str, Any]] | None = None
        self._fail_queue: list[tuple[int, bytes | str | dict[str, Any], dict[str, str]]] = []
        self._tokens: dict[str, tuple[float | None, str]] = {}  # token -> (expires_at, client)
        self._bound: dict[str, str] = {}  # token -> thumbprint of the certificate it is bound to
        self._refresh: dict[str, str] = {}  # refresh token -> client/user
        self._revoked: set[str] = set()
        self._jti: set[str] = set()
        self._local = threading.local()

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    @property
    def issuer(self) -> str:
        """The issuer identifier: the base URL and ``issuer_path``."""
        return self.base_url + self.issuer_path

    @property
    def count(self) -> int:
        """How many token requests arrived."""
        with self._lock:
            return len(self.requests)

    def metadata_document(self) -> dict[str, Any]:
        """The RFC 8414 metadata this server announces."""
        grants = ["client_credentials", "password", "refresh_token", JWT_BEARER, TOKEN_EXCHANGE]
        doc: dict[str, Any] = {
            "issuer": self.issuer,
            "token_endpoint": self.token_url,
            "token_endpoint_auth_methods_supported": list(self.auth_methods),
            "token_endpoint_auth_signing_alg_values_supported": _ASYMMETRIC_ALGS + _HMAC_ALGS,
            "grant_types_supported": grants,
        }
        if self.tls is not None:
            doc["tls_client_certificate_bound_access_tokens"] = True
        doc.update(self.metadata)
        return {k: v for k, v in doc.items() if v is not None}

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

    def issue(
        self, subject: str = "client", *, bound_to: str | None = None
    ) -> tuple[str, float | None]:
        """Mint a token as a grant would (without a request); returns it and its expiry."""
        now = self.clock()
        expires_at = None if self.expires_in is None else now + self.expires_in
        if self.jwt:
            header = _b64({"alg": "none", "typ": "JWT"})
            claims: dict[str, Any] = {"sub": subject, "jti": secrets.token_hex(8)}
            if expires_at is not None:
                claims["exp"] = int(expires_at)
            if bound_to:
                claims["cnf"] = {"x5t#S256": bound_to}
            token = f"{header}.{_b64(claims)}.sig"
        else:
            token = "at-" + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = (expires_at, subject)
            if bound_to:
                self._bound[token] = bound_to
        return token, expires_at

    def revoke(self, token: str | None = None) -> None:
        """Revoke ``token``, or every token issued so far."""
        with self._lock:
            self._revoked.update([token] if token else list(self._tokens))

    def check(self, token: str, cert: str | None = None) -> str | None:
        """Why ``token`` is not valid now (``None`` if it is).

        ``cert`` is the thumbprint of the certificate the token is presented
        with; a token bound to a certificate (RFC 8705 §3) needs the same one.
        """
        with self._lock:
            known = self._tokens.get(token)
            revoked = token in self._revoked
            bound = self._bound.get(token)
        if known is None:
            return "unknown token"
        if revoked:
            return "token revoked"
        if known[0] is not None and known[0] <= self.clock():
            return "token expired"
        if bound is not None and bound != cert:
            return "token bound to another certificate" if cert else "token needs its certificate"
        return None

    def subject_of(self, token: str) -> str | None:
        """The subject of a valid token this server issued."""
        if self.check(token) is not None:
            return None
        with self._lock:
            return self._tokens[token][1]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(_Handler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                places = {
                    "oidc": server.issuer_path.rstrip("/") + "/.well-known/openid-configuration",
                    "oauth": "/.well-known/oauth-authorization-server"
                    + server.issuer_path.rstrip("/"),
                }
                with server._lock:
                    server.metadata_requests += 1
                if path in [places[p] for p in server.metadata_at if p in places]:
                    self._send(200, server.metadata_document())
                else:
                    self._send(404, "not found")

            def do_POST(self) -> None:
                body = self._body()
                form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
                peer = self.peer_thumbprint()
                with server._lock:
                    server.requests.append(
                        TokenRequest(form, dict(self.headers.items()), time.time(), peer)
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
                server._local.peer = peer
                try:
                    status, answer = server._grant(form, self.headers.get("Authorization"))
                finally:
                    server._local.peer = None
                self._send(status, answer)

        return Handler

    # -- client authentication -------------------------------------------------

    def _refuse(self, reason: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.refusals.append(reason)
        return 401, {"error": "invalid_client", "error_description": "Client authentication failed"}

    def _authenticate(
        self, form: dict[str, str], authorization: str | None, *, optional: bool = False
    ) -> tuple[str | None, tuple[int, dict[str, Any]] | None]:
        """(client id, None) when the client is authenticated, else (None, error answer).

        With ``optional``, a request without any client authentication passes
        as (None, None): RFC 7523 §3.1 makes it optional for the JWT bearer grant.
        """
        peer: str | None = getattr(self._local, "peer", None)
        if authorization and authorization.startswith("Basic "):
            try:
                pair = base64.b64decode(authorization[6:], validate=True).decode()
                user, _, password = pair.partition(":")
                client_id, secret = unquote_plus(user), unquote_plus(password)
            except ValueError:
                return None, (400, {"error": "invalid_request", "error_description": "bad Basic"})
            method = "client_secret_basic"
        elif "client_assertion" in form:
            return self._authenticate_assertion(form)
        elif "client_secret" in form:
            client_id, secret = form.get("client_id", ""), form["client_secret"]
            method = "client_secret_post"
        elif "client_id" in form:
            client_id = form["client_id"]
            if peer is not None and self.client_certs.get(client_id) == peer:
                tls = {"tls_client_auth", "self_signed_tls_client_auth"}
                if not tls & set(self.auth_methods):
                    return None, self._refuse("mTLS client authentication not enabled")
                return client_id, None
            if client_id in self.client_certs:
                why = "another certificate" if peer else "no client certificate"
                return None, self._refuse(f"tls_client_auth with {why}")
            if client_id in self.public_clients and "none" in self.auth_methods:
                return client_id, None
            return None, self._refuse(f"client {client_id!r} sent no credential")
        else:
            if optional:
                return None, None
            return None, self._refuse("no client authentication")
        if method not in self.auth_methods:
            return None, self._refuse(f"{method} not enabled")
        if client_id != self.client_id or secret != self.client_secret:
            return None, self._refuse("wrong client id or secret")
        return client_id, None

    def _authenticate_assertion(
        self, form: dict[str, str]
    ) -> tuple[str | None, tuple[int, dict[str, Any]] | None]:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return None, self._refuse("client_assertion_type is not jwt-bearer")
        assertion = form["client_assertion"]
        try:
            unverified = _unverified_claims(assertion)
        except ValueError:
            return None, self._refuse("client_assertion is not a JWT")
        client_id = unverified.get("sub")
        if not isinstance(client_id, str):
            return None, self._refuse("client_assertion has no sub")
        if form.get("client_id", client_id) != client_id:
            return None, self._refuse("client_id differs from the assertion's sub")
        if client_id in self.client_keys:
            method, key, algs = "private_key_jwt", self.client_keys[client_id], _ASYMMETRIC_ALGS
        elif client_id == self.client_id:
            method, key, algs = "client_secret_jwt", self.client_secret.encode(), _HMAC_ALGS
        else:
            return None, self._refuse(f"no key for client {client_id!r}")
        if method not in self.auth_methods:
            return None, self._refuse(f"{method} not enabled")
        reason = self._verify(assertion, key, algs, issuer=client_id, subject=client_id)
        if reason:
            return None, self._refuse(reason)
        return client_id, None

    def _verify(
        self, token: str, key: Any, algs: list[str], *, issuer: str, subject: str | None
    ) -> str:
        """Why the JWT ``token`` is refused ("" if it is good); records its claims."""
        import jwt as pyjwt  # lazily: only tests of assertions need PyJWT

        try:
            claims = pyjwt.decode(
                token,
                key,
                algorithms=algs,
                audience=[self.token_url, self.issuer],
                issuer=issuer,
                # Times are judged below on the server's clock, which tests move.
                options={
                    "require": ["iss", "sub", "aud", "exp", "iat", "jti"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except (pyjwt.InvalidTokenError, TypeError, ValueError) as exc:
            # TypeError: PyJWT's answer to a key of another type than the alg's.
            return f"assertion refused: {type(exc).__name__}"
        now = self.clock()
        if subject is not None and claims["sub"] != subject:
            return "assertion sub is not the client"
        if not isinstance(claims["exp"], (int, float)) or claims["exp"] <= now - 5:
            return "assertion expired"
        if claims["exp"] - claims["iat"] > self.max_assertion_lifetime:
            return f"assertion lives over {self.max_assertion_lifetime:g}s"
        if claims["iat"] > now + 60:
            return "assertion issued in the future"
        with self._lock:
            if claims["jti"] in self._jti:
                return "assertion jti replayed"
            self._jti.add(claims["jti"])
            self.assertions.append(claims)
        return ""

    # -- grants ------------------------------------------------------------------

    def _grant(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type")
        client_id, refused = self._authenticate(form, authorization, optional=grant == JWT_BEARER)
        if refused is not None:
            return refused
        subject = client_id or ""
        answer_extra: dict[str, Any] = {}
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
        elif grant == JWT_BEARER:
            assertion = form.get("assertion", "")
            try:
                iss = _unverified_claims(assertion).get("iss")
            except ValueError:
                iss = None
            key = self.trusted_issuers.get(iss) if isinstance(iss, str) else None
            if key is None or not isinstance(iss, str):
                return 400, {"error": "invalid_grant", "error_description": "untrusted assertion"}
            reason = self._verify(assertion, key, _ASYMMETRIC_ALGS, issuer=iss, subject=None)
            if reason:
                with self._lock:
                    self.refusals.append(reason)
                return 400, {"error": "invalid_grant", "error_description": "assertion refused"}
            subject = str(_unverified_claims(assertion)["sub"])
        elif grant == TOKEN_EXCHANGE:
            token, kind = form.get("subject_token"), form.get("subject_token_type")
            if not token or not kind:
                return 400, {
                    "error": "invalid_request",
                    "error_description": "subject_token and subject_token_type are required",
                }
            validate = self.subject_validator or (lambda t, _k: self.subject_of(t))
            found = validate(token, kind)
            if found is None:
                with self._lock:
                    self.refusals.append("subject token refused")
                return 400, {"error": "invalid_grant", "error_description": "bad subject token"}
            subject = found
            answer_extra["issued_token_type"] = form.get("requested_token_type", ACCESS_TOKEN_TYPE)
        elif grant != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if form.get("scope") == "forbidden":
            return 400, {"error": "invalid_scope", "error_description": "scope not allowed"}
        token, _ = self.issue(subject, bound_to=getattr(self._local, "peer", None))
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer", **answer_extra}
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


def _unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a compact JWT, not verified (to find whose key checks it)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError) as exc:
        raise ValueError("not a JWT") from exc
    if not isinstance(claims, dict):
        raise ValueError("not a JWT")
    return claims


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
                    reason = api.tokens.check(auth[7:], self.peer_thumbprint()) or ""
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
