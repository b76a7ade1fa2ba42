"""Measure 7: the hot path in CPU instructions, counted by valgrind's callgrind.

Wall and CPU time on a shared machine move by several µs between runs, which
is as much as the whole difference between the leanest libraries. An
instruction count does not move: callgrind counts the same total for the same
program and inputs whatever else the machine is doing. Each library runs in a
fresh interpreter under callgrind, which counts only inside the measured loop:
the N cached-token requests are driven by ``itertools.starmap`` (which
requests and the libraries never use), and callgrind collects only within
``starmap_next``. Set-up, imports and warm-up are not counted at all, so the
figure repeats from run to run to within a few dozen instructions per request
(two runs here: at most 77 apart out of ~2.3 million); subtracting a second
run's start-up instead left a spread of several thousand.

Slow (callgrind runs Python some 50x slower), so it runs only when asked for
with ``--only 7``.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any

import requests
from _harness import (
    MEASURES,
    STUB_BASE,
    STUB_URL,
    Column,
    Env,
    Result,
    StaticBearer,
    StubAdapter,
    ratio,
)
from _peers import BY_NAME, CONTENDERS

RUN_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py")
FLOOR = "requests.Session + static auth (floor)"
# alf-session with alf_session.otel.instrument() on (an SDK recording into
# memory when opentelemetry-sdk is installed): the hot path must not notice.
OTEL = "alf-session TokenSession, otel on"
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def instructions_worker(spec: dict[str, Any]) -> None:
    """Set up one library, warm it up, then make ``spec["n"]`` requests (run
    as ``run.py --instructions-worker`` under callgrind)."""
    name = spec["name"]
    if name == OTEL:
        _instrument()
        name = "alf-session TokenSession"
    if name == FLOOR:
        session = requests.Session()
        session.auth = StaticBearer("Bearer " + "x" * 40)
        contender = None
    else:
        contender = BY_NAME[name]
        session = contender.build(spec["token_url"], redis_port=spec["redis_port"])
    session.mount(STUB_BASE, StubAdapter())
    first = contender.call(session, STUB_URL) if contender else session.get(STUB_URL)
    if first.status_code != 200:
        raise SystemExit(f"{name}: first request answered {first.status_code}")
    for _ in range(100):
        session.get(STUB_URL)
    # The measured loop: callgrind collects only inside starmap_next.
    calls = itertools.starmap(session.get, itertools.repeat((STUB_URL,), spec["n"]))
    collections.deque(calls, maxlen=0)


def _instrument() -> None:
    import alf_session.otel

    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:  # the API alone: its no-op providers
        alf_session.otel.instrument()
        return
    alf_session.otel.instrument(
        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
        tracer_provider=TracerProvider(),
    )


def _count(valgrind: str, spec: dict[str, Any]) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0")  # same dict layouts in every run
    done = subprocess.run(
        [
            valgrind,
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            "--collect-atstart=no",
            "--toggle-collect=starmap_next",
            sys.executable,
            RUN_SCRIPT,
            "--instructions-worker",
            json.dumps(spec),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"callgrind run failed: {tail[:100]}")
    return int(found.group(1))


def measure_instructions(env: Env, quick: bool) -> Result:
    n = 100 if quick else 300
    result = Result(
        7,
        MEASURES[7],
        [
            Column("instructions", "instructions / request", lambda x: f"{x:,.0f}"),
            Column("ratio", "x floor", ratio),
            Column("added", "+ over floor", lambda x: f"{x:+,.0f}"),
        ],
    )
    valgrind = shutil.which("valgrind")
    names = [FLOOR] + [c.name for c in CONTENDERS]
    names.insert(names.index("alf-session TokenSession") + 1, OTEL)
    if valgrind is None:
        for name in names:
            result.na(name, "valgrind is not installed (apt-get install valgrind)")
        return result
    per_request: dict[str, float] = {}
    for name in names:
        contender = BY_NAME.get("alf-session TokenSession" if name == OTEL else name)
        why = contender.missing(env) if contender else None
        if name == OTEL and why is None:
            try:
                import opentelemetry.metrics  # noqa: F401
            except ImportError:
                why = "opentelemetry-api is not installed (pip install -e '.[otel]')"
        if why:
            result.na(name, why)
            continue
        spec = {"name": name, "token_url": env.token_url, "redis_port": env.redis_port}
        try:
            per_request[name] = _count(valgrind, {**spec, "n": n}) / n
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            result.na(name, str(exc))
    floor = per_request.get(FLOOR)
    for name in names:
        if name not in per_request:
            continue
        value = per_request[name]
        result.add(
            name,
            instructions=value,
            ratio=None if floor is None else value / floor,
            added=None if floor is None else value - floor,
        )
    result.notes.append(
        f"callgrind instruction counts of {n} cached-token requests, collected only inside "
        "the measured loop (after set-up and 100 warm-up requests); PYTHONHASHSEED=0. Runs "
        "repeat to within a few dozen instructions per request, whatever the machine's load."
    )
    return result
