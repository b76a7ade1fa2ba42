"""The ``alf-session`` command line, driven as a user drives it: in a subprocess.

The servers are the ``alf_token_server`` / ``alf_api_server`` fixtures of
alf-session's own pytest plugin (what a user's test suite gets).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from alf_session.testing import APIServer, TokenServer

SECRET = "demo-secret"  # the plugin's TokenServer default


def cli(
    *args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m alf_session ARGS`` with a clean environment plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ALF_")}
    base["NO_PROXY"] = base["no_proxy"] = "127.0.0.1,localhost"
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "alf_session", *args],
        env=base,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def creds(server: TokenServer, **more: str) -> dict[str, str]:
    return {
        "ALF_TOKEN_ENDPOINT": server.token_url,
        "ALF_CLIENT_ID": server.client_id,
        "ALF_CLIENT_SECRET": server.client_secret,
        **more,
    }


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- help and usage -------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ((), "COMMAND"),
        (("token",), "--show-refresh-token"),
        (("request",), "--params"),
        (("demo",), "--workers"),
    ],
)
def test_every_command_has_help(command: tuple[str, ...], expected: str) -> None:
    result = cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")
    assert expected in result.stdout


def test_version_and_no_command() -> None:
    from alf_session import __version__

    assert cli("--version").stdout.strip() == f"python -m alf_session {__version__}"
    bare = cli()
    assert bare.returncode == 2
    assert "usage:" in bare.stderr


def test_console_script_prints_a_token(alf_token_server: TokenServer) -> None:
    script = Path(sys.executable).with_name("alf-session")
    if not script.exists():
        pytest.skip("alf-session console script not installed next to this interpreter")
    env = {**os.environ, **creds(alf_token_server), "NO_PROXY": "127.0.0.1"}
    result = subprocess.run(
        [str(script), "token"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert alf_token_server.check(result.stdout.strip()) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("bogus",), "invalid choice: 'bogus'"),
        (("request",), "the following arguments are required: METHOD, URL"),
        (("request", "GET", "http://127.0.0.1:9/", "--json", "{"), "--json is not valid JSON"),
        (("request", "GET", "http://127.0.0.1:9/", "-H", "no colon"), "-H wants 'Name: value'"),
        (("request", "GET", "http://127.0.0.1:9/", "--params", "novalue"), "NAME=VALUE"),
        (("request", "G ET", "http://127.0.0.1:9/"), "is not an HTTP method"),
        (("token", "--show-refresh-token"), "only applies with --json"),
        (("demo", "--workers", "0"), "not between 1 and 16"),
        (("token", "--client-secret", "x", "--client-secret-file", "f"), "not both"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    args: tuple[str, ...], message: str, alf_token_server: TokenServer
) -> None:
    result = cli(*args, env=creds(alf_token_server))
    assert result.returncode == 2
    assert message in one_line(result.stderr)
    assert result.stdout == ""
    assert alf_token_server.count == 0


def test_missing_credentials_name_the_variables() -> None:
    result = cli("token")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "ALF_TOKEN_ENDPOINT" in line
    assert "ALF_CLIENT_ID" in line


# -- token ----------------------------------------------------------------------


def test_token_prints_exactly_the_token(
    alf_token_server: TokenServer, alf_api_server: APIServer
) -> None:
    result = cli("token", env=creds(alf_token_server))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    token = result.stdout.removesuffix("\n")
    assert result.stdout == token + "\n"
    assert "\n" not in token
    assert " " not in token
    assert alf_token_server.check(token) is None  # a token the server issued, still valid
    assert alf_token_server.count == 1
    # what `curl -H "Authorization: Bearer $(alf-session token)"` does
    response = requests.get(
        f"{alf_api_server.base_url}/orders",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200


def test_token_json(alf_token_server: TokenServer) -> None:
    alf_token_server.issue_refresh_tokens = True
    result = cli("token", "--json", env=creds(alf_token_server, ALF_SCOPE="orders:read"))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert alf_token_server.check(data["access_token"]) is None
    assert data["token_type"] == "Bearer"
    assert data["scope"] == "orders:read"
    assert 3500 <= data["expires_in"] <= 3600
    assert "refresh_token" not in data
    assert "rt-" not in result.stdout

    shown = json.loads(
        cli("token", "--json", "--show-refresh-token", env=creds(alf_token_server)).stdout
    )
    assert shown["refresh_token"].startswith("rt-")


def test_options_override_the_environment(alf_token_server: TokenServer) -> None:
    env = creds(alf_token_server, ALF_SCOPE="from-env", ALF_AUDIENCE="https://api.example")
    result = cli("token", "--scope", "from-option", "--auth-method", "client_secret_post", env=env)
    assert result.returncode == 0, result.stderr
    form = alf_token_server.requests[0].form
    assert form["scope"] == "from-option"
    assert form["audience"] == "https://api.example"
    assert form["client_secret"] == SECRET  # client_secret_post puts it in the body
    assert "Authorization" not in alf_token_server.requests[0].headers


def test_wrong_secret_is_one_line_with_the_servers_error(alf_token_server: TokenServer) -> None:
    wrong = "not-the-secret-xyz"
    result = cli("token", env=creds(alf_token_server, ALF_CLIENT_SECRET=wrong))
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith("python -m alf_session: error:")
    assert "invalid_client" in line
    assert "Client authentication failed" in line  # the server's error_description
    assert "client_secret" in line  # what to check
    for secret in (wrong, SECRET):
        assert secret not in result.stderr + result.stdout


def test_secret_option_warns_and_is_never_echoed(alf_token_server: TokenServer) -> None:
    env = creds(alf_token_server)
    del env["ALF_CLIENT_SECRET"]
    result = cli("token", "--client-secret", SECRET, env=env)
    assert result.returncode == 0
    assert "visible to other users" in result.stderr
    assert SECRET not in result.stderr

    wrong = "wrong-on-the-command-line"
    failed = cli("token", "--client-secret", wrong, env=env)
    assert failed.returncode == 1
    assert wrong not in failed.stderr


def test_client_secret_file_and_stdin(alf_token_server: TokenServer, tmp_path: Path) -> None:
    env = creds(alf_token_server)
    del env["ALF_CLIENT_SECRET"]
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    from_file = cli("token", "--client-secret-file", str(secret_file), env=env)
    assert from_file.returncode == 0, from_file.stderr
    from_stdin = cli("token", "--client-secret-file", "-", env=env, input=SECRET + "\n")
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert alf_token_server.check(from_stdin.stdout.strip()) is None

    missing = cli("token", "--client-secret-file", str(tmp_path / "nope"), env=env)
    assert missing.returncode == 2
    assert "cannot read --client-secret-file" in one_line(missing.stderr)


def test_plain_http_to_a_remote_host_is_refused_before_connecting() -> None:
    result = cli(
        "token",
        env={"ALF_TOKEN_ENDPOINT": "http://idp.example/token", "ALF_CLIENT_ID": "c"},
    )
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "clear text" in line
    assert "--allow-insecure-http" in line


def test_unreachable_endpoint_is_one_line(unused_port: int) -> None:
    result = cli(
        "token",
        env={
            "ALF_TOKEN_ENDPOINT": f"http://127.0.0.1:{unused_port}/token",
            "ALF_CLIENT_ID": "c",
            "ALF_CLIENT_SECRET": "s",
        },
    )
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert f"could not reach token endpoint http://127.0.0.1:{unused_port}/token" in line


def test_debug_adds_the_traceback(alf_token_server: TokenServer) -> None:
    env = creds(alf_token_server, ALF_CLIENT_SECRET="wrong-secret")
    result = cli("--debug", "token", env=env)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "InvalidClient" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("python -m alf_session: error:")
    assert "wrong-secret" not in result.stderr


def test_verbose_logs_what_happens_but_no_secret(alf_token_server: TokenServer) -> None:
    result = cli("-v", "token", env=creds(alf_token_server))
    assert result.returncode == 0
    token = result.stdout.strip()
    assert "fetched token" in result.stderr
    assert token not in result.stderr
    assert SECRET not in result.stderr


def test_storage_shares_the_token_between_runs(
    alf_token_server: TokenServer, tmp_path: Path
) -> None:
    env = creds(alf_token_server, ALF_STORAGE=(tmp_path / "tokens").as_uri())
    first = cli("token", env=env)
    second = cli("token", env=env)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout
    assert alf_token_server.count == 1

    refreshed = cli("token", "--refresh", env=env)
    assert refreshed.stdout != first.stdout
    assert alf_token_server.count == 2
    assert cli("token", env=env).stdout == refreshed.stdout  # the store holds the new one
    assert alf_token_server.count == 2
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert SECRET.encode() not in stored


def test_storage_down_is_a_warning_not_a_failure(
    alf_token_server: TokenServer, unused_port: int
) -> None:
    pytest.importorskip("redis")
    env = creds(alf_token_server, ALF_STORAGE=f"redis://127.0.0.1:{unused_port}/0")
    result = cli("token", env=env)
    assert result.returncode == 0
    assert alf_token_server.check(result.stdout.strip()) is None
    line = one_line(result.stderr)
    assert line.startswith("python -m alf_session: warning: token storage")
    assert SECRET not in line


def test_unknown_storage_url_is_a_usage_error(alf_token_server: TokenServer) -> None:
    result = cli("token", env=creds(alf_token_server, ALF_STORAGE="bogus://x"))
    assert result.returncode == 2
    assert "bogus" in one_line(result.stderr)


# -- request --------------------------------------------------------------------


def test_request_prints_the_body_and_the_status(
    alf_token_server: TokenServer, alf_api_server: APIServer
) -> None:
    result = cli(
        "request", "GET", f"{alf_api_server.base_url}/orders", "--params", "status=open",
        env=creds(alf_token_server),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "ok": True, "path": "/orders", "method": "GET", "body_length": 0,
    }  # fmt: skip
    assert result.stderr.strip() == "HTTP 200 OK"
    sent = alf_api_server.seen[-1]
    assert sent is not None
    assert sent.startswith("Bearer ")
    assert alf_token_server.check(sent[7:]) is None


def test_request_bodies(
    alf_token_server: TokenServer, alf_api_server: APIServer, tmp_path: Path
) -> None:
    url = f"{alf_api_server.base_url}/orders"
    env = creds(alf_token_server)
    body = '{"sku": "A-1", "qty": 2}'
    as_json = cli("request", "POST", url, "--json", body, env=env)
    assert json.loads(as_json.stdout)["body_length"] == len(body)
    upload = tmp_path / "note.txt"
    upload.write_bytes(b"x" * 1234)
    from_file = cli("request", "put", url, "-d", f"@{upload}", env=env)
    assert json.loads(from_file.stdout) == {
        "ok": True, "path": "/orders", "method": "PUT", "body_length": 1234,
    }  # fmt: skip
    from_stdin = cli("request", "PATCH", url, "-d", "@-", env=env, input="hello")
    assert json.loads(from_stdin.stdout)["body_length"] == 5


def test_request_is_retried_once_after_a_401(
    alf_token_server: TokenServer, alf_api_server: APIServer, tmp_path: Path
) -> None:
    env = creds(alf_token_server, ALF_STORAGE=(tmp_path / "tokens").as_uri())
    assert cli("token", env=env).returncode == 0  # cached in the shared storage
    alf_token_server.revoke()
    result = cli("request", "GET", f"{alf_api_server.base_url}/orders", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("HTTP 200 OK")
    assert "retry" in result.stderr
    assert alf_api_server.unauthorized == 1
    assert alf_token_server.count == 2


def test_request_error_status_exits_1_with_the_body(
    alf_token_server: TokenServer, alf_api_server: APIServer
) -> None:
    result = cli(
        "request", "GET", f"{alf_api_server.base_url}/orders", "-H", "Authorization: Bearer nope",
        env=creds(alf_token_server),
    )  # fmt: skip
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"] == "invalid_token"
    assert result.stderr.strip() == "HTTP 401 Unauthorized"
    assert alf_api_server.seen == ["Bearer nope"]  # the caller's header wins; no retry


def test_request_to_an_unreachable_url(alf_token_server: TokenServer, unused_port: int) -> None:
    url = f"http://127.0.0.1:{unused_port}/orders"
    result = cli("request", "GET", url, env=creds(alf_token_server))
    assert result.returncode == 1
    assert f"could not reach {url}" in one_line(result.stderr)


# -- demo -----------------------------------------------------------------------


def _count(stdout: str, label: str) -> list[int]:
    match = re.search(rf"^  {re.escape(label)} +(\d+)(?: +(\d+))?", stdout, re.M)
    assert match, f"no {label!r} in the output:\n{stdout}"
    return [int(g) for g in match.groups() if g is not None]


def test_demo_counts_match_the_servers_and_nothing_is_left() -> None:
    result = cli("demo", timeout=120)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Traceback" not in result.stderr

    api_said, api_counted = _count(out, "HTTP requests the API received")
    fetches_said, fetches_counted = _count(out, "token requests")
    said_401, counted_401 = _count(out, "401 answers from the API")
    assert api_said == api_counted
    assert fetches_said == fetches_counted
    assert said_401 == counted_401
    (made,) = _count(out, "requests the workers made")
    (recovered,) = _count(out, "401s recovered by one retry")
    (failed,) = _count(out, "requests that failed")
    assert failed == 0
    assert recovered >= 1  # the revoked token was answered by 401 and retried
    assert api_counted == made + recovered
    assert fetches_counted < made / 10  # one shared token, not one per request or worker
    assert "in the background: fetched token" in out
    assert "took token" in out  # other workers read it from FileStorage
    assert re.search(r"401 for \w+; retried with", out)  # the revocation, on the timeline

    # nothing left behind: the directory is gone, no worker runs any more
    directory = re.search(r"FileStorage\((\S+)\)", out)
    assert directory
    assert not Path(directory.group(1)).exists()
    api_url = re.search(r"protected API\s+(http://\S+)/orders", out)
    assert api_url
    assert not _processes_mentioning(api_url.group(1))
    assert not re.search(r"\bat-[\w-]{20,}", out + result.stderr)  # no access token shown


def _processes_mentioning(text: str) -> list[str]:
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    found = []
    for entry in proc.iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


# -- fixtures -------------------------------------------------------------------


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- credentials without shared secrets ----------------------------------------------


@pytest.fixture
def signing_server(tmp_path: Path) -> Iterator[tuple[TokenServer, Path]]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = TokenServer("cli-client", client_keys={"cli-client": key.public_key()})
    server.start()
    yield server, path
    server.stop()


def test_private_key_and_issuer_from_options(signing_server: tuple[TokenServer, Path]) -> None:
    server, key = signing_server
    result = cli(
        "token", "--issuer", server.issuer, "--client-id", "cli-client",
        "--private-key", str(key), "--key-id", "k9",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert server.check(result.stdout.strip()) is None
    assert server.metadata_requests == 1
    assert server.requests[0].form["client_assertion_type"].endswith("jwt-bearer")
    assert server.refusals == []


def test_private_key_and_assertion_file_from_environment(
    signing_server: tuple[TokenServer, Path], tmp_path: Path
) -> None:
    server, key = signing_server
    env = {"ALF_ISSUER": server.issuer, "ALF_CLIENT_ID": "cli-client"}
    result = cli("token", env={**env, "ALF_PRIVATE_KEY_FILE": str(key)})
    assert result.returncode == 0, result.stderr
    missing = cli("token", env={**env, "ALF_CLIENT_ASSERTION_FILE": str(tmp_path / "nope")})
    assert missing.returncode == 1
    assert "client_assertion file" in one_line(missing.stderr)
    assert server.count == 1


def test_a_bad_key_file_is_one_line_without_its_content(tmp_path: Path) -> None:
    bad = tmp_path / "key.pem"
    bad.write_text(
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n"
    )
    result = cli(
        "token", "--token-endpoint", "https://idp.example/token", "--client-id", "x",
        "--private-key", str(bad),
    )  # fmt: skip
    assert result.returncode != 0
    line = one_line(result.stderr)
    assert "not a PEM private key" in line
    assert "c2VjcmV0" not in line


def test_cert_key_needs_cert_and_endpoint_or_issuer() -> None:
    result = cli("token", env={"ALF_ISSUER": "https://idp.example", "ALF_CLIENT_ID": "x",
                               "ALF_CERT_KEY_FILE": "/nonexistent"})  # fmt: skip
    assert result.returncode == 2
    assert "--cert-key" in one_line(result.stderr)
    both = cli("token", "--token-endpoint", "https://idp.example/t", "--issuer",
               "https://idp.example", "--client-id", "x", "--client-secret-file", "-",
               input="s\n")  # fmt: skip
    assert both.returncode == 2
    assert "not both" in one_line(both.stderr)
