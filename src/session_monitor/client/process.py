"""What an agent tells the server about its process: host, pid, command line (secrets hidden), versions, CPU, memory."""

from __future__ import annotations

import os
import platform
import re
import socket
import sys
from datetime import datetime
from typing import Any

import psutil

from session_monitor._version import __version__

_SECRET_ARG = re.compile(r"(?i)(secret|token|password|passwd|key|cookie)")
_URL_PASSWORD = re.compile(r"(://[^/\s:@]*:)[^/\s@]*@")
"""The password of a ``scheme://user:password@host`` URL, wherever it appears (``--db postgresql://…``)."""


def redacted_command(argv: list[str], limit: int = 1000) -> str:
    """The process's command line with the values of secret-looking options hidden."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        name, sep, _ = arg.partition("=")
        if name.startswith("-") and _SECRET_ARG.search(name):
            out.append(f"{name}=***" if sep else arg)
            hide_next = not sep
            continue
        out.append(arg)
    text = _URL_PASSWORD.sub(r"\1***@", " ".join(out))
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:limit]


class ProcessFacts:
    """The facts of this process, measured again at each :meth:`wire` (CPU since the previous call)."""

    def __init__(self, started_at: datetime) -> None:
        self.started_at = started_at
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # start the measurement window
        self.host = socket.gethostname()
        self.command = redacted_command(self._process.cmdline() or sys.argv)

    def wire(self) -> dict[str, Any]:
        """The ``agent`` part of a sync (``AgentInfo`` in ``protocol.py``)."""
        try:
            cpu: float | None = self._process.cpu_percent(None)
            rss: int | None = int(self._process.memory_info().rss)
        except psutil.Error:
            cpu = rss = None
        return {
            "host": self.host,
            "pid": os.getpid(),
            "command": self.command,
            "versions": _versions(),
            "cpu_percent": cpu,
            "rss_bytes": rss,
            "started_at": self.started_at.isoformat(),
        }


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "session_monitor": __version__}
    for module in ("panel", "bokeh", "tornado"):
        loaded = sys.modules.get(module)
        version = getattr(loaded, "__version__", None) or getattr(loaded, "version", None)
        if isinstance(version, str):
            versions[module] = version[:64]
    return versions
