"""What every measure stands on: loopback servers, a private Redis, the stub
transport, the floor, and the result tables."""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

import alf_session
from alf_session._servers import APIServer, TokenServer

CLIENT_ID = "bench-client"

CLIENT_SECRET = "bench-secret"

AUDIENCE = "https://api.bench.test"  # oauth-token-cache needs one (Auth0 style)

STUB_BASE = "https://api.bench.test/"  # served by StubAdapter, never by the network

STUB_URL = STUB_BASE + "orders"

SLOW_MS = 250.0

MEASURES = {
    1: "Hot path: one get with a cached token (stub transport, no network)",
    2: "Storage round trips per request, cached token, shared Redis",
    3: "Thundering herd: token requests at a cold start",
    4: "Expiry stall: 8 threads over several 2 s token lifetimes, token endpoint 300 ms",
    5: "401 recovery after the server revoked the token",
    6: "Import time (fresh interpreter)",
    7: "Hot path in CPU instructions (callgrind; only with --only 7)",
    8: "Async hot path: one awaited get with a cached token (httpx mock transport)",
    9: "Async herd: 200 tasks start cold, token endpoint 300 ms",
    10: "Async expiry stall: 8 tasks over several 2 s token lifetimes, token endpoint 300 ms",
}


class StubAdapter(HTTPAdapter):
    """A transport that answers every request at once with a canned 200.

    It answers 401 when the request carries no ``Authorization`` header, so a
    library that forgot the token shows up as failing, not as fast.
    """

    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        response = requests.Response()
        ok = "Authorization" in request.headers
        response.status_code = 200 if ok else 401
        response.reason = "OK" if ok else "Unauthorized"
        response.headers = CaseInsensitiveDict(
            {"Content-Type": "application/json", "Content-Length": "2"}
        )
        response._content = b"{}"
        response.encoding = "utf-8"
        response.url = request.url or ""
        response.request = request
        response.connection = self
        return response


class StaticBearer(requests.auth.AuthBase):
    """The floor: a static ``Authorization`` header, set through ``session.auth``."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self.value
        return request


class StubTokenAdapter(alf_session.TokenAdapter, StubAdapter):
    """alf-session's TokenAdapter over the stub transport."""


class _Backlog(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _Quick:
    """Loopback servers tuned like a real one: a listen backlog that takes 32
    simultaneous connections (socketserver's is 5: the rest are reset), and
    no Nagle delay (headers and body are written apart, and Nagle with the
    client's delayed ACK adds 40 ms to every keep-alive response)."""

    def start(self, port: int = 0) -> None:
        base = self._handler()  # type: ignore[attr-defined]

        class Handler(base):  # type: ignore[misc, valid-type]
            disable_nagle_algorithm = True

        self._httpd = _Backlog(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()


class BenchAPIServer(_Quick, APIServer):
    """The project's API server (tokens checked against the token server)."""


class BenchTokenServer(_Quick, TokenServer):
    """The project's token server, also reading JSON request bodies.

    oauth-token-cache posts its client credentials as JSON (Auth0 style)
    rather than as the RFC 6749 form.
    """

    def _handler(self) -> Any:
        base = super()._handler()

        class Handler(base):  # type: ignore[misc, valid-type]
            def _body(self) -> bytes:
                raw: bytes = super()._body()
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    with suppress(ValueError):
                        return urlencode(json.loads(raw)).encode()
                return raw

        return Handler


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of our own on a free loopback port, with no persistence."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.missing: str | None = None
        self.version = "-"
        self._admin: Any = None
        self._dir = tempfile.mkdtemp(prefix="alf-bench-redis-")

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            self.missing = "redis-server not found on PATH"
            return
        try:
            import redis
        except ImportError:
            self.missing = "redis-py not installed"
            return
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
        self.version = next(
            (w[2:] for w in out.stdout.split() if w.startswith("v=")), out.stdout.strip()
        )
        for _ in range(5):
            port = free_port()
            self.proc = subprocess.Popen(
                [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self._dir],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                with suppress(redis.ConnectionError):
                    if redis.Redis(host="127.0.0.1", port=port).ping():
                        self.port = port
                        return
                time.sleep(0.02)
            self.stop()
        self.missing = "redis-server did not start"

    def client(self, **kwargs: Any) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def flush(self) -> None:
        if self.port is not None:
            self.client().flushdb()

    def command_counts(self) -> dict[str, int]:
        """Calls per command so far, without the INFO calls that read them.

        One admin connection, opened once: a new one would count its handshake.
        """
        if self._admin is None:
            self._admin = self.client()
        stats = self._admin.info("commandstats")
        return {
            name[len("cmdstat_") :]: int(values["calls"])
            for name, values in stats.items()
            if name != "cmdstat_info"
        }

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
        shutil.rmtree(self._dir, ignore_errors=True)


@dataclass
class Env:
    tokens: TokenServer
    api: APIServer
    redis: PrivateRedis
    tmpdir: str

    @property
    def token_url(self) -> str:
        return self.tokens.token_url

    @property
    def redis_port(self) -> int | None:
        return self.redis.port


@dataclass
class Column:
    key: str
    header: str
    fmt: Callable[[Any], str] = str


@dataclass
class Result:
    number: int
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, library: str, **values: Any) -> None:
        self.rows.append({"library": library, **values})

    def na(self, library: str, why: str) -> None:
        self.rows.append({"library": library, "na": why})

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "rows": self.rows,
            "notes": self.notes,
            "seconds": self.seconds,
        }

    def render(self) -> str:
        headers = ["library"] + [c.header for c in self.columns]
        body: list[list[str]] = []
        for row in self.rows:
            if row.get("na"):
                body.append([row["library"], f"n/a: {row['na']}"])
            else:
                body.append(
                    [row["library"]]
                    + ["-" if row.get(c.key) is None else c.fmt(row[c.key]) for c in self.columns]
                )
        widths = [len(h) for h in headers]
        for line in body:
            if len(line) == len(headers):
                widths = [max(w, len(cell)) for w, cell in zip(widths, line, strict=True)]
            else:
                widths[0] = max(widths[0], len(line[0]))
        out = [f"== {self.number}. {self.title} =="]

        def fmt_line(cells: Sequence[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=False)]
            return "  ".join([first, *rest]).rstrip()

        out.append(fmt_line(headers))
        out.append("  ".join("-" * w for w in widths))
        for line in body:
            if len(line) == len(headers):
                out.append(fmt_line(line))
            else:
                out.append(f"{line[0].ljust(widths[0])}  {line[1]}")
        out.extend(f"  {note}" for note in self.notes)
        out.append(f"  ({self.seconds:g} s)")
        return "\n".join(out)


def f1(x: float) -> str:
    return f"{x:.1f}"


def f2(x: float) -> str:
    return f"{x:.2f}"


def ratio(x: float) -> str:
    return f"{x:.3f}x"


def plus(x: float) -> str:
    return f"{x:+.1f}"


def median_ci(values: Sequence[float]) -> float:
    """Half-width of a distribution-free 95% confidence interval of the median."""
    ordered = sorted(values)
    n = len(ordered)
    if n < 6:
        return float("nan")
    half = 1.96 * n**0.5 / 2
    lo, hi = max(0, int(n / 2 - half)), min(n - 1, int(n / 2 + half + 0.5))
    return (ordered[hi] - ordered[lo]) / 2


def spread(values: Sequence[float]) -> str:
    med = statistics.median(values)
    text = f"{med:g}"
    if len(values) > 1 and min(values) != max(values):
        text += f" ({min(values):g}-{max(values):g})"
    return text


def _run_threads(n: int, target: Callable[[int], None], timeout: float = 60) -> None:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]
