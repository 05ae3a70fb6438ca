"""The private aiortc/aioice members that veche.media.internals relies on still exist."""

from __future__ import annotations

import importlib.metadata

from veche.media.internals import check_internals


def test_aiortc_internals_are_where_veche_expects_them() -> None:
    """Fails loudly (naming each member) when an aiortc or aioice upgrade moves one."""
    versions = {name: importlib.metadata.version(name) for name in ("aiortc", "aioice")}
    assert check_internals() == [], f"with {versions}"
