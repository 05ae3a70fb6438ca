"""The wheel carries the browser client, so an installed ``veche`` serves it without a checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

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


async def test_grafana_dashboard_queries_only_metrics_the_server_exports(
    aiohttp_client: Any,
) -> None:
    """Every veche_* series the dashboard uses is one /metrics serves (a rename breaks this)."""
    import json
    import re

    from prometheus_client.parser import text_string_to_metric_families

    from veche.app import create_app
    from veche.settings import Settings

    client = await aiohttp_client(create_app(Settings()))
    response = await client.get("/metrics")
    assert response.status == 200
    exported: set[str] = set()
    for family in text_string_to_metric_families(await response.text()):
        # A counter or histogram without samples yet still names its series.
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        exported |= {family.name + suffix for suffix in ["", *suffixes.get(family.type, [])]}
    dashboard = json.loads((ROOT / "docker" / "grafana" / "veche-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"veche_[a-z_]+", target["expr"])
    }
    assert used
    assert used <= exported, f"not exported: {sorted(used - exported)}"
