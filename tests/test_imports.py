"""``import alf_session`` stays light: no optional backend, no side effects."""

from __future__ import annotations

import json
import subprocess
import sys

OPTIONAL = (
    "redis",
    "pymemcache",
    "django",
    "filelock",
    "cryptography",
    "valkey",
    "hypothesis",
    "opentelemetry",
    "jwt",
    "trustme",
)

SCRIPT = """
import json, sys
import alf_session
from alf_session import TokenSession, TokenManager, ClientCredentials
import logging
print(json.dumps({
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in %r),
    "handlers": [type(h).__name__ for h in logging.getLogger("alf_session").handlers],
    "threads": __import__("threading").active_count(),
}))
"""


def run(script: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_import_loads_no_optional_backend() -> None:
    result = run(SCRIPT % (OPTIONAL,))
    assert result["loaded"] == []


def test_import_adds_only_a_null_handler_and_starts_no_thread() -> None:
    result = run(SCRIPT % (OPTIONAL,))
    assert result["handlers"] == ["NullHandler"]
    assert result["threads"] == 1


def test_building_a_session_loads_no_optional_backend() -> None:
    script = (
        "import json, sys\n"
        "from alf_session import TokenSession\n"
        "s = TokenSession('https://idp.example/token', 'id', 'secret')\n"
        "s.close()\n"
        f"print(json.dumps({{'loaded': sorted(m for m in sys.modules "
        f"if m.split('.')[0] in {OPTIONAL!r}), 'handlers': [], 'threads': 1}}))\n"
    )
    assert run(script)["loaded"] == []


# The async front doors and their event loops are loaded by whoever uses them:
# a requests-only service never pays for asyncio, httpx or aiohttp.
ASYNC = ("asyncio", "httpx", "aiohttp", "anyio", "trio", "sniffio", "httpcore")


def test_import_loads_no_event_loop_or_async_client() -> None:
    result = run(SCRIPT % (ASYNC,))
    assert result["loaded"] == []


def test_importing_the_otel_module_loads_no_opentelemetry() -> None:
    script = (
        "import json, sys, threading; import alf_session.otel; "
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry')); "
        "print(json.dumps({'loaded': loaded, 'threads': threading.active_count()}))"
    )
    result = run(script)
    assert result == {"loaded": [], "threads": 1}
