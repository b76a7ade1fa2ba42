"""A worker process of ``alf-session demo``: one service with a TokenSession.

Started by :mod:`alf_session._demo` as ``python -m alf_session._demo_worker
INDEX API_URL`` with the credentials and the storage URL in the ``ALF_*``
environment variables. It waits for ``go`` on stdin, sends requests until
``stop`` (or end of input), and reports what happened as JSON lines on
stdout: each token it fetched, each token it took from the shared storage,
each 401 that was retried, and finally its counts.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from ._demo import LEEWAY, PAUSE, READY_TIMEOUT, REFRESH_AHEAD


def _worker_main(argv: Sequence[str]) -> int:
    """One service process: a TokenSession sharing its token through storage."""
    import requests

    from . import ClientCredentials, TokenError, TokenManager, TokenSession
    from .storage import storage_from_url
    from .token import Token

    index, api_url = int(argv[0]), argv[1]
    # The library's warnings (a storage fault, a failed renewal) go to stderr,
    # which the demo shows as "worker N says: ..." and counts as a problem.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.getLogger("alf_session").addHandler(handler)
    lock = threading.Lock()

    def emit(event: str, **data: Any) -> None:
        line = json.dumps({"event": event, "t": time.time(), **data})
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    current: list[str | None] = [None]  # the token this worker's requests carry
    fetched: set[str] = set()  # tokens this worker fetched itself
    background: list[str] = []  # ... of which in the background

    class ObservedCredentials(ClientCredentials):
        """ClientCredentials that reports each token it fetches."""

        def fetch_token(self) -> Token:
            token = super().fetch_token()
            in_background = threading.current_thread() is not threading.main_thread()
            with lock:
                fetched.add(token.fingerprint)
                if in_background:
                    background.append(token.fingerprint)
            emit(
                "fetch",
                token=token.fingerprint,
                background=in_background,
                previous=current[0],
            )
            return token

    env = os.environ
    provider = ObservedCredentials(
        env["ALF_TOKEN_ENDPOINT"], env["ALF_CLIENT_ID"], env["ALF_CLIENT_SECRET"]
    )
    manager = TokenManager(
        provider,
        storage_from_url(env["ALF_STORAGE"]),
        refresh_ahead=REFRESH_AHEAD,
        leeway=LEEWAY,
    )
    session = TokenSession(token_manager=manager)

    go, stop = threading.Event(), threading.Event()

    def control() -> None:
        for line in sys.stdin:
            if line.strip() == "go":
                go.set()
            elif line.strip() == "stop":
                break
        stop.set()  # "stop", or the parent went away
        go.set()

    threading.Thread(target=control, name="demo-control", daemon=True).start()
    emit("ready")
    go.wait(READY_TIMEOUT + 30)

    def fingerprint(request: requests.PreparedRequest | None) -> str | None:
        raw = request.headers.get("Authorization") if request is not None else None
        header = raw if isinstance(raw, str) else ""
        scheme, _, value = header.partition(" ")
        return Token(value).fingerprint if scheme == "Bearer" and value else None

    counts = {"requests": 0, "failed": 0, "final_401": 0, "api_calls": 0}
    while not stop.is_set():
        counts["requests"] += 1
        try:
            response = session.get(f"{api_url}/orders", params={"worker": index}, timeout=10)
        except (TokenError, requests.RequestException) as exc:
            counts["failed"] += 1
            emit("error", text=" ".join(str(exc).split())[:300])
            stop.wait(PAUSE)
            continue
        counts["api_calls"] += 1 + len(response.history)
        used = fingerprint(response.request)
        with lock:
            own = used in fetched
        if response.history and response.history[0].status_code == 401:
            emit(
                "retry",
                old=fingerprint(response.history[0].request),
                new=used,
                status=response.status_code,
                source="fetched" if own else "shared",
            )
        elif used is not None and used != current[0] and not own:
            emit("pickup", token=used)
        current[0] = used
        if response.status_code == 401:
            counts["final_401"] += 1
        elif response.status_code >= 400:
            counts["failed"] += 1
        stop.wait(PAUSE)
    # A renewal may be on its way to the token server as the demo stops: let
    # it finish, so that the server's count and this worker's agree.
    for thread in threading.enumerate():
        if thread.name == "alf-session-refresh":
            thread.join(15)
    session.close()
    with lock:
        background_fetches = len(background)
    emit("done", **counts, background_fetches=background_fetches, stats=manager.stats._asdict())
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m alf_session._demo_worker INDEX API_URL")
    try:
        sys.exit(_worker_main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
