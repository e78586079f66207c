"""Imports flow one way: no import cycle between the modules under ``src``, and the Panel integration never
imports the tracker.

Every ``import`` and ``from ... import`` of every module is read with :mod:`ast`: those at the top, those
inside functions and methods (imported later, at call time, they are a dependency all the same), and
those under ``if TYPE_CHECKING:``. Type-only imports count too: none of ours closes a cycle today, and a
cycle that exists only for the type checker is still two modules that cannot be read, changed or split
apart one without the other. Whoever needs one may exclude :func:`_type_checking_only` nodes here,
saying why.

An import names a module: ``from a.b import c`` depends on ``a.b.c`` when that is a module, else on
``a.b``. Parent packages are not edges: importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py``
first, but those only re-export, and counting them would make every package a cycle with its modules.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import session_monitor

SRC = Path(session_monitor.__file__).resolve().parent.parent
PACKAGE = "session_monitor"


def module_names(src: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module under ``src/session_monitor``."""
    names: dict[str, Path] = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The project's modules that module ``name`` imports, anywhere in its body (see the module docstring)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(name, path).split(".")
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {module for module in found if module in known and module != name}


def import_graph(src: Path) -> dict[str, set[str]]:
    """Each module of ``src`` and the project's modules it imports."""
    names = module_names(src)
    return {name: imported_modules(name, path, set(names)) for name, path in names.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``), or ``None``: what :mod:`graphlib` finds sorting the modules."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle: list[str] = exc.args[1]
        return cycle[::-1]  # graphlib lists it against the import direction
    return None


def test_the_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from session_monitor.sub.a import A\n")
    (package / "sub" / "a.py").write_text("A = 1\n\ndef f():\n    from session_monitor.sub import b\n")
    (package / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n")
    graph = import_graph(tmp_path)
    assert graph == {
        "session_monitor": set(),
        "session_monitor.sub": {"session_monitor.sub.a"},
        "session_monitor.sub.a": {"session_monitor.sub.b"},
        "session_monitor.sub.b": {"session_monitor.sub.a"},
    }
    cycle = find_cycle(graph)
    assert cycle is not None and set(cycle) == {"session_monitor.sub.a", "session_monitor.sub.b"}
    graph["session_monitor.sub.b"] = set()
    assert find_cycle(graph) is None


def test_no_import_cycle_in_src() -> None:
    cycle = find_cycle(import_graph(SRC))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("module", ["session_monitor.client.panel", "session_monitor.client.liveness"])
def test_the_panel_integration_never_imports_the_tracker(module: str) -> None:
    names = module_names(SRC)
    assert "session_monitor.client.tracker" not in imported_modules(module, names[module], set(names))


MAX_MODULE_LINES = 400
"""Modules stay under about 400 lines, each with one reason to change (CONVENTIONS.md)."""


def test_no_module_in_src_is_over_400_lines() -> None:
    sizes = {path.relative_to(SRC).as_posix(): len(path.read_text().splitlines()) for path in SRC.rglob("*.py")}
    assert len(sizes) > 50  # the whole package was read
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}
