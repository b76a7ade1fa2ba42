"""The ``alf-session`` command line.

Three commands::

    alf-session token                    print an access token (or --json: the whole token)
    alf-session request METHOD URL ...   make one authorized request
    alf-session demo                     run the whole story on loopback

Credentials come from options or the environment: ``ALF_TOKEN_ENDPOINT``,
``ALF_CLIENT_ID``, ``ALF_CLIENT_SECRET``, ``ALF_SCOPE``, ``ALF_AUDIENCE`` and
``ALF_STORAGE`` (a storage URL, so that the command line shares the token a
service cached). Errors are one line on stderr; exit status 2 means the
command line was wrong, 1 that something failed. ``--debug`` adds the
traceback. No secret is ever printed except the token ``token`` was asked for.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
import requests.adapters
import urllib3
from urllib3.util.retry import Retry

from ._cliargs import UsageError, build_parser
from ._wire import _root_cause
from .errors import ConfigurationError, InsecureTransportError, TokenError
from .manager import TokenManager
from .providers import ClientCredentials
from .token import Token

__all__ = ["main"]

log = logging.getLogger("alf_session.cli")

ENV_VARS = {
    "token_endpoint": "ALF_TOKEN_ENDPOINT",
    "issuer": "ALF_ISSUER",
    "client_id": "ALF_CLIENT_ID",
    "client_secret": "ALF_CLIENT_SECRET",
    "private_key": "ALF_PRIVATE_KEY_FILE",
    "key_id": "ALF_KEY_ID",
    "client_assertion_file": "ALF_CLIENT_ASSERTION_FILE",
    "cert": "ALF_CERT_FILE",
    "cert_key": "ALF_CERT_KEY_FILE",
    "scope": "ALF_SCOPE",
    "audience": "ALF_AUDIENCE",
    "storage": "ALF_STORAGE",
}

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class Failure(Exception):
    """Something the command tried failed (exit status 1); the message says what."""


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run ``alf-session`` with ``argv`` (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 success, 1 failure, 2 wrong command line.
    """
    parser = build_parser(prog)
    debug = False
    secrets: list[str] = []
    args: argparse.Namespace | None = None
    try:
        try:
            args, unknown = parser.parse_known_args(argv)
        except SystemExit as exc:  # --help and --version
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        if unknown:  # said here, so that the hint names the command's --help
            raise UsageError(f"unrecognized arguments: {' '.join(unknown)}")
        debug = bool(getattr(args, "debug", False))
        _configure_logging(parser.prog, debug=debug, verbose=bool(getattr(args, "verbose", False)))
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        args.secrets = secrets
        args.prog = parser.prog
        status: int = _COMMANDS[args.command](args)
        return status
    except UsageError as exc:
        _report(parser.prog, f"error: {_with_help_hint(str(exc), parser.prog, args)}", secrets)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _report(parser.prog, "interrupted", secrets)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (| head): not an error worth a traceback.
        _silence_stdout()
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - the one place every failure becomes one line
        if debug:
            traceback.print_exc()
        if isinstance(exc, ConfigurationError):
            message = _with_help_hint(_describe(exc), parser.prog, args)
            _report(parser.prog, f"error: {message}", secrets)
            return EXIT_USAGE
        _report(parser.prog, f"error: {_describe(exc)}", secrets)
        return EXIT_FAILURE


# -- commands -----------------------------------------------------------------


def _cmd_token(args: argparse.Namespace) -> int:
    if args.show_refresh_token and not args.json:
        raise UsageError("--show-refresh-token only applies with --json")
    manager = _manager(args)
    token = _obtain(manager, refresh=args.refresh)
    if args.json:
        print(json.dumps(token_as_json(token, refresh_token=args.show_refresh_token), indent=2))
    else:
        print(token.access_token)
    sys.stdout.flush()
    return EXIT_OK


def token_as_json(token: Token, *, refresh_token: bool = False) -> dict[str, Any]:
    """What ``alf-session token --json`` prints for ``token``."""
    data = token.to_dict()
    if not refresh_token:
        data.pop("refresh_token", None)
    remaining = token.expires_in
    data["expires_in"] = None if remaining is None else max(0, int(remaining))
    return data


def _cmd_request(args: argparse.Namespace) -> int:
    from .session import TokenSession

    headers = _parse_headers(args.header)
    params: list[tuple[str, str]] = []
    for query in args.params:
        if "=" not in query:
            raise UsageError(f"--params {query!r} is not NAME=VALUE (or 'a=1&b=2')")
        params.extend(parse_qsl(query, keep_blank_values=True))
    data: bytes | None = None
    if args.data is not None:
        data = _read_value(args.data, "--data")
    elif args.json_body is not None:
        raw = _read_value(args.json_body, "--json")
        try:
            json.loads(raw)
        except ValueError as exc:
            raise UsageError(f"--json is not valid JSON ({exc})") from None
        data = raw
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
    method = args.method.upper()
    if not re.fullmatch(r"[A-Z][A-Z0-9_-]*", method):
        raise UsageError(f"{args.method!r} is not an HTTP method such as GET or POST")

    _check_url(args.url, params)
    verify: bool | str = True
    if args.cacert is not None:
        if not os.path.isfile(args.cacert):
            raise UsageError(f"--cacert {args.cacert}: no such file")
        verify = args.cacert
    elif args.insecure:
        verify = False
        print(
            f"{args.prog}: warning: --insecure: the API's certificate is not verified, "
            "and the token is sent to whoever answers",
            file=sys.stderr,
        )

    manager = _manager(args)
    if not any(name.lower() == "authorization" for name in headers):
        _obtain(manager, refresh=False)  # here, so that -v says where it came from
    with TokenSession(token_manager=manager) as session:
        # A token bound to the client certificate (RFC 8705) is good only with it.
        session.cert = getattr(manager.provider, "cert", None)
        if args.retries:
            for prefix in ("https://", "http://"):
                session.mount(prefix, requests.adapters.HTTPAdapter(max_retries=_retry(args)))
        try:
            with warnings.catch_warnings():
                # -k was asked for and said so once, above; not once per request.
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                response = session.request(
                    method,
                    args.url,
                    headers=headers,
                    params=params,
                    data=data,
                    timeout=args.timeout,
                    # Per request: requests lets REQUESTS_CA_BUNDLE override a
                    # session's verify, but not a request's (psf/requests#3829).
                    verify=verify,
                )
        except TokenError:
            raise  # also a RequestException (a token request's Timeout too): not the API's
        except requests.exceptions.InvalidURL as exc:
            raise UsageError(f"{args.url!r} is not a URL requests can use ({exc})") from None
        except (requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema):
            raise UsageError(f"{args.url!r} is not an http:// or https:// URL") from None
        except requests.exceptions.SSLError as exc:
            raise Failure(
                f"could not verify {args.url}: {_root_cause(exc)} (--cacert FILE names the CA "
                "certificates to trust; -k skips the check)"
            ) from None
        except requests.Timeout:
            raise Failure(f"{args.url} did not answer within {args.timeout:g}s") from None
        except requests.exceptions.RetryError as exc:
            raise Failure(
                f"{args.url} failed after --retries {args.retries}: {_root_cause(exc)}"
            ) from None
        except requests.ConnectionError as exc:
            raise Failure(f"could not reach {args.url}: {_root_cause(exc)}") from None
        out = sys.stdout.buffer
        if args.include:
            out.write(_head(response))
        content = response.content
        out.write(content)
        if content and not content.endswith(b"\n") and sys.stdout.isatty():
            out.write(b"\n")
        out.flush()
    retried = bool(response.history) and response.history[0].status_code == 401
    note = " (after one retry: the first token was refused with 401)" if retried else ""
    if not args.include:
        print(
            f"HTTP {response.status_code} {response.reason or ''}".rstrip() + note,
            file=sys.stderr,
        )
    elif note:
        print(f"{args.prog}: {note.strip(' ()')}", file=sys.stderr)
    return EXIT_OK if response.status_code < 400 else EXIT_FAILURE


def _check_url(url: str, params: list[tuple[str, str]]) -> None:
    """A URL requests cannot send to is a wrong command line (exit 2), found
    before any token is asked for."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise UsageError(f"{url!r} is not an http:// or https:// URL")
    try:
        parts = urlsplit(url)
        port = parts.port
        requests.PreparedRequest().prepare_url(url, params)
    except (ValueError, requests.exceptions.RequestException) as exc:
        raise UsageError(f"{url!r} is not a valid URL ({_root_cause(exc)})") from None
    if not parts.hostname or any(c.isspace() for c in url) or port == 0:
        raise UsageError(f"{url!r} is not a valid URL (no host, or a space in it)")


def _retry(args: argparse.Namespace) -> Retry:
    """--retries N for the API request: transient failures only, bounded waits."""
    from ._transport import _BoundedRetry

    return _BoundedRetry(
        total=args.retries,
        backoff_factor=0.5,
        status_forcelist=(429, 502, 503, 504),
        respect_retry_after_header=True,
        raise_on_status=False,  # the last answer is printed, as without retries
    )


def _head(response: requests.Response) -> bytes:
    """The status line and headers, as ``curl -i`` and httpie print them."""
    version = {10: "HTTP/1.0", 11: "HTTP/1.1", 20: "HTTP/2"}.get(
        getattr(response.raw, "version", 11), "HTTP/1.1"
    )
    lines = [f"{version} {response.status_code} {response.reason or ''}".rstrip()]
    lines += [f"{name}: {value}" for name, value in response.headers.items()]
    return ("\n".join(lines) + "\n\n").encode("latin-1", "replace")


def _obtain(manager: TokenManager, *, refresh: bool) -> Token:
    """Get the token; log (``-v``) whether it came from memory, storage or the endpoint."""
    before = manager.stats
    token = manager.force_refresh() if refresh else manager.get_token()
    after = manager.stats
    if after.fetches > before.fetches:
        source = f"the token endpoint {getattr(manager.provider, 'token_endpoint', '')}".rstrip()
    elif after.storage_hits > before.storage_hits:
        source = f"the storage {manager.storage!r}"
    else:
        source = "memory"
    remaining = token.expires_in
    expires = "unknown" if remaining is None else f"{max(0, remaining):.0f}s"
    log.info("token %s came from %s; expires in %s", token.fingerprint, source, expires)
    return token


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(workers=args.workers, duration=args.duration, lifetime=args.lifetime)


_COMMANDS = {"token": _cmd_token, "request": _cmd_request, "demo": _cmd_demo}


# -- helpers ------------------------------------------------------------------


def _manager(args: argparse.Namespace) -> TokenManager:
    """A TokenManager for the credentials of the options and the environment."""
    endpoint = _option(args, "token_endpoint")
    issuer = _option(args, "issuer")
    client_id = _option(args, "client_id")
    secret = _client_secret(args)
    if secret:
        args.secrets.append(secret)
    missing = []
    if not endpoint and not issuer:
        missing.append("--token-endpoint (or ALF_TOKEN_ENDPOINT) or --issuer (or ALF_ISSUER)")
    if not client_id:
        missing.append("--client-id (or ALF_CLIENT_ID)")
    if missing:
        raise UsageError(f"no {' and no '.join(missing)} given")
    if endpoint and issuer:
        raise UsageError("give --token-endpoint or --issuer, not both")
    assertion_file = _option(args, "client_assertion_file")
    cert = _cert(args)
    provider = ClientCredentials(
        endpoint,
        client_id,
        secret,
        issuer=issuer,
        private_key=_option(args, "private_key"),
        key_id=_option(args, "key_id"),
        client_assertion=Path(assertion_file) if assertion_file else None,
        cert=cert,
        scope=_option(args, "scope"),
        audience=_option(args, "audience"),
        auth_method=args.auth_method,
        timeout=args.token_timeout,
        allow_insecure_http=args.allow_insecure_http,
    )
    storage_url = _option(args, "storage")
    storage = None
    if storage_url:
        from .storage import storage_from_url

        storage = storage_from_url(storage_url)
    # One call, so no refresh ahead and no remembered failure are wanted.
    return TokenManager(provider, storage, refresh_ahead=None, failure_ttl=0)


def _cert(args: argparse.Namespace) -> str | tuple[str, str] | None:
    cert, key = _option(args, "cert"), _option(args, "cert_key")
    if key and not cert:
        raise UsageError("--cert-key (or ALF_CERT_KEY_FILE) needs --cert (or ALF_CERT_FILE)")
    return (cert, key) if cert and key else cert


def _option(args: argparse.Namespace, name: str) -> str | None:
    value = getattr(args, name, None)
    if value is None:
        value = os.environ.get(ENV_VARS[name]) or None
    return value.strip() if isinstance(value, str) and value.strip() else None


def _client_secret(args: argparse.Namespace) -> str | None:
    if args.client_secret is not None and args.client_secret_file is not None:
        raise UsageError("give --client-secret or --client-secret-file, not both")
    if args.client_secret is not None:
        print(
            "alf-session: warning: --client-secret is visible to other users in the process "
            "list; prefer ALF_CLIENT_SECRET or --client-secret-file",
            file=sys.stderr,
        )
        return str(args.client_secret)
    if args.client_secret_file is not None:
        path = args.client_secret_file
        try:
            if path == "-":
                text = sys.stdin.readline()
            else:
                with open(path, encoding="utf-8") as file:
                    text = file.readline()
        except OSError as exc:
            raise UsageError(
                f"cannot read --client-secret-file {path}: {exc.strerror or type(exc).__name__}"
            ) from None
        secret = text.rstrip("\r\n")
        if not secret:
            raise UsageError(f"--client-secret-file {path} is empty")
        return secret
    return os.environ.get(ENV_VARS["client_secret"]) or None


def _parse_headers(values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, sep, content = value.partition(":")
        name = name.strip()
        if not sep or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise UsageError(f"-H wants 'Name: value', not {value!r}")
        headers[name] = content.strip()
    return headers


def _read_value(value: str, option: str) -> bytes:
    if not value.startswith("@"):
        return value.encode("utf-8")
    path = value[1:]
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise UsageError(
            f"cannot read {option} file {path}: {exc.strerror or type(exc).__name__}"
        ) from None


def _with_help_hint(message: str, prog: str, args: argparse.Namespace | None) -> str:
    """Point a usage error to the help of the command that was used."""
    if "--help'" in message:
        return message  # argparse's own errors say it already
    command = getattr(args, "command", None)
    where = f"{prog} {command}" if command else prog
    return f"{message} (see '{where} --help')"


class _LogFormatter(logging.Formatter):
    """``alf-session: warning: message``, like every other line the tool prints."""

    def __init__(self, prog: str, *, names: bool) -> None:
        super().__init__()
        self.prog = prog
        self.names = names

    def format(self, record: logging.LogRecord) -> str:
        where = f"{record.name}: " if self.names else ""
        return f"{self.prog}: {record.levelname.lower()}: {where}{record.getMessage()}"


_log_handler: logging.Handler | None = None


def _configure_logging(prog: str, *, debug: bool, verbose: bool) -> None:
    """Show the library's warnings on stderr (a storage that is down, say);
    with ``-v`` also what it does, with ``--debug`` everything."""
    global _log_handler
    logger = logging.getLogger("alf_session")
    if _log_handler is not None:  # main() called again in the same process
        logger.removeHandler(_log_handler)
    _log_handler = logging.StreamHandler(sys.stderr)
    _log_handler.setFormatter(_LogFormatter(prog, names=debug))
    logger.addHandler(_log_handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InsecureTransportError):
        return f"{exc} On the command line: --allow-insecure-http."
    if isinstance(exc, (TokenError, UsageError, Failure)):
        return str(exc) or type(exc).__name__
    if isinstance(exc, requests.RequestException):
        return f"{type(exc).__name__}: {_root_cause(exc)}"
    # Not ours: name it, but don't quote it (it might carry anything).
    return f"unexpected {type(exc).__name__}; run with --debug for the traceback"


def _report(prog: str, message: str, secrets: Sequence[str]) -> None:
    """Print ``message`` as one line on stderr, with every known secret masked."""
    for secret in secrets:
        if len(secret) >= 3:
            message = message.replace(secret, "***")
    message = " ".join(message.split())
    print(f"{prog}: {message}", file=sys.stderr)


def _silence_stdout() -> None:
    # Python flushes stdout at exit and would report the broken pipe again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
