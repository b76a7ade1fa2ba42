"""Check the built sdist and wheel hold what a user needs: ``python .ci/check_dist.py dist``.

The sdist: the license, the changelog, and everything the tests need to run
unpacked (tests, examples, benchmarks, docs). The wheel: the package, its
type marker and license, and nothing of the tests. Both: the metadata PyPI
shows (license expression, project URLs, classifiers, the pytest plugin).
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

SDIST_NEEDS = [
    "LICENSE",
    "README.rst",
    "CHANGELOG.rst",
    "pyproject.toml",
    "tox.ini",
    "alf_session/py.typed",
    "tests/conftest.py",
    "tests/typing/api.py",
    "examples/quickstart.py",
    "benchmarks/run.py",
    "docs/conf.py",
    "docs/index.rst",
]
WHEEL_NEEDS = ["alf_session/__init__.py", "alf_session/py.typed"]
URLS = {"Homepage", "Documentation", "Source", "Issues", "Changelog"}
CLASSIFIERS = {
    "Framework :: Pytest",
    "Programming Language :: Python :: 3.10",
    "Programming Language :: Python :: 3.13",
}


def check_metadata(text: str, where: str) -> list[str]:
    meta = Parser().parsestr(text)
    problems = []
    if meta.get("License-Expression") != "Apache-2.0":
        problems.append(f"{where}: License-Expression is {meta.get('License-Expression')!r}")
    if "LICENSE" not in meta.get_all("License-File", []):
        problems.append(f"{where}: no License-File: LICENSE")
    urls = {value.split(",", 1)[0].strip() for value in meta.get_all("Project-URL", [])}
    if missing := URLS - urls:
        problems.append(f"{where}: no project URL {sorted(missing)}")
    if missing := CLASSIFIERS - set(meta.get_all("Classifier", [])):
        problems.append(f"{where}: no classifier {sorted(missing)}")
    return problems


def main(dist: Path) -> int:
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    problems: list[str] = []
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        problems += [f"sdist: no {name}" for name in SDIST_NEEDS if name not in names]
        problems += [f"sdist: holds {name}" for name in names if "/_build/" in name]
        top = archive.getnames()[0].split("/", 1)[0]
        pkg_info = archive.extractfile(f"{top}/PKG-INFO")
        if pkg_info is None:
            raise SystemExit(f"check_dist: {sdist.name} has no PKG-INFO")
        problems += check_metadata(pkg_info.read().decode(), "sdist")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        problems += [f"wheel: no {name}" for name in WHEEL_NEEDS if name not in names]
        dist_info = next(n.split("/", 1)[0] for n in names if ".dist-info/" in n)
        if f"{dist_info}/licenses/LICENSE" not in names:
            problems.append("wheel: no LICENSE")
        problems += [f"wheel: holds {n}" for n in names if n.startswith(("tests/", "docs/"))]
        problems += check_metadata(archive.read(f"{dist_info}/METADATA").decode(), "wheel")
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        if "[pytest11]" not in entry_points or "alf-session = " not in entry_points:
            problems.append("wheel: the console script or the pytest plugin is missing")
    for problem in problems:
        print(f"check_dist: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_dist: {sdist.name} and {wheel.name} hold what they should")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "dist")))
