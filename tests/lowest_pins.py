"""Check that ``requirements-lowest.txt`` pins every direct dependency at the lower bound ``pyproject.toml`` claims.

``python -m tests.lowest_pins`` (run by ``./dev test``) exits 1 and names each dependency whose pin differs, so a
bound moved without ``./dev lock-lowest`` is caught before the lowest-version tests run on the wrong versions.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def pins(text: str) -> dict[str, Version]:
    """``name==version`` lines of a requirements file, by canonical name."""
    found: dict[str, Version] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[canonicalize_name(name.split("[", 1)[0])] = Version(version.strip())
    return found


def problems(pyproject: dict[str, object], pinned: dict[str, Version]) -> list[str]:
    project = pyproject["project"]
    assert isinstance(project, dict)
    texts = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        texts.extend(extra)
    found = []
    for text in texts:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name == canonicalize_name(project["name"]):  # the "all" extra names the others
            continue
        lower = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        if not lower:
            found.append(f"{requirement.name}: no lower bound (>=) in pyproject.toml")
        elif pinned.get(name) != lower[0]:
            found.append(f"{requirement.name}: pyproject.toml says >={lower[0]}, the file pins {pinned.get(name)}")
    return found


def main() -> int:
    with open(ROOT / "pyproject.toml", "rb") as f:
        pyproject = tomllib.load(f)
    found = problems(pyproject, pins((ROOT / "requirements-lowest.txt").read_text()))
    for problem in found:
        print(f"requirements-lowest.txt: {problem}; run ./dev lock-lowest", file=sys.stderr)  # noqa: T201
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
