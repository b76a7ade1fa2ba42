"""The command line's arguments: what ``alf-session`` accepts, and its help.

:func:`build_parser` is all of it; :mod:`alf_session.cli` runs the commands.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

__all__ = ["UsageError", "build_parser"]


class UsageError(Exception):
    """The command line is wrong (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, as every error of this tool."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


_DESCRIPTION = """\
A requests.Session that carries its own OAuth 2.0 bearer token, on the command line.

  alf-session token                   print an access token for the credentials
  alf-session request GET URL         make one request with the token
  alf-session demo                    see it all work on loopback, nothing to set up

Credentials come from options or environment variables (ALF_TOKEN_ENDPOINT or
ALF_ISSUER, ALF_CLIENT_ID, and one of ALF_CLIENT_SECRET, ALF_PRIVATE_KEY_FILE,
ALF_CLIENT_ASSERTION_FILE, ALF_CERT_FILE; ALF_SCOPE, ALF_AUDIENCE, ALF_STORAGE).
"""

_EPILOG_PRINT = """\
examples:
  export ALF_TOKEN_ENDPOINT=https://idp.example/oauth/token ALF_CLIENT_ID=my-service
  read -rs ALF_CLIENT_SECRET && export ALF_CLIENT_SECRET
  curl -H "Authorization: Bearer $(alf-session token)" https://api.example/orders
  alf-session token --json | jq .expires_in
  ALF_STORAGE=redis://cache:6379/0 alf-session token   # the token your service cached
  alf-session token --issuer https://idp.example --client-id my-service \
      --private-key key.pem --key-id k1                 # private_key_jwt, endpoint discovered
  alf-session token --issuer https://login.example/tenant --client-id my-service \
      --client-assertion-file /var/run/secrets/tokens/idp  # workload identity

exit status: 0 printed a token, 1 could not get one, 2 wrong command line.
"""

_REQUEST_EPILOG = """\
examples:
  alf-session request GET https://api.example/orders --params status=open
  alf-session request POST https://api.example/orders --json '{"sku": "A-1", "qty": 2}'
  alf-session request PUT https://api.example/notes/7 -H 'Content-Type: text/plain' -d @note.txt
  alf-session request -i --retries 3 --cacert ca.pem GET https://api.internal/health

The response body goes to stdout (with -i: after the status line and the
headers), the status line to stderr. A 401 is answered by one retry with a
new token, as TokenSession does. -v says where the token came from.
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
        help="log what the library does on stderr: where the token came from (memory, "
        "storage or the token endpoint), renewals, retries",
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
    group.add_argument(
        "--issuer",
        metavar="URL",
        help="discover the token endpoint from this issuer's metadata (OpenID Connect "
        "discovery or RFC 8414) instead of --token-endpoint [ALF_ISSUER]",
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
        "--private-key",
        metavar="FILE",
        help="PEM private key (RSA, EC, Ed25519) that signs private_key_jwt assertions; "
        "needs the jwt extra [ALF_PRIVATE_KEY_FILE]",
    )
    group.add_argument(
        "--key-id", metavar="KID", help="kid of --private-key in your JWKS [ALF_KEY_ID]"
    )
    group.add_argument(
        "--client-assertion-file",
        metavar="FILE",
        help="a ready client assertion, read again at each token request (Kubernetes "
        "projected token, GitHub Actions, cloud workload identity) [ALF_CLIENT_ASSERTION_FILE]",
    )
    group.add_argument(
        "--cert",
        metavar="FILE",
        help="client certificate for mTLS (RFC 8705), PEM; with its key unless --cert-key "
        "[ALF_CERT_FILE]. The token is bound to it, and 'request' presents it to the API",
    )
    group.add_argument(
        "--cert-key", metavar="FILE", help="the private key of --cert [ALF_CERT_KEY_FILE]"
    )
    group.add_argument(
        "--scope", metavar="SCOPE", help="space-separated scopes to ask for [ALF_SCOPE]"
    )
    group.add_argument("--audience", metavar="AUD", help="audience parameter [ALF_AUDIENCE]")
    group.add_argument(
        "--auth-method",
        choices=(
            "client_secret_basic",
            "client_secret_post",
            "client_secret_jwt",
            "private_key_jwt",
            "tls_client_auth",
            "self_signed_tls_client_auth",
            "none",
        ),
        default=None,
        help="how the client authenticates to the token endpoint (default: chosen from "
        "the credential given and the server's metadata)",
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
    request.add_argument(
        "--retries",
        type=_bounded_int(0, 10),
        default=0,
        metavar="N",
        help="retry the request up to N times on a connection error or a 429, 502, 503 or "
        "504 answer, with backoff and Retry-After up to 10 s; methods that are not "
        "idempotent (POST, PATCH) only when the request never reached the server "
        "(default: %(default)s)",
    )
    output = request.add_argument_group("response")
    output.add_argument(
        "-i",
        "--include",
        action="store_true",
        help="print the status line and the response headers before the body, on stdout",
    )
    tls = request.add_argument_group("TLS of the API (the token endpoint keeps its own)")
    verify = tls.add_mutually_exclusive_group()
    verify.add_argument(
        "--cacert",
        metavar="FILE",
        help="verify the API's certificate with the CA certificates in FILE (PEM) "
        "instead of the default bundle",
    )
    verify.add_argument(
        "-k",
        "--insecure",
        action="store_true",
        help="do not verify the API's certificate (the token is sent all the same: "
        "for test servers only)",
    )

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
    return parser


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
