"""A real HTTP server that records where each request went and what it carried.

It answers ``200 {"ok": true}`` to everything. Bound to another loopback
address (``127.0.0.2``, ``::1``) it stands for a stranger's host; used as an
HTTP proxy it receives each request in absolute form, so it sees the host
name the client asked for even when that name does not resolve
(``evil.example``). Either way, a test asserts on bytes that really crossed
a socket, not on what the library thinks it did.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Seen:
    """One request as it arrived."""

    target: str  # the request target: a path, or an absolute URL through a proxy
    host_header: str | None
    authorization: str | None

    @property
    def target_host(self) -> str | None:
        """The host an absolute-form target names (a proxied request)."""
        return urlsplit(self.target).hostname


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class Recorder:
    """A started recording server on ``address`` (a free port); stop() it."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with recorder._lock:
                    recorder.seen.append(
                        Seen(self.path, self.headers.get("Host"), self.headers.get("Authorization"))
                    )
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        server_class = _Server6 if ":" in address else _Server
        self._httpd = server_class((address, 0), Handler)
        self.address = address
        self.port: int = self._httpd.server_address[1]
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        ).start()

    @property
    def netloc(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.netloc}"

    @property
    def authorizations(self) -> list[str | None]:
        with self._lock:
            return [seen.authorization for seen in self.seen]

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
