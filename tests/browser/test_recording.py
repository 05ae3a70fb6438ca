"""Recording from the browser: the moderator's Record button, and the indicator every
participant sees for as long as the recording lasts; the files land in the recording folder."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.browser.conftest import REMOTE_VIDEO_PLAYS, meeting_pages
from tests.integration.serverproc import run_server

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


async def test_moderator_records_and_everyone_sees_it(browser: Browser, tmp_path: Path) -> None:
    with run_server(
        "--host", "127.0.0.1", "--recording-dir", str(tmp_path), "--recording-anonymous"
    ) as server:
        people = [(server.http, "Ada"), (server.http, "Bob")]
        async with meeting_pages(browser, "taped", people) as pages:
            for page in pages:
                await page.wait_for_function(REMOTE_VIDEO_PLAYS, timeout=30000)
            # Whoever joined first moderates (the two joins race): only that one has the button.
            shown = [await page.locator("#record").is_visible() for page in pages]
            assert sorted(shown) == [False, True], "only the moderator may record"
            moderator = pages[shown.index(True)]
            await moderator.locator("#record").click()
            for page in pages:
                await page.locator("#recording").wait_for(state="visible", timeout=5000)
                assert await page.locator("#recording").text_content() == "Recording"
            await asyncio.sleep(3)
            await moderator.locator("#record").click()
            for page in pages:
                await page.locator("#recording").wait_for(state="hidden", timeout=5000)
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob("*/manifest.json")):
            assert time.monotonic() < deadline, "no recording was written"
            await asyncio.sleep(0.2)
        (manifest_path,) = tmp_path.glob("*/manifest.json")
        manifest = json.loads(manifest_path.read_text())
        assert sorted(p["name"] for p in manifest["participants"]) == ["Ada", "Bob"]
        for person in manifest["participants"]:
            assert person.get("audio"), person
            assert person.get("video"), person
            assert (manifest_path.parent / person["file"]).stat().st_size > 10_000
        assert server.terminate() == 0
