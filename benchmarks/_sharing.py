"""Measures 2 and 3: storage round trips, and the thundering herd at a cold start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from contextlib import suppress
from typing import Any

from _harness import (
    MEASURES,
    STUB_BASE,
    STUB_URL,
    Column,
    Env,
    Result,
    StubAdapter,
    _run_threads,
    spread,
)
from _peers import BY_NAME, CONTENDERS, Contender

from alf_session._guard import drain_all

# The processes of the multi-process herd run this script as ``--herd-worker``.
RUN_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py")


def measure_round_trips(env: Env, quick: bool) -> Result:
    requests_n = 100 if quick else 500
    result = Result(
        2,
        MEASURES[2],
        [
            Column("cold_commands", "cold 1st request", str),
            Column("commands", f"cmds / {requests_n} req", str),
            Column("per_request", "per request", lambda x: f"{x:g}"),
            Column("detail", "commands seen", str),
        ],
    )
    for contender in CONTENDERS:
        why = contender.missing(env)
        if why is None and "redis" not in contender.stores:
            why = "shares tokens only through a JSON file" if contender.stores else ""
            why = why or "no shared storage"
        if why is None and env.redis.missing:
            why = env.redis.missing
        if why:
            result.na(contender.name, why)
            continue
        try:
            env.redis.flush()
            session = contender.build(env.token_url, redis_port=env.redis_port, store="redis")
            session.mount(STUB_BASE, StubAdapter())
            before = env.redis.command_counts()
            first = contender.call(session, STUB_URL)
            # alf-session stores the token it fetched off the request path:
            # count those writes with the cold request, where they belong.
            drain_all(5.0)
            cold = env.redis.command_counts()
            statuses = {first.status_code}
            for _ in range(requests_n):
                statuses.add(contender.call(session, STUB_URL).status_code)
            after = env.redis.command_counts()
            if statuses != {200}:
                raise RuntimeError(f"answers {sorted(statuses)}")
        except Exception as exc:
            result.na(contender.name, f"{type(exc).__name__}: {exc}"[:120])
            continue
        delta = {k: after.get(k, 0) - cold.get(k, 0) for k in after}
        delta = {k: v for k, v in delta.items() if v}
        cold_total = sum(cold.get(k, 0) - before.get(k, 0) for k in cold)
        total = sum(delta.values())
        result.add(
            contender.name,
            cold_commands=cold_total,
            commands=total,
            per_request=round(total / requests_n, 3),
            detail=", ".join(f"{k} {v}" for k, v in sorted(delta.items())) or "none",
        )
    result.notes += [
        "counted with INFO commandstats on the private redis-server, before and after;",
        "the cold first request (fetch and store) is shown apart.",
    ]
    return result


def herd_in_process(contender: Contender, env: Env, threads: int = 32) -> tuple[int, int]:
    """Token requests and failed calls when ``threads`` threads start cold."""
    env.redis.flush()
    session = contender.build(env.token_url, redis_port=env.redis_port)
    session.mount(STUB_BASE, StubAdapter())
    barrier = threading.Barrier(threads)
    failures = [0]
    lock = threading.Lock()

    def work(_: int) -> None:
        barrier.wait()
        try:
            ok = contender.call(session, STUB_URL, timeout=30).status_code == 200
        except Exception:
            ok = False
        if not ok:
            with lock:
                failures[0] += 1

    before = env.tokens.count
    _run_threads(threads, work)
    return env.tokens.count - before, failures[0]


def herd_worker(spec: dict[str, Any]) -> None:
    """One process of the multi-process herd (run as ``run.py --herd-worker``)."""
    contender = BY_NAME[spec["library"]]
    session = contender.build(
        spec["token_url"],
        redis_port=spec["redis_port"],
        store=spec["store"],
        tmpdir=spec["tmpdir"],
    )
    session.mount(STUB_BASE, StubAdapter())
    go = threading.Event()
    outcomes: list[str] = []
    lock = threading.Lock()

    def work(_: int) -> None:
        go.wait(60)
        try:
            status = contender.call(session, STUB_URL, timeout=30).status_code
            outcome = "ok" if status == 200 else f"HTTP {status}"
        except Exception as exc:
            outcome = type(exc).__name__
        with lock:
            outcomes.append(outcome)

    runner = threading.Thread(target=_run_threads, args=(spec["threads"], work), daemon=True)
    runner.start()
    print("ready", flush=True)
    sys.stdin.readline()
    go.set()
    runner.join(90)
    print(json.dumps({"ok": outcomes.count("ok"), "failed": [o for o in outcomes if o != "ok"]}))


def herd_processes(
    contender: Contender, env: Env, store: str, processes: int = 4, threads: int = 8
) -> tuple[int, int]:
    env.redis.flush()
    with suppress(FileNotFoundError):
        os.remove(os.path.join(env.tmpdir, "requests-auth.json"))
    spec = {
        "library": contender.name,
        "token_url": env.token_url,
        "redis_port": env.redis_port,
        "store": store,
        "tmpdir": env.tmpdir,
        "threads": threads,
    }
    procs = [
        subprocess.Popen(
            [sys.executable, RUN_SCRIPT, "--herd-worker", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                _, err = proc.communicate(timeout=30)
                raise RuntimeError(f"worker failed: {(line + ' ' + err).strip()[-300:]}")
        before = env.tokens.count
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        failed = 0
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"worker exited {proc.returncode}: {err.strip()[-300:]}")
            answer = json.loads(out.strip().splitlines()[-1])
            failed += threads - answer["ok"]
        return env.tokens.count - before, failed
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def measure_herd(env: Env, quick: bool) -> Result:
    rounds = 1 if quick else 3
    result = Result(
        3,
        MEASURES[3],
        [
            Column("threads_32", "32 threads: token reqs", str),
            Column("threads_failed", "failed", str),
            Column("store", "shared store", str),
            Column("procs_4x8", "4 proc x 8 thr: token reqs", str),
            Column("procs_failed", "failed", str),
        ],
    )
    saved_delay = env.tokens.delay
    env.tokens.delay = 0.1  # a real identity provider takes a while; the herd forms meanwhile
    try:
        in_proc: dict[str, list[tuple[int, int]]] = {}
        multi: dict[str, list[tuple[int, int]]] = {}
        problems: dict[str, str] = {}
        multi_na: dict[str, str] = {}
        for _ in range(rounds):
            for contender in CONTENDERS:
                name = contender.name
                why = problems.get(name) or contender.missing(env)
                if why:
                    problems[name] = why
                    continue
                try:
                    in_proc.setdefault(name, []).append(herd_in_process(contender, env))
                except Exception as exc:
                    problems[name] = f"{type(exc).__name__}: {exc}"[:120]
                    continue
                if name in multi_na:
                    continue
                store = next(
                    (s for s in contender.stores if s != "redis" or not env.redis.missing), None
                )
                if store is None:
                    multi_na[name] = (
                        env.redis.missing if contender.stores else "no shared storage"
                    ) or "no shared storage"
                    continue
                try:
                    multi.setdefault(name, []).append(herd_processes(contender, env, store))
                except Exception as exc:
                    multi_na[name] = f"{type(exc).__name__}: {exc}"[:160]
    finally:
        env.tokens.delay = saved_delay

    for contender in CONTENDERS:
        name = contender.name
        if name in problems:
            result.na(name, problems[name])
            continue
        runs = in_proc[name]
        row: dict[str, Any] = {
            "threads_32": spread([r[0] for r in runs]),
            "threads_32_counts": [r[0] for r in runs],
            "threads_failed": sum(r[1] for r in runs),
        }
        if name in multi_na:
            row["store"] = "n/a"
            row["procs_4x8"] = multi_na[name]
        else:
            counts = multi[name]
            row["store"] = next(
                s for s in contender.stores if s != "redis" or not env.redis.missing
            )
            row["procs_4x8"] = spread([r[0] for r in counts])
            row["procs_4x8_counts"] = [r[0] for r in counts]
            row["procs_failed"] = sum(r[1] for r in counts)
        result.add(name, **row)
    result.notes += [
        f"median (min-max) of {rounds} round(s); target 1 and 1. The token endpoint answers in",
        "100 ms; the API is the stub transport. 'failed': calls that raised or were not 200.",
    ]
    return result
