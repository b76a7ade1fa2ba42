"""Measure 1: the cost of one ``get`` with a cached token, against the floor."""

from __future__ import annotations

import cProfile
import gc
import os
import pstats
import random
import statistics
import time
from collections.abc import Callable
from functools import partial

import requests
from _harness import (
    CLIENT_ID,
    CLIENT_SECRET,
    MEASURES,
    STUB_BASE,
    STUB_URL,
    Column,
    Env,
    Result,
    StaticBearer,
    StubAdapter,
    StubTokenAdapter,
    f2,
    median_ci,
    plus,
    ratio,
)
from _peers import BY_NAME, CONTENDERS, AlfSession

import alf_session


def measure_hot_path(env: Env, quick: bool) -> Result:
    rounds, batch = (7, 100) if quick else (31, 200)
    result = Result(
        1,
        MEASURES[1],
        [
            Column("wall_us", "wall µs", f2),
            Column("cpu_us", "CPU µs", f2),
            Column("wall_ratio", "x floor", ratio),
            Column("cpu_ratio", "CPU x floor", ratio),
            Column("wall_added_us", "+µs wall", plus),
            Column("cpu_added_us", "+µs CPU", plus),
            Column("cpu_added_ci", "±95%", lambda x: f"±{x:.1f}"),
            Column("added_calls", "+calls", lambda x: f"{x:+d}"),
        ],
    )
    header = "Bearer " + "x" * 40
    stub = StubAdapter()

    def plain() -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = header
        return session

    def floor() -> requests.Session:
        session = requests.Session()
        session.auth = StaticBearer(header)
        return session

    def bearer_auth() -> requests.Session:
        session = requests.Session()
        manager = alf_session.TokenManager(
            alf_session.ClientCredentials(env.token_url, CLIENT_ID, CLIENT_SECRET)
        )
        session.auth = alf_session.BearerAuth(manager)
        return session

    def token_adapter() -> requests.Session:
        session = requests.Session()
        manager = alf_session.TokenManager(
            alf_session.ClientCredentials(env.token_url, CLIENT_ID, CLIENT_SECRET)
        )
        session.mount(STUB_BASE, StubTokenAdapter(manager))
        return session

    candidates: list[tuple[str, Callable[[], requests.Session] | None, str | None]] = [
        ("requests.Session + static auth (floor)", floor, None),
        ("requests.Session, header, no auth", plain, None),
    ]
    for contender in CONTENDERS:
        why = contender.missing(env)
        candidates.append(
            (
                contender.name,
                None if why else partial(contender.build, env.token_url, redis_port=env.redis_port),
                why,
            )
        )
    candidates.append(("alf-session BearerAuth", bearer_auth, None))
    candidates.append(("alf-session TokenAdapter", token_adapter, None))

    sessions: dict[str, requests.Session] = {}
    problems: dict[str, str] = {}
    for name, make, why in candidates:
        if make is None:
            problems[name] = why or "unavailable"
            continue
        try:
            session = make()
            if name != "alf-session TokenAdapter":
                session.mount(STUB_BASE, stub)
            contender = BY_NAME.get(name)
            env.redis.flush()
            first = contender.call(session, STUB_URL) if contender else session.get(STUB_URL)
            if first.status_code != 200:
                raise RuntimeError(f"first request answered {first.status_code}")
            for _ in range(200):  # warm caches, pools and lazy imports
                response = session.get(STUB_URL)
            if response.status_code != 200:
                raise RuntimeError(f"cached-token request answered {response.status_code}")
            sessions[name] = session
        except Exception as exc:
            problems[name] = f"{type(exc).__name__}: {exc}"[:120]

    floor_name = candidates[0][0]
    wall: dict[str, list[float]] = {name: [] for name in sessions}
    cpu: dict[str, list[float]] = {name: [] for name in sessions}
    added_wall: dict[str, list[float]] = {name: [] for name in sessions}
    added_cpu: dict[str, list[float]] = {name: [] for name in sessions}

    def timed(name: str) -> tuple[float, float]:
        get = sessions[name].get
        w0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(batch):
            get(STUB_URL)
        c1, w1 = time.thread_time(), time.perf_counter()
        w, c = (w1 - w0) / batch * 1e6, (c1 - c0) / batch * 1e6
        wall[name].append(w)
        cpu[name].append(c)
        return w, c

    # Each batch of a library is paired with a floor batch right next to it
    # (in random order), and the added cost is the median of the paired
    # differences: drifts in machine load cancel out of each pair.
    order = [name for name in sessions if name != floor_name]
    shuffler = random.Random(1)
    pinned = pin_to_one_core()
    gc.disable()
    try:
        _hot_rounds(rounds, order, floor_name, shuffler, timed, added_wall, added_cpu)
    finally:
        gc.enable()
        if pinned is not None:
            os.sched_setaffinity(0, pinned)
    calls = {name: calls_per_request(session) for name, session in sessions.items()}

    fw = statistics.median(wall[floor_name])
    fc = statistics.median(cpu[floor_name])
    for name, _, _ in candidates:
        if name in problems:
            result.na(name, problems[name])
            continue
        aw = statistics.median(added_wall[name]) if name != floor_name else 0.0
        ac = statistics.median(added_cpu[name]) if name != floor_name else 0.0
        result.add(
            name,
            wall_us=statistics.median(wall[name]),
            cpu_us=statistics.median(cpu[name]),
            wall_ratio=(fw + aw) / fw,
            cpu_ratio=(fc + ac) / fc,
            wall_added_us=aw,
            cpu_added_us=ac,
            cpu_added_ci=median_ci(added_cpu[name]) if name != floor_name else None,
            added_calls=calls[name] - calls[floor_name],
        )
    result.notes += [
        f"{rounds} rounds x {batch} requests per library, each batch paired with a floor batch;",
        "µs: median of the batches; x floor and +µs: median of the paired differences (so",
        "x floor = 1 + added/floor); ±95%: confidence interval of +µs CPU. CPU =",
        "time.thread_time(), pinned to one core, the collector off within a batch (as timeit).",
        "+calls: function calls per request over the floor, counted by cProfile (exact, free",
        "of timing noise).",
        "floor: requests.Session whose auth sets the same static header; a session with no",
        "auth looks up ~/.netrc on every request (row 2). requests also scans os.environ for",
        f"proxies on every request, for every library alike (here {len(os.environ)} variables).",
    ]
    peers = [
        r for r in result.rows
        if not r.get("na") and r["library"] in BY_NAME and r["library"] != AlfSession.name
    ]  # fmt: skip
    ours = next((r for r in result.rows if r["library"] == AlfSession.name and "na" not in r), None)
    if ours is not None and peers:
        best = min(peers, key=lambda r: r["cpu_added_us"])
        fewest = min(peers, key=lambda r: r["added_calls"])
        result.notes.append(
            f"alf-session TokenSession adds {ours['cpu_added_us']:+.1f} µs CPU and "
            f"{ours['added_calls']:+d} calls over the floor; the leanest peers: "
            f"{best['library']} {best['cpu_added_us']:+.1f} µs, "
            f"{fewest['library']} {fewest['added_calls']:+d} calls."
        )
    return result


def pin_to_one_core() -> set[int] | None:
    """Run on one core while timing (less migration noise); returns the old set."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cores = os.sched_getaffinity(0)
    if len(cores) < 2:
        return None
    os.sched_setaffinity(0, {max(cores)})
    return cores


def _hot_rounds(
    rounds: int,
    order: list[str],
    floor_name: str,
    shuffler: random.Random,
    timed: Callable[[str], tuple[float, float]],
    added_wall: dict[str, list[float]],
    added_cpu: dict[str, list[float]],
) -> None:
    for _ in range(rounds):
        gc.collect()  # once a round; batches run with the collector off, as timeit does
        shuffler.shuffle(order)
        for name in order:
            if shuffler.random() < 0.5:
                floor_wall, floor_cpu = timed(floor_name)
                wall, cpu = timed(name)
            else:
                wall, cpu = timed(name)
                floor_wall, floor_cpu = timed(floor_name)
            added_wall[name].append(wall - floor_wall)
            added_cpu[name].append(cpu - floor_cpu)


def calls_per_request(session: requests.Session, n: int = 50) -> int:
    """Python function calls one cached-token get makes, counted by cProfile."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        session.get(STUB_URL)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(entry[1] for entry in stats.stats.values())  # type: ignore[attr-defined]
    return round(total / n)
