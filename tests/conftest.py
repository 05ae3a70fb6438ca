"""Shared fixtures: isolated settings and an in-process Veche app."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from veche.settings import Settings


@pytest.fixture(autouse=True)
def _clean_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No VECHE_* variable of the machine leaks into a test, and every test (and the servers it
    starts) keeps room state in a directory of its own."""
    for key in list(os.environ):
        if key.startswith("VECHE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("VECHE_DATA_DIR", str(tmp_path_factory.mktemp("data")))


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """Settings with test-friendly timers; keyword arguments override."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "empty_room_grace": 0.2,
            "ws_heartbeat": 5.0,
            # Tests send fast on purpose; the limits have tests of their own.
            "ws_rate": 10000,
            "ws_burst": 100000,
        }
        values.update(overrides)
        return Settings(**values)

    return make
