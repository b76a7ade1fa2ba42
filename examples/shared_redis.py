"""Several processes share one token through Redis.

    REDIS_URL=redis://localhost:6379/0 python examples/shared_redis.py
    python examples/shared_redis.py          # starts a private redis-server, if installed

N worker processes x M pods of one service need one token, not N x M: give
every TokenSession the same Redis client as ``token_storage``. The first
process to need a token takes a lock in Redis (SET NX PX) and fetches it;
the others wait for it and read it from Redis. The client secret is never
stored; the key is a hash of the endpoint, client id and scope.

Runs offline against the local token server and API of ``alf-session demo``.
Without Redis (no REDIS_URL, no redis-server, or no ``redis`` package) it
says so and exits 0.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

WORKERS = 4
REQUESTS_EACH = 10


def worker(redis_url: str, token_url: str, api_url: str, start: Any) -> tuple[int, int]:
    """One process of the service: its own TokenSession, the shared Redis."""
    import redis

    from alf_session import TokenSession

    session = TokenSession(
        token_url, "orders-service", "s3cret", token_storage=redis.Redis.from_url(redis_url)
    )
    start.wait(timeout=30)  # all processes ask for a token at the same moment
    for _ in range(REQUESTS_EACH):
        session.get(f"{api_url}/orders").raise_for_status()
    stats = session.token_manager.stats
    return stats.fetches, stats.storage_hits


@contextmanager
def redis_url() -> Iterator[str | None]:
    """REDIS_URL, else a private redis-server on a Unix socket, else None."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = shutil.which("redis-server")
    if server is None:
        yield None
        return
    import redis

    directory = tempfile.mkdtemp(prefix="alf-redis-")
    socket = os.path.join(directory, "redis.sock")
    process = subprocess.Popen(
        [
            server,
            "--port",
            "0",
            "--unixsocket",
            socket,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"unix://{socket}"
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the private redis-server did not start") from None
                time.sleep(0.05)
        print("(started a private redis-server; set REDIS_URL to use yours)")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def main() -> int:
    try:
        import redis  # noqa: F401 - only to tell whether it is installed
    except ImportError:
        print("skipped: this example needs the redis package (pip install 'alf-session[redis]')")
        return 0
    from alf_session.testing import local_servers

    with redis_url() as url:
        if url is None:
            print("skipped: no Redis; set REDIS_URL or install redis-server")
            return 0
        with local_servers(client_id="orders-service", client_secret="s3cret") as (idp, api):
            context = multiprocessing.get_context("spawn")  # the same on Linux, macOS, Windows
            with context.Manager() as manager, context.Pool(WORKERS) as pool:
                start = manager.Barrier(WORKERS)
                counts = pool.starmap(worker, [(url, idp.token_url, api.base_url, start)] * WORKERS)
            fetched = sum(f for f, _ in counts)
            from_redis = sum(h for _, h in counts)
            print(
                f"{WORKERS} processes made {WORKERS * REQUESTS_EACH} requests; "
                f"the token server saw {idp.count} token request(s)"
            )
            print(
                f"token requests by the processes: {fetched}; tokens read from Redis: {from_redis}"
            )
            print(f"API requests: {api.calls}, all authorized: {api.unauthorized == 0}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
