"""Settings: defaults, environment, flags over environment, readable errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from veche.cli import SettingsError, parse_settings
from veche.settings import Settings


def test_defaults_make_no_outbound_contact() -> None:
    """By default: loopback on 8080, no ICE servers, no Redis."""
    settings = Settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.ice_servers == []
    assert settings.redis_url is None


def test_environment_sets_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """VECHE_* variables are read, lists as comma-separated text."""
    monkeypatch.setenv("VECHE_PORT", "9000")
    monkeypatch.setenv("VECHE_ALLOWED_ORIGINS", "https://A.example, http://b.example:8080")
    monkeypatch.setenv("VECHE_ICE_SERVERS", "stun:stun.internal:3478,turn:turn.internal:3478")
    settings = Settings()
    assert settings.port == 9000
    assert settings.allowed_origins == ["https://a.example", "http://b.example:8080"]
    assert settings.ice_servers == ["stun:stun.internal:3478", "turn:turn.internal:3478"]


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command-line value beats the environment; an absent flag leaves the environment."""
    monkeypatch.setenv("VECHE_PORT", "9000")
    monkeypatch.setenv("VECHE_MAX_PARTICIPANTS", "7")
    settings = parse_settings({"port": "9100", "max_participants": None})
    assert settings.port == 9100
    assert settings.max_participants == 7


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"port": "70000"}, "port (VECHE_PORT / --port)"),
        ({"port": "eighty"}, "port"),
        ({"public_ip": "not-an-ip"}, "public_ip"),
        ({"ice_servers": "http://stun.example"}, "ice_servers"),
        ({"allowed_origins": "example.org"}, "allowed_origins"),
        ({"redis_url": "http://redis"}, "redis_url"),
        ({"log_level": "loud"}, "log_level"),
        ({"media_port_min": "50000", "media_port_max": "40000"}, "media_port_min"),
    ],
)
def test_invalid_value_names_the_setting(values: dict[str, str], named: str) -> None:
    """An invalid value raises SettingsError whose text names the setting."""
    with pytest.raises(SettingsError) as caught:
        parse_settings(values)
    assert named in str(caught.value)


def test_invalid_setting_stops_startup_with_one_line() -> None:
    """``veche serve`` with a bad value exits 2 with one readable line and no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "veche", "serve", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "port" in lines[0]
    assert "VECHE_PORT" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("values", "on"),
    [
        ({}, False),
        ({"redis_url": "redis://redis:6379/0"}, True),
        ({"workers": 2}, True),
        ({"redis_url": "unix:///run/veche/redis.sock", "pipes": False}, False),
        ({"pipes": True}, True),
    ],
    ids=["one-process", "redis", "workers", "turned-off", "turned-on"],
)
def test_pipes_default_on_in_a_cluster(values: dict[str, object], on: bool) -> None:
    """Pipes need no setting: on when the process is one of several (a Redis, workers), off
    for a single process, and ``pipes`` set either way wins."""
    assert Settings.model_validate(values).pipes_on is on


def test_pipes_empty_in_the_environment_means_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    """``VECHE_PIPES=`` (compose's empty default) is the default, and ``false`` turns it off."""
    monkeypatch.setenv("VECHE_REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("VECHE_PIPES", "")
    assert Settings().pipes_on
    monkeypatch.setenv("VECHE_PIPES", "false")
    assert not Settings().pipes_on


def test_pipe_host_must_be_an_ip_address() -> None:
    """A pipe address other nodes send to is an IP address; a name is refused, naming it."""
    with pytest.raises(SettingsError, match="pipe_host"):
        parse_settings({"pipe_host": "veche-2"})
