"""alf_session.testing and the pytest plugin, as a user's test suite meets them."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from alf_session import TokenManager, TokenSession
from alf_session.testing import APIServer, StaticTokenProvider, TokenServer, local_servers

pytest_plugins = ["pytester"]


# -- the plugin in a user's suite ------------------------------------------------

USER_TESTS = """
import pytest
import requests

from alf_session import TokenError, TokenSession


def test_one_token_for_many_requests(alf_token_server, alf_api_server, alf_credentials):
    with TokenSession(**alf_credentials) as session:
        for _ in range(5):
            assert session.get(alf_api_server.base_url + "/orders").status_code == 200
    assert alf_token_server.count == 1
    assert alf_api_server.calls == 5


def test_revoked_token_is_replaced(alf_token_session, alf_token_server, alf_api_server):
    alf_token_session.get(alf_api_server.base_url + "/a")
    alf_token_server.revoke()
    response = alf_token_session.get(alf_api_server.base_url + "/b")
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert alf_api_server.unauthorized == 1
    assert alf_token_server.count == 2


def test_failing_endpoint(alf_token_endpoint, alf_token_server):
    alf_token_server.fail_next(503, "down for maintenance", times=10)
    session = TokenSession(alf_token_endpoint, "demo-client", "demo-secret", token_retry=0)
    with pytest.raises(TokenError, match="503"):
        session.get("http://127.0.0.1:9/never-sent")


def test_each_test_starts_at_zero(alf_token_server):
    assert alf_token_server.count == 0


@pytest.mark.alf_token_server(client_id="svc", client_secret="pw", expires_in=120)
def test_marker_options(alf_token_server, alf_credentials):
    assert alf_credentials["client_id"] == "svc"
    response = requests.post(
        alf_token_server.token_url,
        data={"grant_type": "client_credentials"},
        auth=("svc", "pw"),
        timeout=10,
    )
    assert response.json()["expires_in"] == 120
"""


def test_plugin_fixtures_in_a_users_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=5)


ASYNC_USER_TESTS = """
import anyio
import pytest

from alf_session.httpx import AsyncTokenClient


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


@pytest.mark.anyio
async def test_async_client(alf_credentials, alf_api_server, alf_token_server):
    async with AsyncTokenClient(**alf_credentials) as client:
        async with anyio.create_task_group() as tasks:
            for _ in range(10):
                tasks.start_soon(client.get, alf_api_server.base_url + "/orders")
        alf_token_server.revoke()
        response = await client.get(alf_api_server.base_url + "/orders")
    assert response.status_code == 200
    assert alf_token_server.count == 2
    assert alf_api_server.calls == 12


@pytest.mark.anyio
async def test_manager(alf_token_manager, alf_token_server):
    token = await alf_token_manager.aget_token()
    assert alf_token_server.check(token.access_token) is None
    assert await alf_token_manager.aget_token() is token
    assert alf_token_server.count == 1
"""


def test_plugin_fixtures_in_a_users_async_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user_async=ASYNC_USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=4)


def test_plugin_is_registered_as_an_entry_point() -> None:
    found = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert found.get("alf_session") == "alf_session.pytest_plugin"


def test_plugin_lists_its_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nothing="def test_nothing(): pass")
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    for name in (
        "alf_token_server",
        "alf_token_endpoint",
        "alf_credentials",
        "alf_api_server",
        "alf_token_session",
        "alf_token_manager",
    ):
        result.stdout.fnmatch_lines([f"{name}*"])


def test_importing_the_package_loads_no_test_machinery() -> None:
    code = (
        "import sys, alf_session; "
        "print(sorted(m for m in ('pytest', 'alf_session.testing', 'alf_session.pytest_plugin',"
        " 'alf_session._servers', 'alf_session.cli') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_testing_does_not_import_pytest() -> None:
    code = "import sys, alf_session.testing; print('pytest' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"


# -- StaticTokenProvider ------------------------------------------------------------


def test_static_provider_needs_no_server() -> None:
    provider = StaticTokenProvider("t0k3n", expires_in=60)
    manager = TokenManager(provider)
    tokens = {manager.get_token().access_token for _ in range(10)}
    assert tokens == {"t0k3n"}
    assert provider.calls == 1
    token = manager.get_token()
    assert token.expires_in is not None
    assert 0 < token.expires_in <= 60


def test_static_provider_hands_out_tokens_in_turn() -> None:
    provider = StaticTokenProvider("a", "b")
    assert [provider.fetch_token().access_token for _ in range(4)] == ["a", "b", "b", "b"]
    assert provider.calls == 4
    assert StaticTokenProvider().fetch_token().access_token == "test-token"
    assert StaticTokenProvider(expires_in=None).fetch_token().expires_at is None
    with pytest.raises(TypeError):
        StaticTokenProvider("")


def test_static_provider_drives_the_401_retry() -> None:
    # The API knows neither static token: the first is refused, the session
    # retries once with the next, which is refused too and returned as is.
    with local_servers() as (_, api):
        provider = StaticTokenProvider("old", "new")
        with TokenSession(token_manager=TokenManager(provider)) as session:
            response = session.get(f"{api.base_url}/orders")
        assert response.status_code == 401
        assert api.seen == ["Bearer old", "Bearer new"]
        assert provider.calls == 2


def test_static_provider_shares_through_storage() -> None:
    from alf_session import MemoryStorage

    storage = MemoryStorage()
    first = StaticTokenProvider("shared", cache_key="static-test")
    second = StaticTokenProvider("other", cache_key="static-test")
    assert TokenManager(first, storage).get_token().access_token == "shared"
    assert TokenManager(second, storage).get_token().access_token == "shared"
    assert second.calls == 0


def test_local_servers_stop_on_exit() -> None:
    with local_servers(expires_in=5) as (tokens, api):
        assert isinstance(tokens, TokenServer)
        assert isinstance(api, APIServer)
        url = api.base_url
        with TokenSession(tokens.token_url, "demo-client", "demo-secret") as session:
            assert session.get(url).ok
    import requests

    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)
