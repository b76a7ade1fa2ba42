"""alf-session against plain requests and the libraries people would otherwise use.

One command, everything on loopback: a token server and an API (the project's
own ``alf_session._servers``), a private ``redis-server`` on a free port, and
the peers from the ``bench`` extra. It installs nothing::

    pip install -e '.[bench]'
    pip install --no-deps oauth-token-cache   # it pins redis<4; works with redis-py 5+
    python benchmarks/run.py                 # full run, under 5 minutes
    python benchmarks/run.py --quick         # under a minute
    python benchmarks/run.py --only 2,3,5 --json results.json

Measures (see benchmarks/README.rst for what each one means):

1. hot path: CPU and wall time of one ``get`` with a cached token, through a
   stub transport adapter (no network), against a ``requests.Session``
   whose ``auth`` sets the same static header (the floor);
2. storage round trips per request with a cached token and a shared Redis;
3. thundering herd: token requests when 32 threads start cold, and when
   4 processes x 8 threads start cold on one shared store;
4. expiry stall: 8 threads looping over several 2 s token lifetimes while
   the token endpoint takes 300 ms to answer;
5. recovery from a 401 after the server revoked the token;
6. ``import`` time against ``import requests``;
8. async hot path: one awaited ``get`` through ``httpx.MockTransport``,
   against ``httpx.AsyncClient`` with a static header (the floor);
9. async herd: 200 tasks start cold while the token endpoint takes 300 ms;
10. async expiry stall: 8 tasks over several 2 s token lifetimes.

Timings are medians of interleaved rounds; counts are exact. Nothing here is
a test: the one test that runs this script (tests/test_benchmarks.py) checks
only alf-session's counts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from typing import Any

from _async_measures import measure_async_herd, measure_async_hot_path, measure_async_stall
from _harness import (
    CLIENT_ID,
    CLIENT_SECRET,
    BenchAPIServer,
    BenchTokenServer,
    Env,
    PrivateRedis,
    Result,
)
from _hot_path import measure_hot_path
from _imports import measure_imports
from _instructions import instructions_worker, measure_instructions
from _peers import CONTENDERS
from _renewal import measure_recovery, measure_stall
from _sharing import herd_worker, measure_herd, measure_round_trips

import alf_session

RUNNERS: dict[int, Callable[[Env, bool], Result]] = {
    1: measure_hot_path,
    2: measure_round_trips,
    3: measure_herd,
    4: measure_stall,
    5: measure_recovery,
    6: measure_imports,
    7: measure_instructions,
    8: measure_async_hot_path,
    9: measure_async_herd,
    10: measure_async_stall,
}
# Slow (minutes under valgrind): run only when named in --only.
OPT_IN = {7}


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(env: Env) -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "alf-session": alf_session.__version__,
        "requests": version("requests"),
        "urllib3": version("urllib3"),
        "redis-py": version("redis"),
        "redis-server": env.redis.version if not env.redis.missing else env.redis.missing,
        "peers": {c.dist: version(c.dist) for c in CONTENDERS if c.dist != "alf-session"}
        | {"oauthlib": version("oauthlib")}
        | {dist: version(dist) for dist in ("httpx", "aiohttp", "httpx-auth")},
    }


def print_header(info: dict[str, Any], quick: bool, only: Iterable[int]) -> None:
    kind = "quick" if quick else "full"
    print(f"alf-session benchmark ({kind} run; measures {','.join(map(str, only))})")
    print(
        f"machine: {info['platform']} {info['processor']}, {info['cores']} cores "
        f"({info['usable_cores']} usable), {info['python']}"
    )
    print(
        f"alf-session {info['alf-session']}, requests {info['requests']}, "
        f"urllib3 {info['urllib3']}, redis-py {info['redis-py']}, "
        f"redis-server {info['redis-server']}"
    )
    print("peers: " + ", ".join(f"{k} {v}" for k, v in info["peers"].items()))
    for contender in CONTENDERS:
        if contender.glue:
            print(f"  {contender.name}: plus user code: {contender.glue}")
    print()


def parse_only(text: str) -> list[int]:
    try:
        numbers = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--only takes numbers like 2,3,5; not {text!r}") from None
    unknown = [n for n in numbers if n not in RUNNERS]
    if unknown or not numbers:
        raise argparse.ArgumentTypeError(f"measures are 1-10; not {text!r}")
    return numbers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds: under a minute")
    parser.add_argument(
        "--only",
        type=parse_only,
        default=sorted(set(RUNNERS) - OPT_IN),
        help="e.g. 2,3,5; 7 (callgrind instruction counts, several minutes) runs only if named",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--herd-worker", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--instructions-worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.herd_worker:
        herd_worker(json.loads(args.herd_worker))
        return 0
    if args.instructions_worker:
        instructions_worker(json.loads(args.instructions_worker))
        return 0
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")

    started = time.perf_counter()
    tokens = BenchTokenServer(CLIENT_ID, CLIENT_SECRET)
    api = BenchAPIServer(tokens)
    redis_server = PrivateRedis()
    tmpdir = tempfile.mkdtemp(prefix="alf-bench-")
    results: list[Result] = []
    try:
        tokens.start()
        api.start()
        if set(args.only) != {6}:
            redis_server.start()
        env = Env(tokens, api, redis_server, tmpdir)
        info = machine_info(env)
        print_header(info, args.quick, args.only)
        for number in args.only:
            measure_started = time.perf_counter()
            result = RUNNERS[number](env, args.quick)
            result.seconds = round(time.perf_counter() - measure_started, 1)
            results.append(result)
            print(result.render(), flush=True)
            print()
    finally:
        api.stop()
        tokens.stop()
        redis_server.stop()
        shutil.rmtree(tmpdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print(f"done in {elapsed:.1f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(
                {
                    "machine": info,
                    "quick": args.quick,
                    "seconds": round(elapsed, 1),
                    "measures": {str(r.number): r.to_json() for r in results},
                },
                out,
                indent=2,
                default=str,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
