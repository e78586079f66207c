"""``env_setting``: the one way client code reads ``SESSION_MONITOR_*`` variables."""

from __future__ import annotations

import pytest

from session_monitor import ConfigError
from session_monitor.client.config import env_setting, env_setting_source, finite_float, integer, positive_float
from session_monitor.client.liveness import resolve_liveness

NAME = "SESSION_MONITOR_TEST_SETTING_S"


def test_an_explicit_argument_wins_over_the_environment_which_wins_over_the_default(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)
    assert env_setting_source(NAME, 1.0, positive_float) == (1.0, "default")
    monkeypatch.setenv(NAME, "2.5")
    assert env_setting_source(NAME, 1.0, positive_float) == (2.5, "environment")
    assert env_setting_source(NAME, 1.0, positive_float, 4.0) == (4.0, "argument")
    monkeypatch.setenv(NAME, "")
    assert env_setting(NAME, 1.0, positive_float) == 1.0  # empty counts as unset


@pytest.mark.parametrize("raw", ["soon", "0", "-3", "nan", "inf"])
def test_a_bad_value_is_refused_naming_the_variable_and_the_value(monkeypatch, raw):
    monkeypatch.setenv(NAME, raw)
    with pytest.raises(ConfigError, match=rf"{NAME}={raw!r}"):
        env_setting(NAME, 1.0, positive_float)


def test_a_parser_that_names_the_variable_is_not_prefixed_twice(monkeypatch):
    def parse(text: str) -> int:
        raise ConfigError(f"{NAME} must be even, got {text}")

    monkeypatch.setenv(NAME, "3")
    with pytest.raises(ConfigError) as info:
        env_setting(NAME, 0, parse)
    assert str(info.value) == f"{NAME} must be even, got 3"


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("SESSION_MONITOR_DISCONNECT_GRACE_S", "soon"),
        ("SESSION_MONITOR_DEAD_SOCKET_S", "0"),
        ("SESSION_MONITOR_IDLE_TIMEOUT_S", "admin=never"),
        ("SESSION_MONITOR_MAX_SESSION_AGE_S", "-5"),
    ],
)
def test_liveness_settings_are_read_the_same_way(monkeypatch, name, raw):
    monkeypatch.setenv(name, raw)
    with pytest.raises(ConfigError, match=name):
        resolve_liveness()
    assert resolve_liveness(disconnect_grace_s=1.0, dead_socket_s=9.0, idle_timeout_s="1", max_session_age_s="2")


def test_the_other_parsers(monkeypatch):
    monkeypatch.setenv(NAME, "0")
    assert env_setting(NAME, 1.5, finite_float) == 0.0
    assert env_setting(NAME, 7, integer) == 0
    monkeypatch.setenv(NAME, "2.5")
    with pytest.raises(ConfigError, match=rf"{NAME}='2.5': not a whole number"):
        env_setting(NAME, 7, integer)
    monkeypatch.setenv(NAME, "-inf")
    with pytest.raises(ConfigError, match="finite"):
        env_setting(NAME, 1.5, finite_float)
