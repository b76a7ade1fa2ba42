"""Cross-process single flight, with real processes on one storage.

Each worker is a fresh Python (``storage_worker.py``) with its own cold
TokenManager; the token server in this process counts the token requests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from alf_session import ClientCredentials, FileStorage, TokenManager
from alf_session._servers import TokenServer

if TYPE_CHECKING:
    from tests.storage_fixtures import RedisServer

pytest_plugins = ["tests.storage_fixtures"]

WORKER = str(Path(__file__).with_name("storage_worker.py"))
PROCESSES = 4
THREADS = 8


def run_workers(
    idp: TokenServer,
    url: str,
    processes: int,
    threads: int,
    seconds: float = 0.0,
    env: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Start ``processes`` workers, release them at once, and collect their reports.

    ``env`` adds to (or, with "", empties) the workers' ``ALF_*`` variables."""
    env = {
        **os.environ,
        "ALF_TOKEN_ENDPOINT": idp.token_url,
        "ALF_CLIENT_ID": idp.client_id,
        "ALF_CLIENT_SECRET": idp.client_secret,
        **(env or {}),
    }
    workers = [
        subprocess.Popen(
            [sys.executable, WORKER, url, str(threads), str(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:  # every process is up: let them all go
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = []
        for worker in workers:
            out, _ = worker.communicate(timeout=60)
            assert worker.returncode == 0
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def check_one_token(idp: TokenServer, reports: list[dict[str, Any]]) -> None:
    assert [r["errors"] for r in reports] == [[]] * len(reports)
    tokens = {fingerprint for r in reports for fingerprint in r["tokens"]}
    assert sum(len(r["tokens"]) for r in reports) == PROCESSES * THREADS
    assert len(tokens) == 1
    assert sum(r["stats"]["fetches"] for r in reports) == 1
    assert sum(r["stats"]["storage_hits"] for r in reports) == PROCESSES - 1
    assert idp.count == 1


@pytest.mark.stress
def test_processes_on_one_redis_make_one_token_request(
    idp: TokenServer, redis_server: RedisServer, redis_client: Any
) -> None:
    reports = run_workers(idp, redis_server.url, PROCESSES, THREADS)
    check_one_token(idp, reports)


@pytest.mark.stress
def test_processes_on_one_directory_make_one_token_request(
    idp: TokenServer, tmp_path: Path
) -> None:
    reports = run_workers(idp, (tmp_path / "tokens").as_uri(), PROCESSES, THREADS)
    check_one_token(idp, reports)


@pytest.mark.stress
@pytest.mark.parametrize("kind", ["redis", "file"])
def test_processes_renew_ahead_with_one_token_request(
    kind: str, idp: TokenServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # 3 s tokens, leeway 0.5 s: each process plans a background renewal at
    # about 2.1-2.25 s (75 % of the lifetime, minus jitter); the first to get
    # there renews, the others find the new token in the storage.
    if kind == "redis":
        request.getfixturevalue("redis_client")  # flushed
        url = request.getfixturevalue("redis_server").url
    else:
        url = (tmp_path / "tokens").as_uri()
    idp.expires_in = 3
    reports = run_workers(idp, url, PROCESSES, 4, seconds=3.3)  # ends before a 2nd renewal
    assert [r["errors"] for r in reports] == [[]] * PROCESSES
    assert idp.count == 2
    assert [grant.grant_type for grant in idp.requests] == ["client_credentials"] * 2
    for report in reports:  # every process used both tokens, no other
        assert len(set(report["tokens"])) == 2
    assert len({f for r in reports for f in r["tokens"]}) == 2
    assert sum(r["stats"]["refreshes"] for r in reports) == PROCESSES


_HOLD_LOCK = """
import sys, time
from alf_session import FileStorage
storage = FileStorage(sys.argv[1])
assert storage.acquire_lock(sys.argv[2], 3600) is not None
print("locked", flush=True)
time.sleep(3600)
"""


@pytest.mark.stress
def test_file_lock_of_a_killed_process_blocks_nobody(
    idp: TokenServer, credentials: Callable[..., ClientCredentials], tmp_path: Path
) -> None:
    manager = TokenManager(credentials(), FileStorage(tmp_path), lock_wait=30)
    key = manager._key
    assert key is not None
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(tmp_path), key], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            assert FileStorage(tmp_path).acquire_lock(key, 1) is None  # held by a live process
        finally:
            holder.kill()
            holder.wait(10)
    started = time.monotonic()
    manager.get_token()
    assert time.monotonic() - started < 5  # not lock_wait: the kernel released the dead lock
    assert idp.count == 1
