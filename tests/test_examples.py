"""Every script in examples/ runs, offline, and tells the story it promises."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, **env: str) -> str:
    environment = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", **env}
    result = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "", result.stderr
    return result.stdout


def test_every_example_is_tested() -> None:
    tested = {
        "async_service.py",
        "custom_provider.py",
        "django_cache.py",
        "many_services.py",
        "mtls.py",
        "private_key_jwt.py",
        "observability.py",
        "quickstart.py",
        "token_exchange.py",
        "workload_identity.py",
        "sdk_session.py",
        "shared_redis.py",
    }
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_async_service() -> None:
    pytest.importorskip("starlette")
    out = run_example("async_service.py")
    assert "50 concurrent requests: 50 answered 200; token requests: 1" in out
    assert "after the revocation: HTTP 200, retried: True; token requests: 2" in out
    assert "API calls: 52, 401s retried: 1" in out


def test_async_service_app_is_servable_from_settings() -> None:
    """``uvicorn async_service:app`` finds an app once the settings are in the environment."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import async_service; "
        "print(type(async_service.app).__name__)"
    )
    env = {
        **os.environ,
        "ORDERS_API": "http://127.0.0.1:9",
        "TOKEN_ENDPOINT": "http://127.0.0.1:9/token",
        "CLIENT_ID": "gateway",
        "CLIENT_SECRET": "s3cret",
    }
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code, str(EXAMPLES)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "Starlette"


def test_quickstart() -> None:
    out = run_example("quickstart.py")
    assert "3 requests, 1 token request" in out
    assert "after the revocation: HTTP 200, retried once after HTTP 401" in out
    assert "token requests: 2, 401s retried: 1" in out
    assert "wrong secret: InvalidClient: invalid_client: Client authentication failed" in out


@pytest.mark.skipif(
    not os.environ.get("REDIS_URL") and shutil.which("redis-server") is None,
    reason="needs REDIS_URL or a redis-server binary",
)
def test_shared_redis() -> None:
    pytest.importorskip("redis")
    out = run_example("shared_redis.py")
    assert "4 processes made 40 requests; the token server saw 1 token request(s)" in out
    assert "token requests by the processes: 1; tokens read from Redis: 3" in out
    assert "API requests: 40, all authorized: True" in out


def test_shared_redis_says_why_it_skips(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PATH"] = str(tmp_path)  # no redis-server to be found
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "shared_redis.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("skipped: ")


def test_sdk_session() -> None:
    pytest.importorskip("gitlab")
    out = run_example("sdk_session.py")
    assert "TokenAdapter: python-gitlab read project 'shop/orders'" in out
    assert "BearerAuth: python-gitlab listed 2 issues" in out
    assert "token requests so far: 1" in out
    assert "token requests: 2, 401s retried: 1" in out


def test_django_cache() -> None:
    pytest.importorskip("django")
    out = run_example("django_cache.py")
    assert "worker 1: HTTP 200, fetched 1 token, 0 from Django's cache" in out
    assert "worker 2: HTTP 200, fetched 0 token, 1 from Django's cache" in out
    assert "token requests: 1 for both workers" in out


def test_custom_provider() -> None:
    out = run_example("custom_provider.py")
    assert "metadata provider: HTTP [200, 200, 200]" in out
    expires = re.search(r"token expires in (\d+) s", out)
    assert expires
    assert 3500 <= int(expires.group(1)) <= 3599  # "3599" arrived as a string
    assert "token file: HTTP 200, then HTTP 200 after a 401 (file read 2 times)" in out
    assert "unreachable metadata endpoint: TokenError:" in out


def test_many_services() -> None:
    out = run_example("many_services.py")
    for name in ("billing", "inventory", "shipping"):
        assert re.search(rf"^{name} +→ its API: HTTP \[200, 200\]$", out, re.M)
    assert (
        "token requests: company 2 (https://billing.example, https://inventory.example), "
        "partner 1" in out
    )
    assert "tokens seen by more than one API: 0" in out
    assert "billing session → inventory API: HTTP 401, sent with a token: False" in out


def test_private_key_jwt() -> None:
    out = run_example("private_key_jwt.py")
    assert "3 requests, 1 token request, authenticated by private_key_jwt" in out
    assert "metadata fetched 1 time(s)" in out
    assert "token requests: 2, distinct assertion jti: 2" in out
    assert "assertion header: alg=ES256 kid=k1" in out


def test_workload_identity() -> None:
    out = run_example("workload_identity.py")
    assert "2 requests, 1 token request" in out
    assert 'assertions sent: ["rotation-1", "rotation-2"]' in out


def test_mtls() -> None:
    out = run_example("mtls.py")
    assert "HTTP 200, 1 token request, authenticated by tls_client_auth" in out
    assert "token bound to the certificate: True" in out


def test_token_exchange() -> None:
    out = run_example("token_exchange.py")
    assert "3 API requests: 1 upstream token request, 1 exchange" in out
    assert "subject token type: access_token, audience: 'orders-api'" in out
    assert "after revocation: 2 upstream token requests, 3 exchanges" in out


def test_observability() -> None:
    pytest.importorskip("opentelemetry.sdk")
    out = run_example("observability.py")
    events = [json.loads(line[6:]) for line in out.splitlines() if line.startswith("event ")]
    assert [e["kind"] for e in events] == ["fetched", "invalidated", "fetched", "retried_401"]
    assert "21 requests: 2 token requests, 20 from memory" in out
    assert (
        'metric alf_session.token.requests {"grant": "client_credentials", '
        '"outcome": "success"} 2' in out
    )
    assert 'metric alf_session.token.lookups {"tier": "memory"} 20' in out
    assert "metric alf_session.unauthorized.retries {} 1" in out
    assert out.count("span POST http://127.0.0.1:") == 2
    assert "demo-secret" not in out
