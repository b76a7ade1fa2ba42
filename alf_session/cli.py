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
from collections.abc import Sequence
from typing import Any, NoReturn
from urllib.parse import parse_qsl

import requests

from .errors import ConfigurationError, InsecureTransportError, TokenError
from .manager import TokenManager
from .providers import ClientCredentials
from .token import Token

__all__ = ["main"]

log = logging.getLogger(__name__)

ENV_VARS = {
    "token_endpoint": "ALF_TOKEN_ENDPOINT",
    "client_id": "ALF_CLIENT_ID",
    "client_secret": "ALF_CLIENT_SECRET",
    "scope": "ALF_SCOPE",
    "audience": "ALF_AUDIENCE",
    "storage": "ALF_STORAGE",
}

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """The command line is wrong (exit status 2)."""


class Failure(Exception):
    """Something the command tried failed (exit status 1); the message says what."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, as every error of this tool."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


_DESCRIPTION = """\
A requests.Session that carries its own OAuth 2.0 bearer token, on the command line.

  alf-session token                   print an access token for the credentials
  alf-session request GET URL         make one request with the token
  alf-session demo                    see it all work on loopback, nothing to set up

Credentials come from options or environment variables (ALF_TOKEN_ENDPOINT,
ALF_CLIENT_ID, ALF_CLIENT_SECRET, ALF_SCOPE, ALF_AUDIENCE, ALF_STORAGE).
"""

_EPILOG_PRINT = """\
examples:
  export ALF_TOKEN_ENDPOINT=https://idp.example/oauth/token ALF_CLIENT_ID=my-service
  read -rs ALF_CLIENT_SECRET && export ALF_CLIENT_SECRET
  curl -H "Authorization: Bearer $(alf-session token)" https://api.example/orders
  alf-session token --json | jq .expires_in
  ALF_STORAGE=redis://cache:6379/0 alf-session token   # the token your service cached

exit status: 0 printed a token, 1 could not get one, 2 wrong command line.
"""

_REQUEST_EPILOG = """\
examples:
  alf-session request GET https://api.example/orders --params status=open
  alf-session request POST https://api.example/orders --json '{"sku": "A-1", "qty": 2}'
  alf-session request PUT https://api.example/notes/7 -H 'Content-Type: text/plain' -d @note.txt

The response body goes to stdout, the status line to stderr. A 401 is
answered by one retry with a new token, as TokenSession does.
exit status: 0 for 1xx-3xx, 1 for 4xx/5xx or a failure, 2 wrong command line.
"""

_DEMO_EPILOG = """\
The demo starts a token server and a protected API on 127.0.0.1, runs worker
processes that share one token through FileStorage in a temporary directory,
lets tokens expire and be renewed in the background, revokes one so that the
API answers 401 and the request is retried, and compares what the workers
counted with what the servers counted. Nothing is left behind.
"""


def _common_options() -> _Parser:
    # default=SUPPRESS: the same options sit on the main parser and on each
    # command; without it a command's default would override "alf-session
    # --debug token" (argparse copies sub-parser defaults over the namespace).
    common = _Parser(add_help=False)
    group = common.add_argument_group("output")
    group.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and the library's debug log on stderr",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log what the library does (token fetches, renewals, retries) on stderr",
    )
    return common


def _credential_options() -> _Parser:
    parent = _Parser(add_help=False)
    group = parent.add_argument_group(
        "credentials", "Each option falls back to the environment variable named after it."
    )
    group.add_argument(
        "--token-endpoint",
        metavar="URL",
        help="token URL, https:// (or http:// on loopback) [ALF_TOKEN_ENDPOINT]",
    )
    group.add_argument("--client-id", metavar="ID", help="client id [ALF_CLIENT_ID]")
    group.add_argument(
        "--client-secret",
        metavar="SECRET",
        help="client secret [ALF_CLIENT_SECRET]; on the command line it is visible to "
        "other users in the process list: prefer the variable or --client-secret-file",
    )
    group.add_argument(
        "--client-secret-file",
        metavar="PATH",
        help="read the client secret from the first line of PATH ('-': standard input)",
    )
    group.add_argument(
        "--scope", metavar="SCOPE", help="space-separated scopes to ask for [ALF_SCOPE]"
    )
    group.add_argument("--audience", metavar="AUD", help="audience parameter [ALF_AUDIENCE]")
    group.add_argument(
        "--auth-method",
        choices=("client_secret_basic", "client_secret_post"),
        default="client_secret_basic",
        help="how the client authenticates to the token endpoint (default: %(default)s)",
    )
    group.add_argument(
        "--storage",
        metavar="URL",
        help="share the token through this storage, as your service does: redis://host:6379/0, "
        "file:///var/cache/alf, memory:// [ALF_STORAGE]",
    )
    group.add_argument(
        "--token-timeout",
        metavar="SECONDS",
        type=_positive_float,
        default=10.0,
        help="timeout of each token request (default: %(default)g)",
    )
    group.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow a plain http:// token endpoint that is not on loopback",
    )
    return parent


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``alf-session`` (exposed for documentation tools)."""
    from . import __version__

    common = _common_options()
    credentials = _credential_options()
    parser = _Parser(
        prog=prog or "alf-session",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    token = commands.add_parser(
        "token",
        help="print an access token",
        description="Print an access token for the credentials, alone on one line.",
        epilog=_EPILOG_PRINT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[credentials, common],
    )
    token.add_argument(
        "--json",
        action="store_true",
        help="print the whole token as JSON (type, expiry, scope, other fields)",
    )
    token.add_argument(
        "--show-refresh-token",
        action="store_true",
        help="with --json, include the refresh token, if the server returned one",
    )
    token.add_argument(
        "--refresh",
        action="store_true",
        help="fetch a new token even if a valid one is cached in --storage",
    )
    token.set_defaults(handler=_cmd_token)

    request = commands.add_parser(
        "request",
        help="make one authorized HTTP request",
        description="Send one request with the token; the body goes to stdout, "
        "the status line to stderr.",
        epilog=_REQUEST_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[credentials, common],
    )
    request.add_argument("method", metavar="METHOD", help="GET, POST, PUT, PATCH, DELETE, …")
    request.add_argument("url", metavar="URL", help="the URL to request")
    request.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="add a header (repeatable); an Authorization header replaces the token",
    )
    body = request.add_mutually_exclusive_group()
    body.add_argument(
        "-d",
        "--data",
        metavar="DATA",
        help="request body as given; @PATH reads a file, @- standard input",
    )
    body.add_argument(
        "--json",
        metavar="JSON",
        dest="json_body",
        help="JSON request body (checked, sent with Content-Type: application/json); "
        "@PATH reads a file, @- standard input",
    )
    request.add_argument(
        "--params",
        action="append",
        default=[],
        metavar="QUERY",
        help="query parameters, 'a=1&b=2' or 'a=1' (repeatable)",
    )
    request.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="timeout of the request (default: %(default)g)",
    )
    request.set_defaults(handler=_cmd_request)

    demo = commands.add_parser(
        "demo",
        help="run the whole story on loopback (nothing to set up)",
        description="Show alf-session at work on this machine, with nothing but the package.",
        epilog=_DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    demo.add_argument(
        "--workers",
        type=_bounded_int(1, 16),
        default=4,
        metavar="N",
        help="worker processes (default: %(default)s)",
    )
    demo.add_argument(
        "--duration",
        type=_bounded_float(2, 120),
        default=8.0,
        metavar="SECONDS",
        help="how long the workers send requests (default: %(default)g)",
    )
    demo.add_argument(
        "--lifetime",
        type=_bounded_float(2, 60),
        default=3.0,
        metavar="SECONDS",
        help="lifetime of the tokens the demo's server issues (default: %(default)g)",
    )
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run ``alf-session`` with ``argv`` (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 success, 1 failure, 2 wrong command line.
    """
    parser = build_parser(prog)
    debug = False
    secrets: list[str] = []
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        debug = bool(getattr(args, "debug", False))
        _configure_logging(debug=debug, verbose=bool(getattr(args, "verbose", False)))
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        args.secrets = secrets
        status: int = args.handler(args)
        return status
    except UsageError as exc:
        _report(parser.prog, f"error: {exc}", secrets)
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
        status = EXIT_USAGE if isinstance(exc, ConfigurationError) else EXIT_FAILURE
        _report(parser.prog, f"error: {_describe(exc)}", secrets)
        return status


# -- commands -----------------------------------------------------------------


def _cmd_token(args: argparse.Namespace) -> int:
    if args.show_refresh_token and not args.json:
        raise UsageError("--show-refresh-token only applies with --json")
    manager = _manager(args)
    token = manager.force_refresh() if args.refresh else manager.get_token()
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

    manager = _manager(args)
    with TokenSession(token_manager=manager) as session:
        try:
            response = session.request(
                method, args.url, headers=headers, params=params, data=data, timeout=args.timeout
            )
        except requests.exceptions.InvalidURL as exc:
            raise UsageError(f"{args.url!r} is not a URL requests can use ({exc})") from None
        except (requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema):
            raise UsageError(f"{args.url!r} is not an http:// or https:// URL") from None
        except requests.Timeout:
            raise Failure(f"{args.url} did not answer within {args.timeout:g}s") from None
        except requests.ConnectionError as exc:
            raise Failure(f"could not reach {args.url}: {_root_cause(exc)}") from None
        out = sys.stdout.buffer
        content = response.content
        out.write(content)
        if content and not content.endswith(b"\n") and sys.stdout.isatty():
            out.write(b"\n")
        out.flush()
    note = (
        " (after one retry: the first token was refused with 401)"
        if response.history and (response.history[0].status_code == 401)
        else ""
    )
    print(
        f"HTTP {response.status_code} {response.reason or ''}".rstrip() + note,
        file=sys.stderr,
    )
    return EXIT_OK if response.status_code < 400 else EXIT_FAILURE


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(workers=args.workers, duration=args.duration, lifetime=args.lifetime)


# -- helpers ------------------------------------------------------------------


def _manager(args: argparse.Namespace) -> TokenManager:
    """A TokenManager for the credentials of the options and the environment."""
    endpoint = _option(args, "token_endpoint")
    client_id = _option(args, "client_id")
    secret = _client_secret(args)
    if secret:
        args.secrets.append(secret)
    missing = [
        f"--{name.replace('_', '-')} (or {ENV_VARS[name]})"
        for name, value in (("token_endpoint", endpoint), ("client_id", client_id))
        if not value
    ]
    if missing:
        raise UsageError(f"no {' and no '.join(missing)} given")
    provider = ClientCredentials(
        endpoint,  # type: ignore[arg-type]  # checked above
        client_id,  # type: ignore[arg-type]  # checked above
        secret,
        scope=_option(args, "scope"),
        audience=_option(args, "audience"),
        auth_method=args.auth_method,
        timeout=args.token_timeout,
        allow_insecure_http=args.allow_insecure_http,
    )
    storage_url = _option(args, "storage")
    storage = None
    if storage_url:
        from .storage import storage_from_url  # type: ignore[attr-defined,unused-ignore]  # added by the storage backends

        storage = storage_from_url(storage_url)
    # One call, so no refresh ahead and no remembered failure are wanted.
    return TokenManager(provider, storage, refresh_ahead=None, failure_ttl=0)


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


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _bounded_float(low: float, high: float) -> Any:
    def parse(text: str) -> float:
        value = _positive_float(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not between {low:g} and {high:g}")
        return value

    return parse


def _bounded_int(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not between {low} and {high}")
        return value

    return parse


def _configure_logging(*, debug: bool, verbose: bool) -> None:
    if not (debug or verbose):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("alf-session: %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("alf_session")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InsecureTransportError):
        return f"{exc} On the command line: --allow-insecure-http."
    if isinstance(exc, (TokenError, UsageError, Failure)):
        return str(exc) or type(exc).__name__
    if isinstance(exc, requests.RequestException):
        return f"{type(exc).__name__}: {_root_cause(exc)}"
    # Not ours: name it, but don't quote it (it might carry anything).
    return f"unexpected {type(exc).__name__}; run with --debug for the traceback"


def _root_cause(exc: BaseException) -> str:
    """The innermost reason of a transport error ("Connection refused")."""
    seen: BaseException = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        nxt = seen.__cause__ or seen.__context__
        if nxt is None or nxt is seen:
            break
        seen = nxt
    for arg in exc.args:
        reason = getattr(arg, "reason", None)
        if isinstance(reason, BaseException):
            seen = reason
    text = re.sub(r"<[^>]*object at 0x[0-9a-f]+>:?\s*", "", str(seen))
    text = re.sub(r"^HTTPS?Connection\([^)]*\):\s*", "", text)
    return (text or type(seen).__name__)[:200]


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
