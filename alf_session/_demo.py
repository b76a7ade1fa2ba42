"""``alf-session demo``: the whole story on loopback, with nothing but the package.

The parent process starts a token server and a protected API on 127.0.0.1
(:mod:`alf_session._servers`), then worker processes, each one a service
with a :class:`~alf_session.TokenSession` whose token is shared through a
:class:`~alf_session.FileStorage` in a temporary directory. Workers report
what happened to them as JSON lines on stdout; the parent prints a timeline,
revokes the token in use half-way through, and at the end compares what the
workers counted with what the servers counted.

A worker is ``python -m alf_session._demo_worker INDEX API_URL``
(:mod:`alf_session._demo_worker`), configured by the same ``ALF_*`` variables
as the command line, so that the secret never appears in its arguments.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["run_demo"]

# Tokens live seconds here instead of hours, so renewal is set to happen
# half-way through a token's life and to count it as expired half a second
# early: every worker renews once per lifetime while its requests go on.
REFRESH_AHEAD = 0.5
LEEWAY = 0.5
# Pause between two requests of one worker.
PAUSE = 0.1
# How long a new group of timeline events waits for the same event from other
# workers, so that "workers 1, 3, 4 took token …" is printed as one line.
GROUP_DELAY = 0.4
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

# -- the parent ----------------------------------------------------------------


class _DemoFailed(Exception):
    """The demo could not go on; the message says why."""


class _Progress:
    """One line on stderr, rewritten in place; only on a terminal."""

    def __init__(self, err: IO[str]) -> None:
        self.err = err
        self.enabled = _isatty(err)
        self.text = ""

    def show(self, text: str) -> None:
        self.text = text
        self.draw()

    def draw(self) -> None:
        if self.enabled and self.text:
            self.err.write("\r\x1b[K" + self.text)
            self.err.flush()

    def clear(self) -> None:
        if self.enabled and self.text:
            self.err.write("\r\x1b[K")
            self.err.flush()


class _Worker:
    """The parent's handle on one worker process."""

    def __init__(self, index: int, process: subprocess.Popen[str]) -> None:
        self.index = index
        self.process = process
        self.ready = False
        self.exited = False
        self.report: dict[str, Any] | None = None  # its "done" event
        self.killed = False

    def send(self, line: str) -> None:
        stdin = self.process.stdin
        if stdin is None or stdin.closed:
            return
        try:
            stdin.write(line + "\n")
            stdin.flush()
        except (OSError, ValueError):
            pass  # it exited already; that is reported when its output ends


class _Demo:
    def __init__(
        self, workers: int, duration: float, lifetime: float, out: IO[str], err: IO[str]
    ) -> None:
        from ._servers import APIServer, TokenServer

        self.size = workers
        self.duration = duration
        self.lifetime = lifetime
        self.out = out
        self.err = err
        self.progress = _Progress(err)
        self.client_id = "orders-service"
        self.tokens = TokenServer(self.client_id, secrets.token_urlsafe(24), expires_in=lifetime)
        self.api = APIServer(self.tokens)
        self.events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.crew: list[_Worker] = []
        self.directory = ""
        self.t0 = time.time()
        self.first_fetch: str | None = None
        self.last_fetch = 0.0
        self.revoked = False
        self.after_401 = 0  # token requests made to answer a 401
        self.complaints: list[str] = []
        self.groups: dict[tuple[Any, ...], dict[str, Any]] = {}

    # -- the run ---------------------------------------------------------------

    def run(self) -> int:
        failed: str | None = None
        self.directory = tempfile.mkdtemp(prefix="alf-session-demo-")
        try:
            self.tokens.start()
            self.api.start()
            self.intro()
            env = self.worker_env()
            self.crew = [self.start_worker(i, env) for i in range(1, self.size + 1)]
            self.wait_until(lambda: all(w.ready for w in self.crew), READY_TIMEOUT, "start")
            self.t0 = time.time()
            self.line(self.t0, "demo", f"{self.size} workers start at once; each needs a token")
            for worker in self.crew:
                worker.send("go")
            self.watch()
            self.flush(force=True)
            self.line(time.time(), "demo", "stopping the workers")
            for worker in self.crew:
                worker.send("stop")
            self.wait_until(lambda: all(w.exited for w in self.crew), STOP_TIMEOUT, "stop")
            self.flush(force=True)
        except _DemoFailed as exc:
            failed = str(exc)
        finally:
            self.progress.clear()
            self.stop_workers()
            self.api.stop()
            self.tokens.stop()
            shutil.rmtree(self.directory, ignore_errors=True)
        if failed is not None:
            print(f"alf-session demo: error: {failed}", file=self.err, flush=True)
            return 1
        return self.summary()

    def intro(self) -> None:
        print(
            f"alf-session demo: {self.size} worker processes share one OAuth token "
            "through FileStorage\n\n"
            f"  token server   {self.tokens.token_url}   (tokens live {self.lifetime:g} s "
            "here, hours in real life)\n"
            f"  protected API  {self.api.base_url}/orders   (401 unless the token is valid)\n"
            f"  shared cache   FileStorage({self.directory})\n"
            f"  each worker    a TokenSession: GET /orders every {PAUSE:g} s; renews the "
            "token in the\n"
            f"                 background once {REFRESH_AHEAD:.0%} of its life has passed\n",
            file=self.out,
            flush=True,
        )
        if not self.progress.enabled:
            print(
                f"alf-session demo: running {self.size} workers for {self.duration:g} s ...",
                file=self.err,
                flush=True,
            )

    def worker_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("ALF_SCOPE", "ALF_AUDIENCE"):  # the user's own settings don't apply here
            env.pop(name, None)
        env.update(
            ALF_TOKEN_ENDPOINT=self.tokens.token_url,
            ALF_CLIENT_ID=self.client_id,
            ALF_CLIENT_SECRET=self.tokens.client_secret,  # in the environment, not in argv
            ALF_STORAGE=Path(self.directory).as_uri(),
            PYTHONUNBUFFERED="1",
        )
        # Loopback must never go through a proxy the user set for the world.
        no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
        env["NO_PROXY"] = env["no_proxy"] = no_proxy
        # The workers import this very package, wherever it was imported from.
        here = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH", "")]))
        return env

    def start_worker(self, index: int, env: dict[str, str]) -> _Worker:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "alf_session._demo_worker", str(index), self.api.base_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        events = self.events

        def read_events() -> None:
            if process.stdout is None:
                return
            for raw in process.stdout:
                try:
                    event = json.loads(raw)
                except ValueError:
                    event = {"event": "stderr", "text": raw.rstrip()}
                if isinstance(event, dict):
                    events.put((index, event))
            events.put((index, {"event": "exit"}))

        def read_stderr() -> None:
            if process.stderr is None:
                return
            for raw in process.stderr:
                if raw.strip():
                    events.put((index, {"event": "stderr", "text": raw.rstrip()}))

        for target in (read_events, read_stderr):
            threading.Thread(target=target, name=f"demo-worker-{index}", daemon=True).start()
        return _Worker(index, process)

    def wait_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() >= deadline:
                raise _DemoFailed(
                    f"the workers did not {what} within {timeout:g} s"
                    + (f"; {self.complaints[0]}" if self.complaints else "")
                )
            self.next_event(0.1)
            self.flush()

    def watch(self) -> None:
        """Let the workers run for the duration; revoke the token half-way."""
        next_draw = 0.0
        while True:
            now = time.time()
            elapsed = now - self.t0
            if elapsed >= self.duration:
                return
            if not self.revoked and self.time_to_revoke(now, elapsed):
                self.revoked = True
                self.tokens.revoke()
                self.flush(force=True)
                self.line(
                    now, "demo", "the token server revokes every token issued so far (a leak!)"
                )
            self.next_event(0.05)
            self.flush()
            if now >= next_draw:
                next_draw = now + 0.25
                self.progress.show(
                    f"  {elapsed:4.1f} s of {self.duration:g} s · API requests {self.api.calls}"
                    f" · token requests {self.tokens.count} · 401s {self.api.unauthorized}"
                )

    def time_to_revoke(self, now: float, elapsed: float) -> bool:
        # Half-way through, between two renewals: the token in use is then
        # valid for a while yet, so every worker meets the 401 with it.
        age = now - self.last_fetch
        between_renewals = 0.15 * self.lifetime <= age <= 0.35 * self.lifetime
        return (elapsed >= 0.45 * self.duration and between_renewals) or (
            elapsed >= 0.75 * self.duration
        )

    def stop_workers(self) -> None:
        for worker in self.crew:
            process = worker.process
            if process.stdin is not None:
                try:
                    process.stdin.close()  # EOF stops a worker that missed "stop"
                except OSError:
                    pass
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                worker.killed = True
        for worker in self.crew:
            for stream in (worker.process.stdout, worker.process.stderr):
                if stream is not None:
                    stream.close()

    # -- events and the timeline -----------------------------------------------

    def next_event(self, timeout: float) -> None:
        try:
            index, event = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        self.handle(self.crew[index - 1] if index <= len(self.crew) else None, index, event)

    def handle(self, worker: _Worker | None, index: int, event: dict[str, Any]) -> None:
        kind = event.get("event")
        t = float(event.get("t", time.time()))
        if kind == "ready" and worker is not None:
            worker.ready = True
        elif kind == "exit" and worker is not None:
            worker.exited = True
        elif kind == "done" and worker is not None:
            worker.report = event
        elif kind == "fetch":
            self.on_fetch(index, t, event)
        elif kind == "pickup":
            token = event["token"]
            self.group(("pickup", token), t, index, f"took token {token} from the shared cache")
        elif kind == "retry":
            old, new, status = event["old"], event["new"], event["status"]
            if event.get("source") == "fetched":
                self.after_401 += 1
                self.groups.pop(("fetch", index, new), None)  # this line says it
                text = f"401 for {old}; retried with new token {new} → {status}"
                self.group(("retry", index, new), t, index, text)
            else:
                text = f"401 for {old}; retried with {new} from the shared cache → {status}"
                self.group(("retry", old, new, status), t, index, text)
        elif kind == "error":
            self.group(("error", index, t), t, index, f"request failed: {event.get('text')}")
            self.complaints.append(f"worker {index}: {event.get('text')}")
        elif kind == "stderr":
            text = str(event.get("text", ""))
            self.progress.clear()
            print(f"  worker {index} says: {text}", file=self.err, flush=True)
            self.progress.draw()
            self.complaints.append(f"worker {index} said: {text}")

    def on_fetch(self, index: int, t: float, event: dict[str, Any]) -> None:
        token = event["token"]
        self.last_fetch = max(self.last_fetch, t)
        if self.first_fetch is None:
            self.first_fetch = token
            text = f"fetched token {token} from the token endpoint"
        elif event.get("background"):
            text = f"renews early, in the background: fetched token {token}"
        else:
            text = f"fetched token {token} from the token endpoint"
        self.group(("fetch", index, token), t, index, text)

    def group(self, key: tuple[Any, ...], t: float, worker: int, text: str) -> None:
        """Note an event; the same event of several workers makes one line."""
        found = self.groups.get(key)
        if found is None:
            self.groups[key] = {"t": t, "workers": [worker], "text": text}
        elif worker not in found["workers"]:
            found["workers"].append(worker)

    def flush(self, *, force: bool = False) -> None:
        now = time.time()
        for key, found in sorted(self.groups.items(), key=lambda item: item[1]["t"]):
            if force or now - found["t"] >= GROUP_DELAY:
                del self.groups[key]
                self.line(found["t"], self.who(sorted(found["workers"])), found["text"])

    def who(self, workers: list[int]) -> str:
        """``worker 2``, ``workers 1, 3, 4``; past three, ``7 other workers``."""
        if len(workers) <= 3:
            return ("worker " if len(workers) == 1 else "workers ") + ", ".join(map(str, workers))
        if len(workers) == self.size:
            return f"all {self.size} workers"
        if len(workers) == self.size - 1:
            return f"{len(workers)} other workers"
        return f"{len(workers)} workers"

    def line(self, t: float, who: str, text: str) -> None:
        self.progress.clear()
        print(f"  {max(t - self.t0, 0.0):6.2f} s  {who:<16} {text}", file=self.out, flush=True)
        self.progress.draw()

    # -- the counts ------------------------------------------------------------

    def summary(self) -> int:
        reports = [w.report for w in self.crew if w.report is not None]
        problems: list[str] = []
        missing = [str(w.index) for w in self.crew if w.report is None]
        if missing:
            problems.append(f"worker {', '.join(missing)} did not report its counts")

        def total(name: str) -> int:
            return sum(int(r[name]) for r in reports)

        def stat(name: str) -> int:
            return sum(int(r["stats"][name]) for r in reports)

        made, failed, refused = total("requests"), total("failed"), total("final_401")
        retried, fetches = stat("retries_on_401"), stat("fetches")
        background = total("background_fetches")
        rows = [
            ("HTTP requests the API received", total("api_calls"), self.api.calls),
            ("token requests", fetches, self.tokens.count),
            ("401 answers from the API", retried + refused, self.api.unauthorized),
        ]
        out = self.out
        print(f"\n{'Counts':<38}{'workers said':>12}{'servers counted':>18}", file=out)
        print(f"  {'requests the workers made':<36}{made:>12}", file=out)
        for label, said, seen in rows:
            mark = "✓" if said == seen else "✗ mismatch"
            print(f"  {label:<36}{said:>12}{seen:>18}  {mark}", file=out)
            if said != seen:
                problems.append(f"{label}: the workers said {said}, the servers counted {seen}")
        print(f"  {'401s recovered by one retry':<36}{retried:>12}", file=out)
        renewed = stat("refreshes")
        print(
            f"  {'renewals in the background':<36}{renewed:>12}   ({background} fetched, "
            f"{max(renewed - background, 0)} from the shared cache)",
            file=out,
        )
        print(f"  {'requests that failed':<36}{failed + refused:>12}", file=out)

        if failed or refused:
            problems.append(f"{failed + refused} requests failed")
        problems.extend(self.complaints[:1])
        killed = [str(w.index) for w in self.crew if w.killed]
        if killed:
            problems.append(f"worker {', '.join(killed)} had to be killed")
        codes = {w.index: w.process.returncode for w in self.crew}
        problems.extend(f"worker {i} exited with status {c}" for i, c in codes.items() if c)
        if Path(self.directory).exists():
            problems.append(f"{self.directory} could not be removed")

        other = max(fetches - background - self.after_401, 0)
        when = "at start-up" if other <= 1 else "at start-up or on expiry"
        print(
            f"\n{made} requests from {self.size} processes took {fetches} token requests: "
            f"{other} {when}, {background} in the background ahead of expiry, "
            f"{self.after_401} after the revocation.",
            file=out,
        )
        print(
            f"Cleaned up: {self.size} worker processes exited, both servers stopped, "
            f"{self.directory} removed.",
            file=out,
            flush=True,
        )
        if problems:
            print(f"alf-session demo: failed: {'; '.join(problems)}", file=self.err, flush=True)
            return 1
        return 0


def run_demo(
    *,
    workers: int = 4,
    duration: float = 8.0,
    lifetime: float = 3.0,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Run the demo and print what happened.

    Returns:
        0 when every request succeeded and the workers' counts match the
        servers', 1 otherwise.
    """
    return _Demo(
        workers,
        duration,
        lifetime,
        out if out is not None else sys.stdout,
        err if err is not None else sys.stderr,
    ).run()


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
