"""Measure 6: ``import`` time in fresh interpreters, against ``import requests``."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile

from _harness import MEASURES, Column, Env, Result, f1, ratio

import alf_session

IMPORTS = [
    ("requests", "requests", "requests"),
    ("alf-session", "alf_session", "alf-session"),
    ("alf", "alf.client", "alf"),
    ("oauth-token-cache", "oauth_token_cache", "oauth-token-cache"),
    ("requests-oauthlib", "requests_oauthlib", "requests-oauthlib"),
    ("authlib", "authlib.integrations.requests_client", "authlib"),
    ("requests-oauth2client", "requests_oauth2client", "requests-oauth2client"),
    ("requests-auth", "requests_auth", "requests-auth"),
]


# Paired in one interpreter: requests first, then the library on top of it.
# Fresh interpreters differ from each other by more than a library's whole
# import (disk cache, CPU frequency, a neighbour's load); within one process
# both parts see the same conditions, so their ratio is stable.
_IMPORT_PROBE = (
    "import time; t0 = time.perf_counter(); import requests; t1 = time.perf_counter(); "
    "import {module}; t2 = time.perf_counter(); print(t1 - t0, t2 - t0)"
)


def _import_env() -> dict[str, str]:
    """The probes' environment: as after a wheel install, for every module alike.

    Bytecode is written and reused (PYTHONDONTWRITEBYTECODE would have every
    run compile alf_session's sources, while pip has compiled the peers'), and
    alf_session is found on sys.path rather than through the editable-install
    finder, which scans sys.path first and is absent from a wheel install.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(alf_session.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    return env


def import_once(module: str, env: dict[str, str]) -> tuple[float, float]:
    """(ms for requests, ms for requests and then ``module``) in one fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE.format(module=module)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tempfile.gettempdir(),
        env=env,
    )
    first, both = out.stdout.strip().splitlines()[-1].split()
    return float(first) * 1000, float(both) * 1000


def measure_imports(env: Env, quick: bool) -> Result:
    runs = 3 if quick else 15
    result = Result(
        6,
        MEASURES[6],
        [Column("ms", "median ms", f1), Column("ratio", "x requests", ratio)],
    )
    times: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    problems: dict[str, str] = {}
    env = _import_env()
    for _, module, _ in IMPORTS:
        try:
            import_once(module, env)  # warm the OS file cache and the .pyc files
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError) as exc:
            problems[module] = f"cannot import ({type(exc).__name__})"
    for _ in range(runs):
        for _, module, _ in IMPORTS:
            if module not in problems:
                first, both = import_once(module, env)
                times.setdefault(module, []).append(both)
                ratios.setdefault(module, []).append(both / first)
    for label, module, _ in IMPORTS:
        name = f"import {module}" if label in ("requests", "alf-session") else f"{label} ({module})"
        if module in problems:
            result.na(name, problems[module])
            continue
        result.add(
            name, ms=statistics.median(times[module]), ratio=statistics.median(ratios[module])
        )
    result.notes += [
        f"median of {runs} interleaved fresh interpreters, each importing requests and then",
        "the library: ms = both together; x requests = median of (both / requests alone)",
        "within each interpreter, so that differences between interpreters cancel out.",
        "Bytecode cached, alf_session on sys.path as from a wheel. Target: <= 1.1x.",
    ]
    return result
