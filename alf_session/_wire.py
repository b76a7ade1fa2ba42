"""The RFC 6749 wire: the token request and its answer (§4, §5, §6).

What every grant shares once it has built its form: where a token request
may go (the transport rule), how long it may take (``token_timeout`` bounds
the whole exchange, retries included), how it is retried, how the answer is
read (1 MiB at most) and judged (a token, an OAuth error, or something
else), and how credentials are kept out of every message and of the request
objects an error carries. :class:`WireMixin` gives it to
:class:`~alf_session.OAuth2Provider`; the grants (:mod:`alf_session.grants`)
and the client authentication methods (:mod:`alf_session.client_auth`) only
build forms.

A token request whose form must differ on every attempt (a signed client
assertion with its ``jti``, a subject token read from a rotating file) is
rebuilt for each one: urllib3's ``Retry`` would resend the same body, so
such a request is retried here, one attempt at a time, under the same
``Retry`` policy and within the same whole-request time bound.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, quote_plus, urlencode

import requests
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError
from urllib3.exceptions import TimeoutError as _Urllib3Timeout
from urllib3.util.retry import Retry

from ._transport import (
    Timeout,
    _budget,
    _Call,
    _Cancelled,
    _RefusedPeer,
    _WireAdapter,
    check_endpoint,
    default_retry,
)
from .errors import (
    OAUTH_ERRORS,
    ConfigurationError,
    InsecureTransportError,
    InvalidTokenResponse,
    OAuthError,
    TokenError,
    TokenHTTPError,
    TokenRequestError,
    TokenRequestTimeout,
)
from .token import Token

if TYPE_CHECKING:
    from requests import PreparedRequest

__all__ = ["WireMixin", "check_endpoint", "default_retry", "normalize_scope"]

log = logging.getLogger(__name__)

#: What ``scope`` accepts: a space-separated string or a sequence of strings.
Scope = str | Iterable[str] | None

# A token response larger than this is not a token response (a misrouted
# download, an HTML error page of a proxy); reading stops here.
_MAX_BODY = 1024 * 1024
# How much of an error body a message may quote.
_QUOTE = 200
# Form fields of a token request whose values are credentials: replaced by
# "***" in the request objects an error carries.
# Fields of a token response whose values are tokens (RFC 6749 §5.1, OpenID
# Connect, RFC 8693): masked in the body of a response an error carries.
_TOKEN_FIELDS = frozenset({"access_token", "refresh_token", "id_token"})

_SECRET_FIELDS = frozenset(
    {
        "client_secret",
        "password",
        "refresh_token",
        "client_assertion",
        "assertion",
        "subject_token",
        "actor_token",
    }
)


def _no_auth(request: PreparedRequest) -> PreparedRequest:
    # An explicit auth stops requests from looking up ~/.netrc and putting its
    # credentials on the token request in place of ours.
    return request


def normalize_scope(scope: Scope) -> str | None:
    """``scope`` as the space-separated string RFC 6749 §3.3 sends."""
    if scope is None:
        return None
    if isinstance(scope, str):
        items = scope.split()
    else:
        try:
            items = list(scope)
        except TypeError:
            raise ConfigurationError(
                f"scope must be a string or a sequence of strings, not {type(scope).__name__}"
            ) from None
        if not all(isinstance(s, str) for s in items):
            raise ConfigurationError("scope must be a string or a sequence of strings")
        items = [part for s in items for part in s.split()]
    return " ".join(items) or None


def _require_str(name: str, value: object, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty_ok):
        got = "an empty string" if value == "" else type(value).__name__
        raise ConfigurationError(f"{name} must be a non-empty string, not {got}")
    return value


def _form_encode(value: str) -> str:
    # RFC 6749 §2.3.1: client_id and client_secret are form-url-encoded before
    # they are joined with ':' and Base64-encoded for HTTP Basic.
    return quote_plus(value, safe="")


class WireMixin:
    """The token request of an :class:`~alf_session.OAuth2Provider` (internal).

    Reads from the provider: ``token_endpoint``, ``client_id``,
    ``_client_secret``, ``timeout``, ``retry``, ``verify``, ``cert``,
    ``proxies``, ``allow_insecure_http``, ``clock``, ``default_lifetime`` and
    ``_secrets()``.
    """

    token_endpoint: str | None
    client_id: str | None
    _client_secret: str | None
    timeout: Timeout
    retry: Retry
    verify: bool | str
    cert: str | tuple[str, str] | None
    proxies: dict[str, str] | None
    allow_insecure_http: bool
    clock: Callable[[], float]
    default_lifetime: float | None
    _session: requests.Session

    def _secrets(self, extra: Iterable[str | None] = ()) -> list[str]:
        raise NotImplementedError

    def _redact(self, text: str, extra: Iterable[str | None] = ()) -> str:
        """``text`` with every spelling of a secret replaced by ``***``."""
        spellings: set[str] = set()
        for secret in self._secrets(extra):
            spellings.update(_spellings(secret))
        if self._client_secret and self.client_id is not None:
            spellings.update(_basic_credentials(self.client_id, self._client_secret))
        # Longest first: a spelling that contains another is replaced whole.
        for form in sorted(spellings, key=len, reverse=True):
            if len(form) >= 3:
                text = text.replace(form, "***")
        return text

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        adapter = _WireAdapter(
            max_retries=self.retry, plain_http_loopback_only=not self.allow_insecure_http
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def _after_fork(self) -> None:
        # The parent's pooled sockets must not be shared with it. Drop them
        # without closing: closing a TLS socket here could disturb the parent.
        self._session = self._new_session()
        self.__dict__.pop("_single", None)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_session", None)  # a connection pool does not travel
        state.pop("_single", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._session = self._new_session()

    def _authenticate(self, form: dict[str, Any], headers: dict[str, str], url: str) -> None:
        """Put the client authentication on one attempt (the provider's)."""
        raise NotImplementedError

    def _rebuilt_per_attempt(self) -> bool:
        """Whether each attempt needs a form of its own (a fresh assertion)."""
        return True

    def _endpoint(self) -> str:
        """The token endpoint URL (after discovery, for a provider built with an issuer)."""
        assert self.token_endpoint is not None  # noqa: S101 - the provider's contract
        return self.token_endpoint

    def _request(
        self, form: Callable[[], dict[str, Any]], *, refresh_token: str | None = None
    ) -> Token:
        """POST the grant built by ``form`` (called once per attempt) and judge the answer."""
        url = self._endpoint()
        # Values this request carries that no message may show: the refresh
        # token, and each attempt's assertion or subject token as it is built.
        secrets: list[str | None] = [refresh_token]

        def prepare() -> requests.PreparedRequest:
            data = form()
            headers = {"Accept": "application/json"}
            self._authenticate(data, headers, url)
            secrets.extend(v for k, v in data.items() if k in _SECRET_FIELDS and isinstance(v, str))
            return self._session.prepare_request(
                requests.Request("POST", url, data=data, headers=headers, auth=_no_auth)
            )

        prepared = prepare()
        # The request object that the response or an error hands out is a
        # copy with the credentials replaced by "***".
        safe = _scrubbed(prepared)
        again = prepare if self._rebuilt_per_attempt() else None
        try:
            response, body = self._exchange(prepared, secrets, rebuild=again)
        except TokenError as exc:
            _hand_out(exc, prepared, safe)
            raise
        finally:
            self._close_pools()
        response.request = safe
        if body is None:
            raise TokenHTTPError(
                f"token endpoint {url} answered HTTP {response.status_code} with a body "
                f"over {_MAX_BODY // 1024} KiB; that is not a token response",
                response=response,
            )
        try:
            return self._parse(response, body, secrets)
        except TokenError:
            # The error hands out the response: its body must not hand out a
            # token the server issued (a 200 refused for a bad expires_in) or
            # a secret it echoed.
            self._scrub_body(response, body, secrets)
            raise

    def _scrub_body(
        self, response: requests.Response, body: bytes, secrets: list[str | None]
    ) -> None:
        """Replace ``response``'s body by a copy without tokens or secrets:
        the values of token fields and every spelling of a known secret read
        ``***``; a 2xx body that is not a JSON or form object is dropped."""
        ctype = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        payload = _decode_body(body, ctype)
        if not isinstance(payload, Mapping):
            if 200 <= response.status_code < 300:
                response._content = b""
                return
            payload = {}
        hidden = [v for k, v in payload.items() if k in _TOKEN_FIELDS and isinstance(v, str)]
        spellings: set[str] = set()
        for value in hidden:
            spellings.update(_spellings(value))

        def mask(text: str) -> str:
            for form in sorted(spellings, key=len, reverse=True):
                if form:
                    text = text.replace(form, "***")
            return self._redact(text, secrets)

        text = _unescaped_json(body.decode("utf-8", errors="replace"), mask)
        unescaped = html.unescape(text)  # an HTML page may echo "&" as "&amp;"
        if mask(unescaped) != unescaped:
            text = unescaped
        response._content = mask(text).encode("utf-8")
        response.encoding = "utf-8"

    def _exchange(
        self,
        prepared: requests.PreparedRequest,
        secrets: list[str | None],
        *,
        rebuild: Callable[[], requests.PreparedRequest] | None = None,
        budget: float | None = None,
    ) -> tuple[requests.Response, bytes | None]:
        """Send the request and read its answer, all within ``timeout``.

        Connecting, sending, every byte of the answer, and the retries with
        their pauses share one deadline (``timeout``, or connect + read, or
        ``budget``): each socket operation of the request waits at most what
        is left of it (see :class:`~alf_session._transport._Call`), so a server
        that trickles one byte at a time cannot hold the caller, nor through
        the single flight every other thread. Per-read timeouts alone would
        let it. No thread is started for this.

        With ``rebuild``, each retry sends ``rebuild()`` instead of the same
        request again (see :meth:`_send_rebuilding`).
        """
        url = prepared.url or ""
        call = _Call(_budget(self.timeout) if budget is None else budget)
        settings = self._session.merge_environment_settings(
            url, dict(self.proxies or {}), True, self.verify, self.cert
        )
        _Call.local.call = call
        try:
            if rebuild is None:
                response = self._session.send(
                    prepared, timeout=self.timeout, allow_redirects=False, **settings
                )
            else:
                response = self._send_rebuilding(prepared, rebuild, settings)
            try:
                return response, _read_limited(response)
            except requests.RequestException as exc:
                if exc.response is None:
                    exc.response = response  # a broken-off answer still had a status
                raise
            finally:
                response.close()
        except _RefusedPeer as exc:
            raise InsecureTransportError(str(exc)) from None
        except (requests.RequestException, _Cancelled) as exc:
            if isinstance(exc, _Cancelled) or call.remaining() <= 0 or _timed_out(exc):
                # Same words whichever ran out: the whole budget or one read.
                raise TokenRequestTimeout(
                    f"{_what(url)} {url} did not answer within {self._timeout_text()}; "
                    "check that it is up, or raise token_timeout"
                ) from exc
            if exc.response is not None:
                raise TokenRequestError(
                    f"{_what(url)} {url} broke off its answer: {type(exc).__name__}",
                    response=exc.response,
                ) from exc
            reason = self._redact(_root_cause(exc), secrets)
            raise TokenRequestError(f"could not reach {_what(url)} {url}: {reason}") from exc
        finally:
            _Call.local.call = None

    def _send_rebuilding(
        self,
        first: requests.PreparedRequest,
        rebuild: Callable[[], requests.PreparedRequest],
        settings: Any,
    ) -> requests.Response:
        """Send, retrying under ``self.retry`` with a new request for each attempt.

        urllib3 retries by sending the same bytes again; a client assertion's
        ``jti`` must not be seen twice (RFC 7523 §3, "jti"), so this loop
        asks urllib3's ``Retry`` only whether and when to retry, and builds
        each attempt afresh. It runs inside :meth:`_exchange`'s thread: the
        bounded ``Retry`` gives up on a pause the time bound has no room for.
        """
        retry = self.retry
        prepared = first
        while True:
            try:
                response = self._single_session.send(
                    prepared, timeout=self.timeout, allow_redirects=False, **settings
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                try:
                    retry = retry.increment(
                        method="POST", url=prepared.url, error=_urllib3_error(exc)
                    )
                except MaxRetryError:
                    raise exc from None
                retry.sleep()
                prepared = rebuild()
                continue
            has_after = response.headers.get("Retry-After") is not None
            if not retry.is_retry("POST", response.status_code, has_after):
                return response
            try:
                retry = retry.increment(method="POST", url=prepared.url, response=response.raw)
            except MaxRetryError:
                return response  # the last answer: its body may be an OAuth error
            response.close()
            retry.sleep(response.raw)
            prepared = rebuild()

    def _close_pools(self) -> None:
        # No socket is kept between fetches: a credential asks once per
        # token lifetime (minutes to hours), far longer than identity
        # providers keep an idle connection open, so a pooled socket would
        # only hold a descriptor (one per credential in a gateway) and go
        # stale. Retries within this fetch still reuse the connection.
        self._session.close()
        single = self.__dict__.get("_single")
        if single is not None:
            single.close()

    @property
    def _single_session(self) -> requests.Session:
        """A session that makes exactly one attempt per send (no urllib3 retry)."""
        session: requests.Session | None = self.__dict__.get("_single")
        if session is None:
            session = requests.Session()
            adapter = _WireAdapter(
                max_retries=Retry(total=0, redirect=False, raise_on_status=False),
                plain_http_loopback_only=not self.allow_insecure_http,
            )
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            self.__dict__["_single"] = session
        return session

    def _parse(self, response: requests.Response, body: bytes, secrets: list[str | None]) -> Token:
        url = self.token_endpoint
        status = response.status_code
        ctype = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        payload = _decode_body(body, ctype)
        # The OAuth error body is judged before the status: a 400 with
        # {"error": "invalid_scope"} is InvalidScope, not an HTTP error, and a
        # 200 carrying "error" is an error too (golang/oauth2 does the same).
        if isinstance(payload, Mapping) and isinstance(payload.get("error"), str):
            raise self._oauth_error(response, payload, secrets)
        if not 200 <= status < 300:
            if 300 <= status < 400:
                where = response.headers.get("Location", "?")[:_QUOTE]
                detail = (
                    f"a redirect to {where!r}, which is not followed because the request "
                    "carries the client secret; configure the final token URL"
                )
            else:
                detail = _describe_body(body, ctype, self._redact, secrets)
            raise TokenHTTPError(
                f"token endpoint {url} answered HTTP {status} {response.reason or ''}".rstrip()
                + f": {detail}",
                response=response,
            )
        if payload is None:
            # A 2xx body is never quoted: whatever it is, it might hold a token.
            kind = (
                "an empty body"
                if not body.strip()
                else (f"{len(body)} bytes of {ctype or 'unlabelled content'} that are not JSON")
            )
            raise InvalidTokenResponse(
                f"token endpoint {url} answered HTTP {status} with {kind}; "
                "expected a JSON token response (is the URL the token endpoint?)",
                response=response,
            )
        try:
            return Token.from_response(
                payload, now=self.clock(), default_lifetime=self.default_lifetime
            )
        except InvalidTokenResponse as exc:
            raise InvalidTokenResponse(f"token endpoint {url}: {exc}", response=response) from None

    def _oauth_error(
        self, response: requests.Response, payload: Mapping[str, Any], secrets: list[str | None]
    ) -> OAuthError:
        # Every field is the server's text, and a server may echo what it was
        # sent (a refresh token, the secret): each is redacted before it is cut.
        raw_code = str(payload["error"])
        code = self._redact(raw_code, secrets)[:100]
        description = payload.get("error_description")
        uri = payload.get("error_uri")
        description = (
            self._redact(str(description), secrets)[:_QUOTE] if description is not None else None
        )
        uri = self._redact(str(uri), secrets)[:_QUOTE] if uri is not None else None
        cls = OAUTH_ERRORS.get(raw_code, OAuthError)
        message = f"{self.token_endpoint} refused the token request: {code}"
        if description:
            message += f" ({description})"
        if cls.hint:
            message += f". {cls.hint}"
        return cls(
            message,
            error=code,
            error_description=description,
            error_uri=uri,
            response=response,
        )

    def _timeout_text(self) -> str:
        t = self.timeout
        if isinstance(t, tuple):
            return f"{t[0]:g}s to connect and {t[1]:g}s to read ({t[0] + t[1]:g}s in all)"
        return f"{t:g}s"


def _scrubbed(prepared: requests.PreparedRequest) -> requests.PreparedRequest:
    """A copy of a token request with its credentials replaced by ``***``: the
    ``Authorization`` header and the secret fields of the form body."""
    safe = prepared.copy()
    headers = CaseInsensitiveDict(prepared.headers)
    for name in ("Authorization", "Proxy-Authorization"):
        if name in headers:
            headers[name] = "***"
    safe.headers = headers
    body = prepared.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str):
        fields = parse_qsl(body, keep_blank_values=True)
        safe.body = urlencode(
            [(k, "***" if k in _SECRET_FIELDS else v) for k, v in fields], safe="*"
        )
    return safe


def _hand_out(
    exc: BaseException, prepared: requests.PreparedRequest, safe: requests.PreparedRequest
) -> None:
    """Put ``safe`` in place of ``prepared`` wherever ``exc`` and the
    exceptions chained to it (``__cause__``, ``__context__``) hold it: their
    ``request`` and their ``response.request``."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if getattr(err, "request", None) is prepared:
            err.request = safe  # type: ignore[attr-defined]
        response = getattr(err, "response", None)
        if isinstance(response, requests.Response) and response.request is prepared:
            response.request = safe
        todo += [err.__cause__, err.__context__]


def _spellings(secret: str) -> set[str]:
    """The ways ``secret`` may be written in a server's answer or an error."""
    return {
        secret,
        quote_plus(secret, safe=""),
        quote(secret, safe=""),
        json.dumps(secret)[1:-1],
    }


def _basic_credentials(client_id: str, secret: str) -> set[str]:
    """The Base64 ``id:secret`` of HTTP Basic, form-encoded (RFC 6749 §2.3.1) or not."""
    pairs = {f"{_form_encode(client_id)}:{_form_encode(secret)}", f"{client_id}:{secret}"}
    encoded = {base64.b64encode(p.encode()).decode("ascii") for p in pairs}
    return encoded | {e.rstrip("=") for e in encoded}


# -- helpers -----------------------------------------------------------------


def _what(url: str) -> str:
    """What a URL is, for messages: the token endpoint, or a metadata document."""
    return "metadata URL" if "/.well-known/" in url else "token endpoint"


def _urllib3_error(exc: requests.RequestException) -> Exception:
    """The urllib3 error inside a requests one, for ``Retry.increment`` to classify
    (connect, read or other), or a ProtocolError when there is none."""
    for arg in exc.args:
        reason = getattr(arg, "reason", None)
        if isinstance(reason, Exception):
            return reason
        if isinstance(arg, Exception) and not isinstance(arg, requests.RequestException):
            return arg
    return ProtocolError(type(exc).__name__)


def _read_limited(response: requests.Response) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > _MAX_BODY:
            return None
        chunks.append(chunk)
    body = b"".join(chunks)
    response._content = body  # so that exc.response.content works for callers
    return body


def _decode_body(body: bytes, ctype: str) -> object:
    """The body as JSON, or as a form (some servers, GitHub among them, answer
    ``application/x-www-form-urlencoded``); ``None`` when it is neither."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    if ctype in ("application/x-www-form-urlencoded", "text/plain") and "=" in text:
        try:
            return dict(parse_qsl(text.strip(), strict_parsing=True))
        except ValueError:
            return None
    return None


_SPACES = re.compile(r"\s+")


def _describe_body(
    body: bytes,
    ctype: str,
    redact: Callable[[str, Iterable[str | None]], str],
    secrets: list[str | None],
) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return "empty body"
    if "html" in ctype or text[:15].lower().startswith(("<!doctype", "<html")):
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
        # The title is the server's text like any other: redacted, then cut.
        name = _SPACES.sub(" ", redact(title.group(1), secrets)).strip()[:80] if title else ""
        found = f" titled {name!r}" if name else ""
        return f"an HTML page{found}"
    text = _unescaped_json(text, lambda t: redact(t, secrets))
    text = _SPACES.sub(" ", redact(text, secrets))
    return repr(text[:_QUOTE] + ("…" if len(text) > _QUOTE else ""))


def _unescaped_json(text: str, redact: Callable[[str], str]) -> str:
    """``text``, or the same JSON without its escapes when that spelling
    shows a secret that ``redact`` hides and ``text``'s does not.

    A server's JSON encoder may escape what it echoes: Go's writes ``&`` as
    ``\\u0026``, PHP's ``/`` as ``\\/``; the secret is then in the body under a
    spelling nobody can list in advance.
    """
    try:
        decoded = json.loads(text)
    except (ValueError, RecursionError):
        return text
    plain = json.dumps(decoded, ensure_ascii=False)
    return plain if redact(plain) != plain else text


def _timed_out(exc: requests.RequestException) -> bool:
    """Whether the request failed for want of an answer in time.

    Once its retries are spent, urllib3 reports a read timeout as a
    MaxRetryError, which requests turns into a ConnectionError rather than a
    Timeout: look at the reason inside.
    """
    if isinstance(exc, requests.Timeout):
        return True
    for arg in exc.args:
        reason = getattr(arg, "reason", arg)
        # urllib3 makes "connection refused" a subclass of ConnectTimeoutError.
        if isinstance(reason, _Urllib3Timeout) and not isinstance(reason, NewConnectionError):
            return True
    return False


def _root_cause(exc: BaseException) -> str:
    """A short reason for a transport failure ("Connection refused")."""
    seen: BaseException = exc
    while True:
        nxt = seen.__cause__ or seen.__context__
        if nxt is None or nxt is seen:
            break
        seen = nxt
    for arg in getattr(exc, "args", ()):
        reason = getattr(arg, "reason", None)
        if isinstance(reason, BaseException):
            seen = reason
    text = re.sub(r"<[^>]*object at 0x[0-9a-f]+>:?\s*", "", str(seen))
    # urllib3 starts with "HTTPConnection(host=…, port=…): ", which the URL
    # in our own message says already.
    text = re.sub(r"^HTTPS?Connection\([^)]*\):\s*", "", text)
    return (text or type(seen).__name__)[:_QUOTE]
