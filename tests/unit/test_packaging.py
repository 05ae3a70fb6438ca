"""The wheel carries the browser client, so an installed ``veche`` serves it without a checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_wheel_ships_web_client_and_finds_it(tmp_path: Path) -> None:
    """The built wheel holds veche/web/*, and installed alone it locates those files."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("veche-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "veche/__main__.py",
        "veche/protocol.py",
        "veche/web/index.html",
        "veche/web/room.html",
        "veche/web/app.js",
        "veche/web/protocol.gen.js",
        "veche/web/i18n/fr.json",
    ):
        assert required in names, required
    assert any(name.endswith("entry_points.txt") for name in names)

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    located = subprocess.run(
        [sys.executable, "-c", "from veche.assets import web_root; print(web_root())"],
        env={**os.environ, "PYTHONPATH": str(target)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(located) == target / "veche" / "web"
