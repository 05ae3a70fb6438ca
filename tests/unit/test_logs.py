"""Log lines: text for people, JSON for machines, with structured extras."""

from __future__ import annotations

import json
import logging

import pytest

from veche.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_root_logger() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_format_is_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Each record is one JSON object carrying the message and the extras."""
    configure_logging("info", "json")
    logging.getLogger("veche.test").info("participant joined", extra={"room": "r"})
    line = capsys.readouterr().err.strip()
    entry = json.loads(line)
    assert entry["message"] == "participant joined"
    assert entry["room"] == "r"
    assert entry["level"] == "info"


def test_text_format_appends_extras(capsys: pytest.CaptureFixture[str]) -> None:
    """Text lines end with key=value extras; records below the level are dropped."""
    configure_logging("warning", "text")
    logging.getLogger("veche.test").info("hidden")
    logging.getLogger("veche.test").warning("shown", extra={"room": "r"})
    err = capsys.readouterr().err
    assert "hidden" not in err
    assert err.strip().endswith("shown room=r")
