"""One process of the failover tests (not a test module).

Usage: ``python ha_worker.py SPEC THREADS``, with the credential in
``ALF_TOKEN_ENDPOINT``, ``ALF_CLIENT_ID`` and ``ALF_CLIENT_SECRET`` and the API
in ``ALF_API_URL``. SPEC says how the storage is reached, as a user would:

* ``cluster:HOST:PORT,HOST:PORT…``: a ``redis.cluster.RedisCluster`` client;
* ``sentinel:HOST:PORT,HOST:PORT…/SERVICE``: ``redis.sentinel.Sentinel(...)
  .master_for(SERVICE)``;
* anything else: a URL for ``storage_from_url`` (``redis+sentinel://…``).

It builds a cold TokenSession, prints ``ready``, and then obeys its stdin:
``go`` starts THREADS threads that GET the API again and again; ``health``
prints ``health true`` or ``health false`` (whether the storage is in use or
known to fail); ``stop`` stops the threads and prints one JSON line: request
count, failures, status codes and the manager's stats.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

from alf_session import ClientCredentials, TokenManager, TokenSession, storage_from_url


def build_storage(spec: str) -> Any:
    if spec.startswith("cluster:"):
        from redis.cluster import ClusterNode, RedisCluster

        nodes = [item.rsplit(":", 1) for item in spec.removeprefix("cluster:").split(",")]
        return RedisCluster(
            startup_nodes=[ClusterNode(host, int(port)) for host, port in nodes],
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
        )
    if spec.startswith("sentinel:"):
        from redis.sentinel import Sentinel

        hosts, _, service = spec.removeprefix("sentinel:").partition("/")
        pairs = [item.rsplit(":", 1) for item in hosts.split(",")]
        sentinel = Sentinel(
            [(host, int(port)) for host, port in pairs],
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            sentinel_kwargs={"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
        )
        return sentinel.master_for(service)
    return storage_from_url(spec, timeout=0.5)


def main() -> int:
    spec, threads = sys.argv[1], int(sys.argv[2])
    provider = ClientCredentials(
        os.environ["ALF_TOKEN_ENDPOINT"],
        os.environ["ALF_CLIENT_ID"],
        os.environ["ALF_CLIENT_SECRET"],
    )
    manager = TokenManager(
        provider, build_storage(spec), storage_retry_interval=0.2, lock_wait=10.0
    )
    session = TokenSession(token_manager=manager)
    url = os.environ["ALF_API_URL"]
    stop = threading.Event()
    lock = threading.Lock()
    statuses: Counter[int] = Counter()
    failures: list[str] = []

    def work() -> None:
        while not stop.is_set():
            try:
                status = session.get(url, timeout=30).status_code
            except Exception as exc:  # reported to the parent
                with lock:
                    failures.append(repr(exc)[:300])
            else:
                with lock:
                    statuses[status] += 1
            time.sleep(0.005)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "go":
            for worker in workers:
                worker.start()
        elif command == "health":
            guard = manager._guard
            print(f"health {str(guard is not None and guard.usable).lower()}", flush=True)
        elif command == "stop":
            break
    stop.set()
    for worker in workers:
        worker.join(60)
    report = {
        "requests": sum(statuses.values()) + len(failures),
        "statuses": {str(k): v for k, v in statuses.items()},
        "failures": failures,
        "stats": manager.stats._asdict(),
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
