"""benchmarks/run.py keeps working, and alf-session keeps its exact counts there.

The benchmark is not a test: no timing is asserted. This runs its counting
measures (2: storage round trips, 3: thundering herd, 5: 401 recovery, 9: async herd) in
quick mode in a subprocess, as a user would, and reads its ``--json`` output.
Peers that are not installed show as n/a there; only alf-session is checked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"
ALF_SESSION = "alf-session TokenSession"

pytestmark = [pytest.mark.redis, pytest.mark.stress]


def _missing() -> str | None:
    if shutil.which("redis-server") is None:
        return "redis-server not found on PATH"
    if importlib.util.find_spec("redis") is None:
        return "redis-py not installed"
    return None


def _row(results: dict[str, Any], measure: int, library: str = ALF_SESSION) -> dict[str, Any]:
    rows = results["measures"][str(measure)]["rows"]
    row = next(r for r in rows if r["library"] == library)
    assert "na" not in row, f"measure {measure}: alf-session n/a: {row['na']}"
    return row


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    why = _missing()
    if why is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the benchmark needs Redis and CI must have it: {why}")
        pytest.skip(why)
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--only", "2,3,5,9", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, f"run.py failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    for title in ("== 2.", "== 3.", "== 5.", "== 9."):
        assert title in proc.stdout, proc.stdout
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return data


@pytest.mark.timeout(300)
def test_cached_token_costs_no_storage_round_trip(results: dict[str, Any]) -> None:
    row = _row(results, 2)
    assert row["commands"] == 0
    assert row["per_request"] == 0


@pytest.mark.timeout(300)
def test_one_token_request_for_32_cold_threads(results: dict[str, Any]) -> None:
    assert _row(results, 3)["threads_32_counts"] == [1]


@pytest.mark.timeout(300)
def test_one_token_request_for_4_cold_processes_sharing_redis(results: dict[str, Any]) -> None:
    row = _row(results, 3)
    assert row["store"] == "redis"
    assert row["procs_4x8_counts"] == [1]


@pytest.mark.timeout(300)
def test_revoked_token_recovered_with_two_api_calls(results: dict[str, Any]) -> None:
    row = _row(results, 5)
    assert row["transparent"] is True
    assert row["status"] == 200
    assert row["api_calls"] == 2


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "library", ["alf-session AsyncTokenClient", "alf-session aiohttp TokenMiddleware"]
)
def test_one_token_request_for_200_cold_tasks(results: dict[str, Any], library: str) -> None:
    row = _row(results, 9, library)
    assert row["token_requests_all"] == [1]
    assert row["failed"] == 0
