"""A gateway of many credentials in one process: what each one costs between fetches.

Counts only, against the real loopback token server: sockets kept open to the
token endpoint, threads started, token requests.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from alf_session import ClientCredentials, MemoryStorage, TokenManager, TokenSession
from alf_session._servers import APIServer, TokenServer

pytest_plugins = ["tests.storage_fixtures"]


def client_sockets_to(port: int) -> int:
    """Established TCP connections from this host to ``port`` on loopback (Linux /proc)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                if int(local.rsplit(":", 1)[1], 16) != port:
                    count += 1
    return count


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/tcp")
def test_a_gateway_keeps_no_socket_per_credential_to_the_token_endpoint(
    idp: TokenServer, idp_api: APIServer
) -> None:
    port = int(idp.token_url.split(":")[2].split("/")[0])
    managers = [
        TokenManager(
            ClientCredentials(idp.token_url, idp.client_id, idp.client_secret, scope=f"tenant-{i}")
        )
        for i in range(200)
    ]
    sessions = [TokenSession(token_manager=manager) for manager in managers]
    for session in sessions:
        assert session.get(idp_api.base_url + "/orders").status_code == 200
    assert idp.count == 200
    assert client_sockets_to(port) == 0  # none kept, where 0.1 kept one per credential
    for manager in managers:  # and none after renewals either
        manager.force_refresh()
    assert idp.count == 400
    assert client_sockets_to(port) == 0
    for session in sessions:
        session.close()


def test_a_gateway_starts_no_thread_per_credential(
    idp: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    original = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if self.name.startswith("alf-session"):
            started.append(self.name)
        original(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    storage = MemoryStorage()  # shared by every credential, as a gateway's Redis would be
    managers = [
        TokenManager(
            ClientCredentials(idp.token_url, idp.client_id, idp.client_secret, scope=f"t{i}"),
            storage,
        )
        for i in range(300)
    ]
    for manager in managers:
        manager.get_token()
        manager.get_token()
    assert idp.count == 300
    assert sum(m.stats.hits for m in managers) == 300
    assert started == []  # MemoryStorage never blocks: not even a worker
