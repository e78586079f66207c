"""The wheel as a user gets it: built, checked, installed with ``[server,pool]`` into a fresh venv, and the demo run.

Nothing from the checkout is on the path of the demo's processes: a module or data file the wheel forgets
(the example apps, the dashboard's assets, a dependency missing from an extra) fails here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import psutil
import pytest
from playwright.sync_api import Browser, expect
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
UV = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
START_S = 120.0


def _run(*command: str, cwd: Path = REPO, timeout_s: float = 180) -> str:
    out = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    assert out.returncode == 0, f"{command} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def _clean_env() -> dict[str, str]:
    """The environment of a user's shell: no venv, no PYTHONPATH, no coverage hooks, no monitor settings."""
    drop = ("SESSION_MONITOR_", "VIRTUAL_ENV", "PYTHON", "COV_", "COVERAGE_", "UV_PROJECT")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def test_the_wheel_installs_alone_and_runs_the_demo(tmp_path: Path, browser: Browser) -> None:
    dist = tmp_path / "dist"
    _run(UV, "build", "--quiet", "--out-dir", str(dist))
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(dist.iterdir())
    assert "PASSED" in _run(sys.executable, "-m", "twine", "check", "--strict", str(wheels[0]), str(sdists[0]))

    venv = tmp_path / "venv"
    _run(UV, "venv", "--quiet", "--python", sys.executable, str(venv))
    _run(UV, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), f"{wheels[0]}[server,pool]")
    # The fresh venv holds the wheel and its dependencies only: no pytest, no editable checkout.
    freeze = _run(UV, "pip", "freeze", "--python", str(venv / "bin" / "python")).splitlines()
    installed = {line.split("==")[0].split(" @ ")[0].lower() for line in freeze if "==" in line or " @ " in line}
    assert {"panel-session-monitor", "fastapi", "aiomultiprocess"} <= installed, freeze
    assert not installed & {"pytest", "coverage", "playwright", "mypy"}, freeze

    ports = {name: free_port() for name in ("port", "dashboard-port", "task-runner-port", "pool-app-port")}
    command = [str(venv / "bin" / "session-monitor"), "demo", "--data-dir", str(tmp_path / "data")]
    for name, port in ports.items():
        command += [f"--{name}", str(port)]
    work = tmp_path / "elsewhere"  # not the checkout: nothing importable from the current directory
    work.mkdir()
    demo = subprocess.Popen(
        command, cwd=work, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout or ()), daemon=True)
    reader.start()
    children: list[psutil.Process] = []
    try:
        wait_until(lambda: "Ctrl-C stops all of it" in "".join(lines) or demo.poll() is not None, timeout_s=START_S)
        assert demo.poll() is None, "".join(lines)
        children = psutil.Process(demo.pid).children(recursive=True)
        server_python = next(c for c in children if "serve" in c.cmdline() and "session_monitor" in c.cmdline())
        assert server_python.cmdline()[0].startswith(str(venv)), server_python.cmdline()  # the venv's python

        api = f"http://127.0.0.1:{ports['port']}"
        dashboard = httpx.get(f"http://127.0.0.1:{ports['dashboard-port']}", timeout=60, follow_redirects=True)
        assert dashboard.status_code == 200 and "bokeh" in dashboard.text.lower()

        # A session registers once its first websocket connects: open the tracked example in a real browser.
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{ports['task-runner-port']}/task_runner", timeout=60_000)

        def listed() -> list[dict[str, object]]:
            rows = httpx.get(f"{api}/sessions", timeout=10).json()["sessions"]
            return [row for row in rows if row["app_name"] == "task_runner"]

        assert wait_until(listed, timeout_s=60, interval_s=0.25)
        # ...and the installed dashboard shows it in its sessions table.
        board = browser.new_page()
        board.goto(f"http://127.0.0.1:{ports['dashboard-port']}", timeout=60_000)
        table = board.locator(".tabulator", has=board.get_by_text("Current task", exact=True)).first
        expect(table.locator(".tabulator-row", has_text="task_runner").first).to_be_visible(timeout=60_000)
        board.close()
        page.close()
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
        try:
            code = demo.wait(timeout=60)
        finally:
            if demo.poll() is None:
                demo.kill()
            _gone, alive = psutil.wait_procs(children, timeout=20)
            for child in alive:
                child.kill()
            reader.join(timeout=10)
            if demo.stdout is not None:
                demo.stdout.close()
    assert code == 0, "".join(lines)
    assert alive == [], [c.pid for c in alive]
