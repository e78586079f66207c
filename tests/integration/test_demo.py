"""``session-monitor demo`` as a newcomer runs it: every part starts and answers, and Ctrl-C stops all of it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.slow

START_S = 150.0
"""Bound on the demo's start: four servers, one with two processes, on a loaded 2-core machine."""


class Demo:
    """The demo as a child process; its output collected on a thread."""

    def __init__(self, tmp_path: Path, ports: dict[str, int]) -> None:
        self.ports = ports
        command = [sys.executable, "-m", "session_monitor", "demo", "--data-dir", str(tmp_path / "data")]
        for name, port in ports.items():
            command += [f"--{name}", str(port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_MONITOR_")}
        self.proc = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        """Whatever a test left running: SIGINT (what Ctrl-C sends), then SIGKILL of the process and its children."""
        if self.proc.poll() is None:
            children = self.descendants()
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            _gone, alive = psutil.wait_procs(children, timeout=10)
            for child in alive:
                child.kill()
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def demo_ports() -> dict[str, int]:
    return {name: free_port() for name in ("port", "dashboard-port", "task-runner-port", "pool-app-port")}


@pytest.fixture
def demo(tmp_path: Path, demo_ports: dict[str, int]) -> Iterator[Demo]:
    running = Demo(tmp_path, demo_ports)
    try:
        yield running
    finally:
        running.stop()


def test_demo_starts_everything_prints_the_urls_and_ctrl_c_stops_all_of_it(demo, demo_ports):
    wait_until(lambda: "Ctrl-C stops all of it" in demo.output() or demo.proc.poll() is not None, timeout_s=START_S)
    assert demo.proc.poll() is None, demo.output()
    api = f"http://127.0.0.1:{demo_ports['port']}"
    for url in (
        f"http://127.0.0.1:{demo_ports['dashboard-port']}",
        f"{api}/docs",
        f"http://127.0.0.1:{demo_ports['task-runner-port']}/task_runner",
        f"http://127.0.0.1:{demo_ports['pool-app-port']}/pool_app",
    ):
        assert url in demo.output()
    assert httpx.get(f"{api}/healthz", timeout=10).status_code == 200
    for app, port in (("task_runner", demo_ports["task-runner-port"]), ("pool_app", demo_ports["pool-app-port"])):
        assert httpx.get(f"http://127.0.0.1:{port}/liveness", timeout=10).status_code == 200
        page = httpx.get(f"http://127.0.0.1:{port}/{app}", timeout=60)  # builds a session: the app really runs
        assert page.status_code == 200 and "bokeh" in page.text.lower()
    with socket.create_connection(("127.0.0.1", demo_ports["dashboard-port"]), timeout=5):
        pass
    # The pool app runs with --num-procs 2: its parent, two Panel processes, and their pools.
    children = demo.descendants()
    assert len(children) >= 6, [c.cmdline() for c in children]

    demo.proc.send_signal(signal.SIGINT)

    assert demo.proc.wait(timeout=60) == 0, demo.output()
    _gone, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, [c.cmdline() for c in alive]
    assert "stopping the demo" in demo.output()


def test_demo_with_a_port_taken_says_which_part_failed_and_leaves_nothing(tmp_path, demo_ports):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", demo_ports["port"]))
        taken.listen()
        demo = Demo(tmp_path, demo_ports)
        seen: dict[int, psutil.Process] = {}

        def exited() -> bool:
            seen.update((child.pid, child) for child in demo.descendants())
            return demo.proc.poll() is not None

        try:
            wait_until(exited, timeout_s=START_S, interval_s=0.05)
        finally:
            demo.stop()
    assert demo.proc.returncode == 1, demo.output()
    assert "the server exited" in demo.output()
    assert seen, "the demo started nothing"
    _gone, alive = psutil.wait_procs(list(seen.values()), timeout=20)
    assert not alive, [c.cmdline() for c in alive]
