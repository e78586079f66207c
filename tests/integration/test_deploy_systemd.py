"""``deploy/systemd``: the units pass ``systemd-analyze verify``, and their commands and environment file really run.

``verify`` needs each ``ExecStart`` binary to exist: the units name ``/opt/session-monitor/bin/…`` (the venv the
recipe installs), so the test verifies copies that point at this test run's venv instead, the one change made.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
ENV_FILE = UNITS / "session-monitor.env"
INSTALLED_BIN = "/opt/session-monitor/bin/"
VENV_BIN = str(Path(sys.executable).parent) + "/"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
HARDENING = ("ProtectSystem=strict", "NoNewPrivileges=yes", "DynamicUser=yes", "Restart=on-failure")


def _local_copy(unit: str, folder: Path, text: str | None = None) -> Path:
    copy = folder / unit
    copy.write_text((text or (UNITS / unit).read_text()).replace(INSTALLED_BIN, VENV_BIN))
    return copy


def _verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYSTEMD_ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("unit", ["session-monitor.service", "panel-app@.service"])
def test_systemd_analyze_verifies_the_unit_without_a_warning(unit: str, tmp_path: Path) -> None:
    text = (UNITS / unit).read_text()
    for line in (*HARDENING, "KillSignal=SIGTERM", "TimeoutStopSec="):
        assert re.search(rf"^{re.escape(line)}", text, re.M), f"{unit} lacks {line}"
    assert INSTALLED_BIN in text
    out = _verify(_local_copy(unit, tmp_path))
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


def test_verify_reports_a_mistyped_option(tmp_path: Path) -> None:
    # systemd only warns (exit 0) about unknown keys and bad values: the test above fails on any output.
    bad = (UNITS / "session-monitor.service").read_text().replace("ProtectSystem=strict", "ProtectSystem=stric")
    out = _verify(_local_copy("session-monitor.service", tmp_path, bad))
    assert "protect system value" in out.stderr, out.stderr


def _environment_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's ``EnvironmentFile=`` reads them (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _exec_start(unit: str) -> str:
    line = next(x for x in (UNITS / unit).read_text().splitlines() if x.startswith("ExecStart="))
    return line.removeprefix("ExecStart=").replace(INSTALLED_BIN, VENV_BIN).replace("$$", "$")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # what KillSignal= sends
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        raise


def test_the_units_commands_run_with_the_example_environment_file(tmp_path: Path) -> None:
    values = _environment_file(ENV_FILE)
    assert values["SESSION_MONITOR_HOST"] == "0.0.0.0" and values["SESSION_MONITOR_ADMIN_TOKEN"] == ""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_MONITOR_")}
    unit_env = {**base, **values, "SESSION_MONITOR_DATA_DIR": str(tmp_path / "state")}  # Environment= of the unit
    unit_env |= {"SESSION_MONITOR_PORT": str(port), "SESSION_MONITOR_DASHBOARD_PORT": "0"}  # free ports here
    command = _exec_start("session-monitor.service").split()
    assert command[-1] == "serve"

    # As shipped (tokens empty) the server refuses to listen off loopback, saying why.
    refused = subprocess.run(command, env=unit_env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert refused.returncode != 0 and "token" in refused.stderr.lower(), refused.stderr

    admin, client = "a" * 24, "c" * 24
    unit_env |= {"SESSION_MONITOR_ADMIN_TOKEN": admin, "SESSION_MONITOR_CLIENT_TOKEN": client}
    unit_env["SESSION_MONITOR_URL"] = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(command, env=unit_env, cwd=tmp_path, start_new_session=True)
    app: subprocess.Popen[bytes] | None = None
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, timeout_s=60, interval_s=0.2)
        assert httpx.post(f"{url}/sessions", json={"app_name": "x"}, timeout=5).status_code == 401  # tokens on
        assert httpx.post(f"{url}/apps/x/kill-all", timeout=5).status_code == 401
        assert (tmp_path / "state").is_dir()  # SQLite in the StateDirectory

        # panel-app@.service's shell line: panel serve (exec'd by sh) with the --setup script the package provides.
        app_port = free_port()
        app_env = {**unit_env, "PANEL_APP_FILE": str(REPO / "examples" / "task_runner.py"), "PANEL_PORT": str(app_port)}
        app_env["PANEL_EXTRA_ARGS"] = f"--allow-websocket-origin=127.0.0.1:{app_port}"
        shell, flag, script = _exec_start("panel-app@.service").split(" ", 2)
        assert (shell, flag) == ("/bin/sh", "-c")
        app = subprocess.Popen([shell, flag, script.strip("'")], env=app_env, cwd=tmp_path, start_new_session=True)
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{app_port}/liveness", timeout=2).status_code == 200,
            timeout_s=90,
            interval_s=0.3,
        )
        argv = psutil.Process(app.pid).cmdline()
        setup = Path(argv[argv.index("--setup") + 1])
        assert setup.name == "setup_hook.py" and setup.is_file(), argv
        assert f"--allow-websocket-origin=127.0.0.1:{app_port}" in argv and "--liveness" in argv
        assert httpx.get(f"http://127.0.0.1:{app_port}/task_runner", timeout=60).status_code == 200
    finally:
        if app is not None:
            _stop(app)
        # systemd counts a main process ended by its KillSignal (SIGTERM) as a clean stop, like exit 0.
        assert _stop(server) in (0, -signal.SIGTERM)
