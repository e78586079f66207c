"""Chromium driven through raw CDP, for what Playwright hides: background tabs and a stopped browser.

Playwright's pages always report ``visible``; with Chromium launched here, a tab behind another is
``hidden`` and ``Page.setWebLifecycleState`` freezes it, as a real browser does. The browser is a child
of the test, stopped by its own PID (SIGSTOP/SIGCONT go to its process tree, by PID).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import tempfile
from typing import Any
from urllib.parse import quote

import httpx
import psutil
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, free_port, wait_until
from websockets.sync.client import ClientConnection, connect


class Tab:
    """One page target, with its own CDP websocket."""

    def __init__(self, target: dict[str, Any]) -> None:
        self.id: str = target["id"]
        # Entered as a context manager (websockets warns otherwise); no keep-alive: the browser may be stopped.
        connection = connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10, ping_interval=None)
        self._ws: ClientConnection = connection.__enter__()
        self._ids = itertools.count(1)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        call = next(self._ids)
        self._ws.send(json.dumps({"id": call, "method": method, "params": params}))
        while True:  # events are skipped: nothing here subscribes to them
            message = json.loads(self._ws.recv(timeout=15))
            if message.get("id") == call:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})  # type: ignore[no-any-return]

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def close(self) -> None:
        self._ws.close()


class RawChromium:
    """A headless Chromium of its own, with a remote-debugging port on loopback."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._profile = tempfile.TemporaryDirectory(prefix="sm-chromium-")
        command = [CHROMIUM, *CHROMIUM_ARGS, f"--remote-debugging-port={self.port}"]
        command += [f"--user-data-dir={self._profile.name}", "about:blank"]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.tabs: list[Tab] = []
        wait_until(self._up, timeout_s=30, interval_s=0.1)

    def _up(self) -> bool:
        try:
            return httpx.get(f"{self.base}/json/version", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def open(self, url: str) -> Tab:
        target = httpx.put(f"{self.base}/json/new?{quote(url, safe=':/?=&')}", timeout=10).json()
        tab = Tab(target)
        self.tabs.append(tab)
        return tab

    def bring_to_front(self, tab: Tab) -> None:
        httpx.get(f"{self.base}/json/activate/{tab.id}", timeout=10).raise_for_status()

    def _tree(self) -> list[int]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root.pid, *(child.pid for child in root.children(recursive=True))]
        except psutil.Error:
            return []

    def signal_tree(self, signum: int) -> None:
        """Send ``signum`` to the browser and every process it started, by PID."""
        for pid in self._tree():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def stop(self) -> None:
        """SIGCONT (in case it was stopped), then end the browser and what it started, by PID."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        self.signal_tree(signal.SIGCONT)  # first: a stopped browser leaves each tab's close waiting 10 s for an answer
        for tab in self.tabs:
            with contextlib.suppress(Exception):
                tab.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        _gone, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:  # psutil checks the creation time: a reused PID is never hit
            with contextlib.suppress(psutil.Error):
                child.kill()
        self._profile.cleanup()
