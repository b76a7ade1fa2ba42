"""alf-session at scale: a gateway of many credentials, a fleet of processes, an outage.

One command; the token server and the API run in a process of their own
(``python benchmarks/scale.py --servers``, started here), a private
``redis-server`` on a free loopback port, and every measured client in fresh
processes::

    pip install -e '.[bench]'
    python benchmarks/scale.py            # full run, about two minutes
    python benchmarks/scale.py --quick    # about 40 seconds
    python benchmarks/scale.py --json scale.json

Measures (see benchmarks/README.rst):

a. a gateway of 1, 100 and 1,000 credentials in one process: threads alive
   and started, file descriptors and memory per credential, sockets kept to
   the token endpoint, first-request latency, and the cost of a cached
   request (and of ``get_token()``) against one credential;
b. a fleet of 8 processes x 4 threads over 20 s of 2 s tokens (token
   endpoint 300 ms): token requests with Redis and without, against one
   process alone;
c. the same fleet with Redis killed at a third and restarted at two thirds:
   failed requests, requests over 250 ms after each thread's first, warnings;
d. the cold path: first request with no storage, Redis and FileStorage.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLIENT_ID = "scale-client"
CLIENT_SECRET = "scale-secret-5b8e"
SLOW_MS = 250.0


# -- the servers' process ------------------------------------------------------------


def serve() -> int:
    """The token server and the API, driven over stdin (``--servers``)."""
    from alf_session._servers import APIServer, TokenServer

    tokens = TokenServer(CLIENT_ID, CLIENT_SECRET, expires_in=3600)
    api = APIServer(tokens)
    with tokens, api:
        print(json.dumps({"token_url": tokens.token_url, "api_url": api.base_url + "/orders"}))
        sys.stdout.flush()
        for line in sys.stdin:
            command, _, value = line.strip().partition(" ")
            if command == "count":
                print(tokens.count, flush=True)
            elif command == "expires_in":
                tokens.expires_in = float(value)
                print("ok", flush=True)
            elif command == "delay":
                tokens.delay = float(value)
                print("ok", flush=True)
            elif command == "quit":
                break
    return 0


class Servers:
    """The servers' process, seen from here."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--servers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.token_url: str = info["token_url"]
        self.api_url: str = info["api_url"]
        self.token_port = int(self.token_url.split(":")[2].split("/")[0])

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def count(self) -> int:
        return int(self.ask("count"))

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(10)


class Redis:
    """A private redis-server on a fixed free port: start, kill, start again."""

    def __init__(self) -> None:
        self.exe = shutil.which("redis-server")
        self.missing = None if self.exe else "redis-server not found on PATH"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.dir = tempfile.mkdtemp(prefix="alf-scale-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.exe is not None
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- counting in a client process ----------------------------------------------------


class ThreadStarts:
    """Counts the threads this library starts (by name), from now on."""

    def __init__(self) -> None:
        self.names: list[str] = []
        original = threading.Thread.start
        names = self.names

        def start(thread: threading.Thread) -> None:
            if thread.name.startswith("alf-session"):
                names.append(thread.name)
            original(thread)

        threading.Thread.start = start  # type: ignore[method-assign]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1


def rss_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return -1
    return pages * os.sysconf("SC_PAGE_SIZE")


def sockets_to(port: int) -> int:
    """Established client connections to ``port`` on this host (Linux /proc)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            return -1
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                if int(fields[1].rsplit(":", 1)[1], 16) != port:
                    count += 1
    return count


def against_one(calls: list[Callable[[], object]], n: int) -> tuple[float, float]:
    """µs per call taking ``calls`` in turn, and its ratio to calling the first alone.

    Both in this process, in interleaved rounds (9, the median ratio): a
    busy machine slows both alike, where runs in separate processes at
    different moments differ by more than what is measured.
    """
    alone_list = [calls[0]] * n  # the same loop over a list for both
    many_list = (calls * (n // len(calls) + 1))[:n]
    ratios, costs = [], []
    for _ in range(9):
        started = time.perf_counter()
        for call in alone_list:
            call()
        alone = time.perf_counter() - started
        started = time.perf_counter()
        for call in many_list:
            call()
        taken = time.perf_counter() - started
        ratios.append(taken / alone)
        costs.append(taken / n)
    return statistics.median(costs) * 1e6, statistics.median(ratios)


# -- (a) the gateway: one process, N credentials ----------------------------------------


def gateway_worker(args: argparse.Namespace) -> dict[str, Any]:
    import gc

    import redis
    import requests
    from _harness import STUB_BASE, STUB_URL, StaticBearer, StubAdapter

    from alf_session import ClientCredentials, TokenManager, TokenSession

    n = args.credentials
    client = redis.Redis.from_url(args.redis, socket_timeout=2, socket_connect_timeout=2)
    client.ping()
    gc.collect()
    threads_before = threading.active_count()
    fds_before, rss_before = open_fds(), rss_bytes()
    starts = ThreadStarts()
    sessions = []
    for i in range(n):
        provider = ClientCredentials(args.token_url, CLIENT_ID, CLIENT_SECRET, scope=f"tenant-{i}")
        session = TokenSession(token_manager=TokenManager(provider, client))
        session.mount(STUB_BASE, StubAdapter())
        sessions.append(session)
    first: list[float] = []
    for session in sessions:
        started = time.perf_counter()
        response = session.get(STUB_URL)
        first.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
    from alf_session._guard import drain_all

    drain_all(10)
    gc.collect()
    fds_after, rss_after = open_fds(), rss_bytes()
    managers = [s.token_manager for s in sessions]

    # The floor: as many plain requests.Sessions with a static header.
    floors = []
    for i in range(n):
        floor = requests.Session()
        floor.auth = StaticBearer(f"Bearer floor-{i}")
        floor.mount(STUB_BASE, StubAdapter())
        floors.append(floor)

    gets = [functools.partial(session.get, STUB_URL) for session in sessions]
    get_us, get_ratio = against_one(gets, max(n, 500))
    _, floor_ratio = against_one(
        [functools.partial(floor.get, STUB_URL) for floor in floors], max(n, 500)
    )
    token_us, token_ratio = against_one([m.get_token for m in managers], max(n, 20000))
    return {
        "credentials": n,
        "threads_alive": threading.active_count() - threads_before,
        "threads_started": len(starts.names),
        "fds_per_credential": (fds_after - fds_before) / n,
        "kib_per_credential": (rss_after - rss_before) / n / 1024,
        "sockets_to_token_endpoint": sockets_to(args.token_port),
        "first_ms_median": statistics.median(first) * 1000,
        "get_us": get_us,
        "get_vs_one": get_ratio,
        "floor_vs_one": floor_ratio,
        "get_token_us": token_us,
        "get_token_vs_one": token_ratio,
    }


# -- (b), (c) the fleet --------------------------------------------------------------


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def fleet_worker(args: argparse.Namespace) -> dict[str, Any]:
    from alf_session import ClientCredentials, TokenManager, TokenSession, storage_from_url

    warnings = _Warnings()
    logging.getLogger("alf_session").addHandler(warnings)
    provider = ClientCredentials(args.token_url, CLIENT_ID, CLIENT_SECRET)
    storage = storage_from_url(args.redis) if args.redis else None
    manager = TokenManager(provider, storage)
    session = TokenSession(token_manager=manager)
    starts = ThreadStarts()
    latencies: list[list[float]] = [[] for _ in range(args.threads)]
    failures: list[str] = []
    go = threading.Event()

    def work(mine: list[float]) -> None:
        go.wait()
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                status = session.get(args.api_url, timeout=30).status_code
            except Exception as exc:
                failures.append(type(exc).__name__)
            else:
                if status != 200:
                    failures.append(f"HTTP {status}")
            mine.append(time.perf_counter() - started)
            time.sleep(0.02)

    threads = [threading.Thread(target=work, args=(mine,)) for mine in latencies]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    sys.stdin.readline()
    go.set()
    for thread in threads:
        thread.join()
    later = [x for mine in latencies for x in mine[1:]]  # after each thread's first
    stats = manager.stats
    return {
        "requests": sum(len(m) for m in latencies),
        "failed": len(failures),
        "slow_after_first": sum(1 for x in later if x * 1000 > SLOW_MS),
        "max_after_first_ms": max(later, default=0.0) * 1000,
        "threads_started": len(starts.names),
        "refreshes": stats.refreshes,
        "fetches": stats.fetches,
        "storage_errors": stats.storage_errors,
        "warnings": warnings.count,
    }


def run_fleet(
    servers: Servers,
    processes: int,
    threads: int,
    seconds: float,
    redis_url: str | None,
    outage: Redis | None = None,
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--fleet-worker", "--token-url", servers.token_url,
               "--api-url", servers.api_url, "--threads", str(threads),
               "--seconds", str(seconds)]  # fmt: skip
    if redis_url:
        command += ["--redis", redis_url]
    before = servers.count()
    workers = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    if outage is not None:
        time.sleep(seconds / 3)
        outage.kill()
        time.sleep(seconds / 3)
        outage.start()
    reports = []
    for worker in workers:
        out, _ = worker.communicate(timeout=seconds + 120)
        reports.append(json.loads(out.strip().splitlines()[-1]))
    total = {key: sum(r[key] for r in reports) for key in reports[0] if key != "max_after_first_ms"}
    total["max_after_first_ms"] = max(r["max_after_first_ms"] for r in reports)
    total["token_requests"] = servers.count() - before
    total["warnings_per_process"] = sorted({r["warnings"] for r in reports})
    return total


# -- (d) the cold path -----------------------------------------------------------------


def cold_worker(args: argparse.Namespace) -> dict[str, Any]:
    from _harness import STUB_BASE, STUB_URL, StubAdapter

    from alf_session import ClientCredentials, TokenManager, TokenSession, storage_from_url
    from alf_session._guard import drain_all

    stores: dict[str, Any] = {
        "none": None,
        "redis": storage_from_url(args.redis),
        "file": storage_from_url(Path(tempfile.mkdtemp(prefix="alf-scale-")).as_uri()),
    }
    times: dict[str, list[float]] = {name: [] for name in stores}
    for i in range(args.credentials):
        for name, storage in stores.items():  # interleaved: same conditions for each
            provider = ClientCredentials(
                args.token_url, CLIENT_ID, CLIENT_SECRET, scope=f"cold-{name}-{i}"
            )
            session = TokenSession(token_manager=TokenManager(provider, storage))
            session.mount(STUB_BASE, StubAdapter())
            started = time.perf_counter()
            assert session.get(STUB_URL).status_code == 200
            times[name].append(time.perf_counter() - started)
            drain_all(5)  # the queued writes are not the next credential's cost
    rows = []
    for name, values in times.items():
        values.sort()
        rows.append(
            {
                "store": name,
                "median_ms": statistics.median(values) * 1000,
                "p90_ms": values[int(len(values) * 0.9)] * 1000,
            }
        )
    return {"rows": rows}


# -- driving it all ------------------------------------------------------------------------


def in_process(mode: str, servers: Servers, **options: Any) -> dict[str, Any]:
    command = [sys.executable, __file__, mode, "--token-url", servers.token_url,
               "--api-url", servers.api_url, "--token-port", str(servers.token_port)]  # fmt: skip
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@contextmanager
def environment() -> Iterator[tuple[Servers, Redis]]:
    servers = Servers()
    redis = Redis()
    try:
        if redis.missing is None:
            redis.start()
        yield servers, redis
    finally:
        redis.close()
        servers.close()


def table(title: str, headers: list[str], rows: list[list[str]], notes: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [f"== {title} =="]
    lines.append(
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    lines += [f"  {note}" for note in notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--only", default="abcd", help="measures to run, such as 'bc'")
    parser.add_argument("--servers", action="store_true", help=argparse.SUPPRESS)
    for mode in ("--gateway-worker", "--fleet-worker", "--cold-worker"):
        parser.add_argument(mode, action="store_true", help=argparse.SUPPRESS)
    for name in ("--token-url", "--api-url", "--redis", "--store"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    for name in ("--token-port", "--credentials", "--threads"):
        parser.add_argument(name, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    if args.servers:
        return serve()
    for flag, worker in (
        (args.gateway_worker, gateway_worker),
        (args.fleet_worker, fleet_worker),
        (args.cold_worker, cold_worker),
    ):
        if flag:
            print(json.dumps(worker(args)), flush=True)
            return 0

    results: dict[str, Any] = {}
    fleet_seconds = 8.0 if args.quick else 20.0
    with environment() as (servers, redis):
        if redis.missing:
            print(f"n/a: {redis.missing}")
            return 1
        print(f"alf-session scale benchmark ({'quick' if args.quick else 'full'} run), "
              f"{os.cpu_count()} cores, Python {sys.version.split()[0]}\n")  # fmt: skip

        if "a" in args.only:
            measure_gateway(servers, redis, results)
        if "b" in args.only:
            measure_fleet(servers, redis, results, fleet_seconds)
        if "c" in args.only:
            measure_outage(servers, redis, results, fleet_seconds)
        if "d" in args.only:
            measure_cold(servers, redis, results, 30 if args.quick else 100)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def measure_gateway(servers: Servers, redis: Redis, results: dict[str, Any]) -> None:
    sizes = (1, 100, 1000)
    gateway = [
        in_process("--gateway-worker", servers, credentials=n, redis=redis.url) for n in sizes
    ]
    results["gateway"] = gateway
    rows = [
        [str(g["credentials"]), str(g["threads_alive"]), str(g["threads_started"]),
         f"{g['fds_per_credential']:.3f}", f"{g['kib_per_credential']:.1f}",
         str(g["sockets_to_token_endpoint"]), f"{g['first_ms_median']:.2f}",
         f"{g['get_us']:.1f}", f"{g['get_vs_one']:.3f}x", f"{g['floor_vs_one']:.3f}x",
         f"{g['get_token_us']:.2f}", f"{g['get_token_vs_one']:.3f}x"]
        for g in gateway
    ]  # fmt: skip
    print(table(
        "a. A gateway: N credentials in one process, one Redis client",
        ["creds", "threads alive", "started", "fds/cred", "KiB/cred", "sockets to IdP",
         "1st req ms", "get µs", "vs 1", "floor vs 1", "get_token µs", "vs 1"],
        rows,
        ["threads alive/started: this library's, after every credential's first request;",
         "sockets to IdP: connections to the token endpoint left open after the fetches;",
         "1st req: the first session.get() (token request, Redis read, lock, read);",
         "get: session.get() with a cached token through a stub transport, the N sessions",
         "taken in turn; vs 1: against the first session alone, in the same process,",
         "interleaved rounds, median; floor: the same ratio for N plain requests.Sessions",
         "with a static header; get_token: the same for manager.get_token() alone."],
    ) + "\n")  # fmt: skip


FLEET_HEADERS = ["run", "token reqs", "requests", "failed", f">{SLOW_MS:.0f}ms", "max ms",
                 "threads started", "refreshes", "storage errors"]  # fmt: skip


def fleet_row(name: str, r: dict[str, Any]) -> list[str]:
    keys = ("token_requests", "requests", "failed", "slow_after_first")
    counts = [str(r[k]) for k in keys]
    rest = [str(r[k]) for k in ("threads_started", "refreshes", "storage_errors")]
    return [name, *counts, f"{r['max_after_first_ms']:.0f}", *rest]


def measure_fleet(
    servers: Servers, redis: Redis, results: dict[str, Any], fleet_seconds: float
) -> None:
    servers.ask("expires_in 2")
    servers.ask("delay 0.3")
    alone = run_fleet(servers, 1, 4, fleet_seconds, None)
    without = run_fleet(servers, 8, 4, fleet_seconds, None)
    with_redis = run_fleet(servers, 8, 4, fleet_seconds, redis.url)
    results["fleet"] = {"alone": alone, "without_storage": without, "redis": with_redis}

    headers = FLEET_HEADERS
    print(table(
        f"b. A fleet: 8 processes x 4 threads, {fleet_seconds:g} s of 2 s tokens, "
        "token endpoint 300 ms",
        headers,
        [fleet_row("1 process alone", alone), fleet_row("8 x 4, no storage", without),
         fleet_row("8 x 4, Redis", with_redis)],
        [f">{SLOW_MS:.0f}ms and max: requests after each thread's first;",
         "threads started: this library's, summed over the processes (refresh threads",
         "and storage workers)."],
    ) + "\n")  # fmt: skip


def measure_outage(
    servers: Servers, redis: Redis, results: dict[str, Any], fleet_seconds: float
) -> None:
    servers.ask("expires_in 2")
    servers.ask("delay 0.3")
    outage = run_fleet(servers, 8, 4, fleet_seconds, redis.url, outage=redis)
    results["outage"] = outage
    print(table(
        f"c. The same fleet, Redis killed at {fleet_seconds / 3:g} s and restarted at "
        f"{2 * fleet_seconds / 3:g} s",
        [*FLEET_HEADERS, "warnings/process"],
        [[*fleet_row("8 x 4, Redis down a third", outage),
          "/".join(map(str, outage["warnings_per_process"]))]],
        ["warnings/process: the distinct counts of WARNING records one process logged."],
    ) + "\n")  # fmt: skip


def measure_cold(servers: Servers, redis: Redis, results: dict[str, Any], n: int) -> None:
    servers.ask("delay 0")
    servers.ask("expires_in 3600")
    cold = in_process("--cold-worker", servers, credentials=n, redis=redis.url)["rows"]
    results["cold"] = cold
    base = cold[0]["median_ms"]
    print(table(
        f"d. The cold path: first request of {n} fresh credentials",
        ["storage", "median ms", "p90 ms", "median vs none"],
        [[c["store"], f"{c['median_ms']:.2f}", f"{c['p90_ms']:.2f}",
          f"{c['median_ms'] - base:+.2f} ms"] for c in cold],
        ["a token request, the storage's read, lock, read (its write and lock release",
         "are off the request path), then the request through a stub transport."],
    ))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
