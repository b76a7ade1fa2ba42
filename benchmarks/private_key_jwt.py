"""Cold token request with private_key_jwt: alf-session against Authlib and requests-oauth2client.

    pip install -e ".[bench,jwt]"
    python benchmarks/private_key_jwt.py [--rounds 200] [--json FILE]

Each round builds a client from scratch from the same RSA-2048 key in PEM
(as read from a file or a secret store) and fetches one token (cold: the
key is loaded and checked, which costs the most), then a second one with
the same client (warm: a new signed assertion and a token request), with
client credentials and ``private_key_jwt``, from the same loopback token
server, which verifies every assertion (signature,
iss/sub/aud/exp, a ``jti`` never seen before) as the tests' server does.
The three libraries take turns round by round, so drift hits all alike.
Reported: the median and 90th percentile in milliseconds, and the signing
cost alone (one assertion, no network). The token server's own work is in
every figure; the differences between rows are the libraries'.

No timing is asserted anywhere; tests/test_benchmarks.py does not run this.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from alf_session import ClientCredentials, TokenManager
from alf_session._servers import TokenServer

CLIENT_ID = "bench-client"
os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")  # loopback http


# Each builder returns a function that makes one token request with the
# client it built: called once for the cold figure, again for the warm one.


def alf_session_client(url: str, pem: bytes) -> Callable[[], str]:
    manager = TokenManager(ClientCredentials(url, CLIENT_ID, private_key=pem))
    return lambda: manager.force_refresh().access_token


def authlib_client(url: str, pem: bytes) -> Callable[[], str]:
    from authlib.integrations.requests_client import OAuth2Session
    from authlib.oauth2.rfc7523 import PrivateKeyJWT

    session = OAuth2Session(CLIENT_ID, pem, token_endpoint_auth_method="private_key_jwt")
    session.register_client_auth_method(PrivateKeyJWT(url))
    return lambda: str(session.fetch_token(url, grant_type="client_credentials")["access_token"])


def oauth2client_client(url: str, pem: bytes) -> Callable[[], str]:
    from jwskate import Jwk
    from requests_oauth2client import OAuth2Client, PrivateKeyJwt

    jwk = Jwk.from_pem(pem).with_kid_thumbprint()
    # testing=True: its way of allowing http://, which is all loopback offers here.
    client = OAuth2Client(url, auth=PrivateKeyJwt(CLIENT_ID, jwk, alg="RS256"), testing=True)
    return lambda: str(client.client_credentials().access_token)


CONTENDERS: dict[str, tuple[str, Callable[[str, bytes], Callable[[], str]]]] = {
    "alf-session ClientCredentials(private_key=)": ("alf-session", alf_session_client),
    "Authlib OAuth2Session + PrivateKeyJWT": ("authlib", authlib_client),
    "requests-oauth2client PrivateKeyJwt": ("requests-oauth2client", oauth2client_client),
}


def signing_cost(key: Any, url: str, rounds: int) -> float:
    """Milliseconds to sign one assertion with alf-session's client authentication."""
    from alf_session.client_auth import AuthContext, PrivateKeyJwt

    method = PrivateKeyJwt(key)
    start = time.perf_counter()
    for _ in range(rounds):
        method.apply({}, {}, AuthContext(CLIENT_ID, url, time.time()))
    return (time.perf_counter() - start) / rounds * 1000


def _stats(data: list[float]) -> tuple[float, float]:
    ordered = sorted(data)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.9) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    server = TokenServer(CLIENT_ID, client_keys={CLIENT_ID: key.public_key()})
    server.max_assertion_lifetime = 3600  # Authlib signs assertions for an hour
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    warm: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    missing: dict[str, str] = {}
    with server:
        url = server.token_url
        for name, (_, build) in CONTENDERS.items():
            try:
                token = build(url, pem)()  # warm-up: imports, first connection
                assert server.check(token) is None, server.refusals
            except Exception as exc:
                missing[name] = f"{type(exc).__name__}: {exc}"[:120]
        for _ in range(args.rounds):
            for name, (_, build) in CONTENDERS.items():
                if name in missing:
                    continue
                start = time.perf_counter()
                fetch = build(url, pem)
                fetch()
                middle = time.perf_counter()
                fetch()
                times[name].append((middle - start) * 1000)
                warm[name].append((time.perf_counter() - middle) * 1000)
        refused = list(server.refusals)
        sign_ms = signing_cost(key, url, 200)

    print(f"Cold token request, private_key_jwt (RS256, 2048-bit), {args.rounds} rounds")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, loopback, same server")
    print(f"{'':58}{'cold (build + 1st)':>19}  {'warm (2nd request)':>18}")
    print(f"{'library':48} {'version':>9} {'median ms':>10} {'p90 ms':>8} {'median':>9} {'p90':>8}")
    results: dict[str, Any] = {}
    for name, (dist, _) in CONTENDERS.items():
        try:
            ver = version(dist)
        except Exception:
            ver = "-"
        if name in missing:
            print(f"{name:48} {ver:>9}   n/a: {missing[name]}")
            results[name] = {"version": ver, "na": missing[name]}
            continue
        median, p90 = _stats(times[name])
        warm_median, warm_p90 = _stats(warm[name])
        print(f"{name:48} {ver:>9} {median:10.2f} {p90:8.2f} {warm_median:9.2f} {warm_p90:8.2f}")
        results[name] = {
            "version": ver,
            "cold_median_ms": round(median, 3),
            "cold_p90_ms": round(p90, 3),
            "warm_median_ms": round(warm_median, 3),
            "warm_p90_ms": round(warm_p90, 3),
        }
    print(f"signing one assertion (alf-session, PyJWT): {sign_ms:.3f} ms")
    print(f"assertions refused by the server: {len(refused)}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rounds": args.rounds, "rows": results, "sign_ms": sign_ms}, fh, indent=2)
    return 0 if not refused else 1


if __name__ == "__main__":
    sys.exit(main())
