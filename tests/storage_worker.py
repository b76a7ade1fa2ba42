"""One worker process of the multi-process storage tests (not a test module).

Usage: ``python storage_worker.py STORAGE_URL THREADS [SECONDS]`` with the
credential in ``ALF_TOKEN_ENDPOINT``, ``ALF_CLIENT_ID`` and ``ALF_CLIENT_SECRET``
(or ``ALF_PRIVATE_KEY_FILE``).

It builds a cold TokenManager on the storage, prints ``ready``, waits for a
line on stdin (so that every process starts at once), then gets a token from
THREADS threads lined up on a barrier (for SECONDS, again and again, if
given), and prints one JSON line: the fingerprints of the access tokens it
got, the manager's stats and any errors.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from alf_session import ClientCredentials, TokenManager, storage_from_url


def main() -> int:
    url, threads = sys.argv[1], int(sys.argv[2])
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    provider = ClientCredentials(
        os.environ["ALF_TOKEN_ENDPOINT"],
        os.environ["ALF_CLIENT_ID"],
        os.environ.get("ALF_CLIENT_SECRET") or None,
        # Set: the worker signs private_key_jwt assertions with this key.
        private_key=os.environ.get("ALF_PRIVATE_KEY_FILE") or None,
    )
    manager = TokenManager(provider, storage_from_url(url), lock_wait=30.0, leeway=0.5)
    barrier = threading.Barrier(threads)
    tokens: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        barrier.wait()
        deadline = time.monotonic() + seconds
        while True:
            try:
                token = manager.get_token()
            except Exception as exc:  # reported to the parent
                with lock:
                    errors.append(repr(exc))
            else:
                with lock:
                    tokens.append(token.fingerprint)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.005)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    print("ready", flush=True)
    sys.stdin.readline()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(json.dumps({"tokens": tokens, "stats": manager.stats._asdict(), "errors": errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
