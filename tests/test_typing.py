"""The public edge as a type checker sees it: a misspelt option is an error.

``tests/typing/api.py`` holds what must type-check; this module runs mypy on
code that must not, and checks that each line gets its error.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import get_type_hints

import pytest

from alf_session import TokenManager
from alf_session.manager import ManagerOptions

ROOT = Path(__file__).resolve().parent.parent

# Each line must draw a mypy error whose message contains the comment's words.
MUST_FAIL = """
from alf_session import BearerAuth, TokenAdapter, TokenManager, TokenSession

manager = TokenManager(lambda: "t")
TokenSession("https://idp.example/token", "id", "s", leewy=5)  # "leewy"
TokenSession("https://idp.example/token", "id", "s", leeway="5")  # "leeway"
TokenSession("https://idp.example/token", "id", "s", token_host=["a"])  # "token_host"
TokenSession("https://idp.example/token", "id", "s", token_storage=42)  # "token_storage"
TokenSession("https://idp.example/token", "id", "s", token_retry="3")  # "token_retry"
TokenManager(object())  # "TokenManager"
TokenManager(lambda: "t", storage=3.5)  # "TokenManager"
TokenManager(lambda: "t", refresh_ahaed=0.5)  # "refresh_ahaed"
BearerAuth(manager, token_host=["a"])  # "token_host"
TokenAdapter(manager, pool_max_size=3)  # "pool_max_size"
TokenAdapter("not a manager")  # "TokenAdapter"
"""


def test_mypy_catches_misspelt_and_mistyped_options(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[lint]')")
    source = tmp_path / "misuse.py"
    source.write_text(MUST_FAIL)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--show-error-codes",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(source),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert "No module named mypy" not in done.stderr, done.stderr
    errors: dict[int, str] = {}
    for line in done.stdout.splitlines():
        parts = line.split(":", 3)
        if len(parts) == 4 and parts[0].endswith("misuse.py") and "error" in parts[2]:
            errors[int(parts[1])] = errors.get(int(parts[1]), "") + parts[3]
    for number, line in enumerate(MUST_FAIL.splitlines(), start=1):
        if "#" not in line:
            assert number not in errors, f"line {number} {line!r}: {errors.get(number)}"
            continue
        expected = line.rsplit("#", 1)[1].strip().strip('"')
        assert number in errors, f"mypy accepted line {number}: {line!r}\n{done.stdout}"
        assert expected in errors[number], f"line {number}: {errors[number]}"


def test_manager_options_match_the_manager() -> None:
    keywords = {
        name
        for name, parameter in inspect.signature(TokenManager).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert set(get_type_hints(ManagerOptions)) == keywords
