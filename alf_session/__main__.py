"""``python -m alf_session``: the ``alf-session`` command line."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m alf_session"))
