"""The README stays true: every setting is in its configuration table."""

from __future__ import annotations

from pathlib import Path

import pytest

from veche.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_readme_documents_setting(name: str) -> None:
    """Each setting has a row naming it and its environment variable."""
    assert f"| `{name}` | `VECHE_{name.upper()}` |" in README


def test_readme_quickstart_is_make_run_and_make_test() -> None:
    """The quickstart is the two commands."""
    quickstart = README.split("## Quickstart", 1)[1].split("##", 1)[0]
    assert "make run" in quickstart
    assert "make test" in quickstart
