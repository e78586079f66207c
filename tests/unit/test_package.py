"""The package's public face: light imports, exported names, typing marker, error hierarchy."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

import session_monitor
from session_monitor import errors

SERVER_DEPENDENCIES = ("fastapi", "sqlalchemy", "uvicorn", "starlette")
PACKAGE_DIR = Path(session_monitor.__file__).parent
REPO_ROOT = Path(__file__).resolve().parents[2]


def modules_after_import(*modules: str, full: bool = False) -> list[str]:
    """Top-level names (``full``: every module name) in ``sys.modules`` after importing ``modules`` in a fresh
    interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted({{m if {full!r} else m.split('.')[0] for m in sys.modules}})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded: list[str] = json.loads(out.stdout)
    return loaded


@pytest.mark.parametrize("module", ["session_monitor", "session_monitor.client"])
def test_client_side_imports_no_server_dependency(module: str) -> None:
    loaded = modules_after_import(module)
    assert "session_monitor" in loaded
    assert [m for m in SERVER_DEPENDENCIES if m in loaded] == []


# What the shared pool's worker processes import: they run jobs, nothing of the client, the server or Panel.
WORKER_MUST_NOT_LOAD = ("panel", "bokeh", "tornado", "httpx", "psutil", "pydantic", *SERVER_DEPENDENCIES)


def _client_side(loaded: list[str]) -> list[str]:
    """What of the pool's parent side (the client agent, the engine, the session API) is in ``loaded``."""
    parent = ("session_monitor.client", "session_monitor.pool.jobs", "session_monitor.pool.engine")
    return [m for m in loaded if m.startswith(parent) or m.split(".")[0] in WORKER_MUST_NOT_LOAD]


def test_pool_worker_processes_import_neither_the_client_nor_panel() -> None:
    # aiomultiprocess starts workers with "spawn": each imports the worker module (its job runner and
    # initializer), the example jobs when it runs one, and with them session_monitor's and the pool's __init__.
    loaded = modules_after_import("session_monitor.pool.worker", "session_monitor.pool.examples", full=True)
    assert "session_monitor.pool.worker" in loaded
    assert _client_side(loaded) == []


def test_the_pool_check_sees_the_client_side_once_the_pool_is_used() -> None:
    # The session API (what a Panel app calls) loads the agent: the probe above must see it, or it proves nothing.
    code = "from session_monitor import pool\npool.for_session"
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded = _client_side(json.loads(out.stdout))
    assert {"session_monitor.client.agent", "session_monitor.pool.jobs", "httpx"} <= set(loaded)


def test_the_check_sees_server_dependencies_when_they_are_imported() -> None:
    # The same probe on the server package must find them, or the test above proves nothing.
    loaded = modules_after_import("session_monitor.server", "uvicorn")
    assert [m for m in SERVER_DEPENDENCIES if m in loaded] == list(SERVER_DEPENDENCIES)


def _public_names(module: ModuleType) -> list[str]:
    return sorted(
        name
        for name in dir(module)  # the module's __dir__: it includes the names it loads at first use
        if (not name.startswith("_") or name == "__version__")
        and not isinstance(value := getattr(module, name), ModuleType)  # submodules appear once imported
        and type(value).__module__ != "__future__"  # ``from __future__ import annotations``
    )


def test_all_lists_exactly_the_public_names() -> None:
    assert session_monitor.__all__ == _public_names(session_monitor)


def test_all_is_sorted_and_unique() -> None:
    assert session_monitor.__all__ == sorted(set(session_monitor.__all__))


def test_version_is_a_version_string() -> None:
    parts = session_monitor.__version__.split(".")
    assert len(parts) >= 2 and all(p.isdigit() for p in parts[:2])


def test_py_typed_is_shipped() -> None:
    marker = PACKAGE_DIR / "py.typed"
    assert marker.is_file()
    # The wheel is built from the package folder, and hatch leaves out git-ignored files.
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert "src/session_monitor" in pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert "Typing :: Typed" in pyproject["project"]["classifiers"]
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(marker)], cwd=REPO_ROOT, capture_output=True, timeout=30
    ).returncode
    assert ignored == 1, "py.typed is git-ignored (0) or git could not tell (128)"


def test_client_package_is_a_real_package() -> None:
    assert (PACKAGE_DIR / "client" / "__init__.py").is_file()


# --- errors -------------------------------------------------------------------------------------------------------


def test_config_error_is_a_value_error() -> None:
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.ConfigError, errors.SessionMonitorError)
    with pytest.raises(ValueError):
        raise errors.ConfigError("bad")


def test_session_ended_is_a_session_not_found() -> None:
    assert issubclass(errors.SessionEnded, errors.SessionNotFound)
    exc = errors.SessionEnded("abc", "killed")
    assert isinstance(exc, errors.SessionNotFound)
    assert exc.session_id == "abc" and exc.end_reason == "killed"
    assert "abc" in str(exc) and "killed" in str(exc)
    assert errors.SessionNotFound("abc").session_id == "abc"


def test_every_error_derives_from_session_monitor_error() -> None:
    classes = [
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == errors.__name__
    ]
    assert {c.__name__ for c in classes} >= {
        "SessionMonitorError",
        "ConfigError",
        "RequestFailed",
        "ServerUnavailable",
        "AuthError",
        "SessionNotFound",
        "SessionEnded",
    }
    for cls in classes:
        assert issubclass(cls, errors.SessionMonitorError), cls
    assert issubclass(errors.SessionMonitorError, Exception)


def test_exported_errors_are_the_errors_module_classes() -> None:
    for name in ("ConfigError", "ServerUnavailable", "SessionMonitorError", "SessionNotFound"):
        assert getattr(session_monitor, name) is getattr(errors, name)


def _drawn_tree() -> dict[str, str | None]:
    """Each class of the hierarchy drawn in ``errors``' docstring, with the class it is drawn under."""
    assert errors.__doc__ is not None
    lines = errors.__doc__.split("::", 1)[1].strip("\n").splitlines()
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in lines:
        if not line.strip():
            break
        body = line.lstrip(" │├└─")
        depth = (len(line) - len(body)) // 4 - 1  # "    SessionMonitorError" is depth 0; each level is 4 wide
        name = body.split()[0]
        stack[depth:] = [name]
        parents[name] = stack[depth - 1] if depth > 0 else None
    return parents


def test_the_drawn_error_tree_is_the_real_one() -> None:
    drawn = _drawn_tree()
    real = {
        name: next((b.__name__ for b in value.__bases__ if issubclass(b, errors.SessionMonitorError)), None)
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == errors.__name__
    }
    assert drawn == real


def test_the_dashboard_client_raises_errors_of_the_tree() -> None:
    from session_monitor.dashboard import client

    raised = [value for value in vars(client).values() if inspect.isclass(value) and issubclass(value, Exception)]
    assert {cls.__module__ for cls in raised} <= {errors.__name__}  # it defines no exception class of its own
    assert issubclass(errors.ServerUnavailable, errors.RequestFailed)
    assert issubclass(errors.AuthError, errors.RequestFailed)
