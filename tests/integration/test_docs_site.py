"""The docs site: its generated references match the code, and ``mkdocs build --strict`` finds no broken link."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from session_monitor.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]


def test_the_generated_references_match_the_code() -> None:
    # Regenerates the CLI (--help), configuration (Settings, click options, client variables) and REST (OpenAPI)
    # pages and diffs them with the committed ones.
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "generate_docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-4000:]


def test_the_cli_reference_holds_every_commands_help() -> None:
    page = (REPO / "docs" / "reference" / "cli.md").read_text()
    for name in cli_main.commands:
        help_text = (
            CliRunner().invoke(cli_main, [name, "--help"], prog_name="session-monitor", terminal_width=100).output
        )
        assert help_text.strip() in page, name


def test_mkdocs_builds_the_site_strictly(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for page in ("quickstart", "tracking", "liveness", "pool", "dashboard", "maintenance", "replicas", "security"):
        assert (tmp_path / "site" / page / "index.html").is_file(), page
    for page in ("cli", "configuration", "rest"):
        assert (tmp_path / "site" / "reference" / page / "index.html").is_file(), page
