"""``session-monitor demo``: the server, the dashboard and both example apps, stopped together on Ctrl-C.

Each part is a child process leading a process group of its own: Ctrl-C in the terminal reaches only
the demo, which then stops the apps first (their sessions end as ``process_exit`` while the server
still listens), then the server. Stopping a group also stops what the child started: Panel's
``--num-procs`` workers, the dashboard, the pools' worker processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from session_monitor import defaults

START_TIMEOUT_S = 120.0
"""How long every part gets to open its port (the dashboard takes tens of seconds on a busy machine)."""

STOP_TIMEOUT_S = 15.0
"""How long a part gets to exit after SIGTERM before SIGKILL."""


@dataclass(frozen=True)
class DemoPorts:
    api: int = defaults.API_PORT
    dashboard: int = defaults.DASHBOARD_PORT
    task_runner: int = 5006
    pool_app: int = 5007


def examples_dir() -> Path:
    """``examples/`` of a checkout (editable install), or the copy a wheel ships inside the package."""
    here = Path(__file__).resolve().parent
    for folder in (here / "examples", here.parents[1] / "examples"):
        if (folder / "task_runner.py").is_file() and (folder / "pool_app.py").is_file():
            return folder
    raise RuntimeError("the example apps were not found (examples/task_runner.py, examples/pool_app.py)")


def run_demo(ports: DemoPorts, data_dir: str) -> None:
    """Start everything, print the URLs, and run until Ctrl-C or SIGTERM (then stop all of it, by process group).

    Raises ``RuntimeError`` if a part fails to start or exits early (after stopping the others).
    """
    examples = examples_dir()
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    api_url = f"http://127.0.0.1:{ports.api}"
    env = {**os.environ, "SESSION_MONITOR_URL": api_url}
    server = [sys.executable, "-m", "session_monitor", "serve", "--host", "127.0.0.1", "--port", str(ports.api)]
    server += ["--dashboard-port", str(ports.dashboard)]
    server += ["--database-url", f"sqlite:///{data / defaults.SQLITE_FILENAME}"]
    apps = [
        ("task runner", examples / "task_runner.py", ports.task_runner, ()),
        ("pool app", examples / "pool_app.py", ports.pool_app, ("--num-procs", "2")),
    ]
    children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def interrupted(*_: Any) -> NoReturn:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        children.append(("server", subprocess.Popen(server, env=env, start_new_session=True)))
        for name, script, port, extra in apps:
            command = [sys.executable, "-m", "panel", "serve", str(script), "--address", "127.0.0.1"]
            command += ["--port", str(port), *extra, "--liveness"]
            command += [
                "--allow-websocket-origin",
                f"127.0.0.1:{port}",
                "--allow-websocket-origin",
                f"localhost:{port}",
            ]
            children.append((name, subprocess.Popen(command, env=env, start_new_session=True)))
        _wait_for_ports(children, [ports.api, ports.dashboard, ports.task_runner, ports.pool_app])
        click.echo("session-monitor demo is running; Ctrl-C stops all of it.")
        for name, url in [
            ("dashboard", f"http://127.0.0.1:{ports.dashboard}"),
            ("REST API", f"{api_url}/docs"),
            ("task runner", f"http://127.0.0.1:{ports.task_runner}/task_runner"),
            ("pool app", f"http://127.0.0.1:{ports.pool_app}/pool_app  (2 processes, one pool each)"),
        ]:
            click.echo(f"  {name:<12} {url}")
        while True:
            for name, child in children:
                if child.poll() is not None:
                    raise RuntimeError(f"the {name} exited with code {child.returncode}; the demo stopped")
            time.sleep(0.2)
    except KeyboardInterrupt:
        click.echo("stopping the demo…")
    finally:
        signal.signal(signal.SIGTERM, previous)
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        for _name, child in reversed(children):  # the apps first, the server last
            stop_group(child)
        signal.signal(signal.SIGINT, previous_int)


def _wait_for_ports(children: list[tuple[str, subprocess.Popen[bytes]]], ports: list[int]) -> None:
    """Until every port accepts connections; a child that exits first fails the demo."""
    deadline = time.monotonic() + START_TIMEOUT_S
    waiting = list(ports)
    while waiting:
        for name, child in children:
            if child.poll() is not None:
                raise RuntimeError(f"the {name} exited with code {child.returncode} while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"ports {waiting} did not open within {START_TIMEOUT_S:g} s")
        try:
            with socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.5):
                waiting.pop(0)
        except OSError:
            time.sleep(0.2)


def stop_group(child: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the child's process group, wait for all of it to exit, SIGKILL what is left after ``timeout_s``."""

    def group_alive() -> bool:
        try:
            os.killpg(child.pid, 0)
        except ProcessLookupError:
            return False
        return True

    if child.poll() is None or group_alive():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while (child.poll() is None or group_alive()) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):  # whatever of the group is still there (a worker ignoring SIGTERM)
        os.killpg(child.pid, signal.SIGKILL)
    child.wait(timeout=timeout_s)
