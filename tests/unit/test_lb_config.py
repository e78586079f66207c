"""``session-monitor lb-config haproxy`` and the drain commands' arguments; HAProxy itself checks the output."""

from __future__ import annotations

import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from session_monitor.cli import main
from session_monitor.cli.lb_config import Backend
from session_monitor.cli.maintenance import parse_duration

HAPROXY = "/usr/sbin/haproxy"


def test_haproxy_accepts_the_printed_configuration(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["lb-config", "haproxy", "--backend", "127.0.0.1:5006", "--backend", "10.0.0.2:5007@15107"]
    )
    assert result.exit_code == 0, result.output
    config = result.output
    assert "cookie SM_PANEL insert indirect nocache httponly" in config
    assert "balance leastconn" in config
    agent = "check agent-check agent-addr"
    assert f"server panel1 127.0.0.1:5006 cookie panel1 {agent} 127.0.0.1 agent-port 15006 " in config
    assert f"server panel2 10.0.0.2:5007 cookie panel2 {agent} 10.0.0.2 agent-port 15107 " in config
    (tmp_path / "haproxy.cfg").write_text(config)
    checked = subprocess.run([HAPROXY, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [("5006", "HOST:PORT"), ("h:0", "1-65535"), ("h:x", "not a port"), ("h:60000", "over 65535")],
)
def test_bad_backends_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backend.parse(text)
    result = CliRunner().invoke(main, ["lb-config", "haproxy", "--backend", text])
    assert result.exit_code == 2 and message in result.output


def test_durations() -> None:
    assert parse_duration("20s") == 20
    assert parse_duration("90") == 90
    assert parse_duration("10m") == 600
    assert parse_duration("1h30m") == 5400
    for bad in ("", "0", "soon", "-5m"):
        with pytest.raises(click.BadParameter):
            parse_duration(bad)


def test_drain_needs_one_target() -> None:
    result = CliRunner().invoke(main, ["drain", "--host", "a", "--app", "b"])
    assert result.exit_code == 1 and "give one target" in result.output
    result = CliRunner().invoke(main, ["drain", "web-1"])
    assert result.exit_code == 1 and "HOST:PID" in result.output
