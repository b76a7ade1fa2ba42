"""Measures 4 and 5: requests across token expiry, and recovery from a revoked token."""

from __future__ import annotations

import threading
import time
from typing import Any

from _harness import MEASURES, SLOW_MS, Column, Env, Result, _run_threads, f1, f2, percentile
from _peers import CONTENDERS, Contender


def stall_run(
    contender: Contender, env: Env, duration: float, threads: int = 8
) -> tuple[list[float], int, int]:
    """Latencies (ms), failed calls and token requests over ``duration`` seconds."""
    env.redis.flush()
    session = contender.build(env.token_url, redis_port=env.redis_port, short=True)
    url = env.api.base_url + "/orders"
    contender.call(session, url, timeout=30)  # the cold start is measure 3's business
    latencies: list[float] = []
    failed = [0]
    lock = threading.Lock()
    before = env.tokens.count
    deadline = time.perf_counter() + duration

    def work(_: int) -> None:
        mine: list[float] = []
        bad = 0
        while True:
            start = time.perf_counter()
            if start >= deadline:
                break
            try:
                response = contender.call(session, url, timeout=30)
                ok = response.status_code == 200
            except Exception:
                ok = False
            mine.append((time.perf_counter() - start) * 1000)
            bad += not ok
        with lock:
            latencies.extend(mine)
            failed[0] += bad

    _run_threads(threads, work, timeout=duration + 60)
    session.close()
    return latencies, failed[0], env.tokens.count - before


def measure_stall(env: Env, quick: bool) -> Result:
    rounds, duration = (1, 2.2) if quick else (2, 4.0)
    result = Result(
        4,
        MEASURES[4],
        [
            Column("requests", "requests", str),
            Column("p50_ms", "p50 ms", f2),
            Column("p99_ms", "p99 ms", f1),
            Column("max_ms", "max ms", f1),
            Column("slow", f"> {SLOW_MS:g} ms", str),
            Column("failed", "failed", str),
            Column("token_requests", "token reqs", str),
        ],
    )
    saved = env.tokens.expires_in, env.tokens.delay
    env.tokens.expires_in, env.tokens.delay = 2, 0.3
    data: dict[str, tuple[list[float], int, int]] = {}
    problems: dict[str, str] = {}
    try:
        for _ in range(rounds):
            for contender in CONTENDERS:
                name = contender.name
                why = problems.get(name) or contender.missing(env)
                if why:
                    problems[name] = why
                    continue
                try:
                    lat, bad, fetched = stall_run(contender, env, duration)
                except Exception as exc:
                    problems[name] = f"{type(exc).__name__}: {exc}"[:120]
                    continue
                old = data.get(name, ([], 0, 0))
                data[name] = (old[0] + lat, old[1] + bad, old[2] + fetched)
                with env.api._lock:
                    env.api.seen.clear()
    finally:
        env.tokens.expires_in, env.tokens.delay = saved
    for contender in CONTENDERS:
        name = contender.name
        if name in problems:
            result.na(name, problems[name])
            continue
        lat, bad, fetched = data[name]
        ordered = sorted(lat)
        result.add(
            name,
            requests=len(ordered),
            p50_ms=percentile(ordered, 0.5),
            p99_ms=percentile(ordered, 0.99),
            max_ms=ordered[-1] if ordered else float("nan"),
            slow=sum(1 for x in ordered if x > SLOW_MS),
            failed=bad,
            token_requests=fetched,
        )
    lifetimes = rounds * duration / 2
    result.notes += [
        f"{rounds} x {duration:g} s per library ({lifetimes:g} token lifetimes), real API on "
        "loopback;",
        "latencies pooled over all requests. 'failed': not 200 (e.g. a 401 for a token",
        "that expired in flight) or raised. Peers' leeway is set to fit 2 s tokens (README).",
    ]
    return result


def measure_recovery(env: Env, quick: bool) -> Result:
    rounds = 1 if quick else 3
    result = Result(
        5,
        MEASURES[5],
        [
            Column("transparent", "transparent", lambda x: "yes" if x else "no"),
            Column("status", "status", str),
            Column("api_calls", "API calls", str),
            Column("token_requests", "token reqs", str),
            Column("next_status", "next call", str),
        ],
    )
    url = env.api.base_url + "/orders"
    for contender in CONTENDERS:
        why = contender.missing(env)
        if why:
            result.na(contender.name, why)
            continue
        runs = []
        try:
            for _ in range(rounds):
                env.redis.flush()
                session = contender.build(env.token_url, redis_port=env.redis_port)
                first = contender.call(session, url, timeout=30)
                if first.status_code != 200:
                    raise RuntimeError(f"first call answered {first.status_code}")
                env.tokens.revoke()
                calls, fetched = env.api.calls, env.tokens.count
                try:
                    status: Any = contender.call(session, url, timeout=30).status_code
                except Exception as exc:
                    status = type(exc).__name__
                calls, fetched = env.api.calls - calls, env.tokens.count - fetched
                try:
                    after: Any = contender.call(session, url, timeout=30).status_code
                except Exception as exc:
                    after = type(exc).__name__
                runs.append((status, calls, fetched, after))
                session.close()
        except Exception as exc:
            result.na(contender.name, f"{type(exc).__name__}: {exc}"[:120])
            continue
        status, calls, fetched, after = runs[len(runs) // 2]
        result.add(
            contender.name,
            transparent=all(r[0] == 200 for r in runs),
            status=status,
            api_calls=calls,
            api_calls_all=[r[1] for r in runs],
            token_requests=fetched,
            next_status=after,
        )
    result.notes += [
        "one call after the token server revoked every token; 'API calls' counts what reached",
        "the API for that one call; 'next call' is the status of the call after it. Target:",
        "transparent, 2 calls.",
    ]
    return result
