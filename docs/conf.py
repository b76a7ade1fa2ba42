"""Sphinx configuration of the alf-session documentation.

Build: ``tox -e docs``, or ``sphinx-build -W -b html docs docs/_build/html``;
``-b doctest`` runs every code example of the pages against loopback servers.
"""

from __future__ import annotations

import os
from pathlib import Path

import alf_session

project = "alf-session"
author = "alf-session developers"
copyright = "alf-session developers"
release = alf_session.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]
default_role = "code"
# Every page is checked: a broken reference or a malformed docstring fails the build (-W).
nitpicky = False

# -- API reference from the docstrings (Google style) ---------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
# requests' own docstrings refer to labels of its documentation, not of this one.
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" as fields of the class, not as separate entries that would
# describe a NamedTuple's fields twice.
napoleon_use_ivar = True

# -- code examples run: sphinx-build -b doctest -------------------------------
doctest_global_setup = """
import os
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
"""
trim_doctest_flags = True

# -- HTML -----------------------------------------------------------------------
html_theme = "furo"
html_title = f"alf-session {release}"
html_static_path: list[str] = []
html_theme_options = {
    "source_repository": "https://github.com/alf-session/alf-session/",
    "source_branch": "main",
    "source_directory": "docs/",
}


# -- the command line's --help, generated from its parser ----------------------


def _write_cli_help() -> None:
    from alf_session._cliargs import build_parser

    os.environ["COLUMNS"] = "88"  # argparse wraps to the terminal; pin it for the page
    out = Path(__file__).parent / "_generated"
    out.mkdir(exist_ok=True)
    parser = build_parser("alf-session")
    (out / "cli-help.txt").write_text(parser.format_help())
    commands = next(a for a in parser._actions if a.dest == "command")
    for name, sub in commands.choices.items():  # type: ignore[union-attr]
        (out / f"cli-{name}-help.txt").write_text(sub.format_help())


def setup(app: object) -> None:
    _write_cli_help()
