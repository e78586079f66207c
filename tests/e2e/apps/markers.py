"""Imported by the test apps: callbacks that must outlive the served script's globals write marker files here."""

from __future__ import annotations

import os
from pathlib import Path


def marker(kind: str, session_id: str) -> None:
    folder = os.environ.get("SESSION_MONITOR_TEST_MARKERS")
    if folder:
        Path(folder, f"{kind}-{session_id}").write_text(kind)


def on_destroyed(session_context: object) -> None:
    marker("destroyed", str(getattr(session_context, "id", "?")))
