"""The minimal example client (web/example/) in real Chromium, against the real server."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser

from tests.browser.conftest import REMOTE_VIDEO_PLAYS, meeting_pages
from tests.integration.serverproc import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

EXAMPLE_VIDEO_PLAYS = (
    "() => [...document.querySelectorAll('#videos .tile:not(.me) video')]"
    ".some(v => v.videoWidth > 0)"
)


async def test_example_client_and_room_page_see_each_other(
    browser: Browser, server: ServerProcess
) -> None:
    """The example page joins through its form; a participant on the room page sees its video
    under its name, the example shows theirs, and the example's leave is seen by both."""
    context = await browser.new_context(permissions=["camera", "microphone"], base_url=server.http)
    try:
        example = await context.new_page()
        errors: list[str] = []
        example.on("pageerror", lambda error: errors.append(str(error)))
        await example.goto("/static/example/index.html?lang=en")
        await example.fill("#room", "example-room")
        await example.fill("#name", "Eve")
        await example.click("#join")
        await example.wait_for_selector("#videos .tile.me", timeout=10000)
        async with meeting_pages(browser, "example-room", [(server.http, "Bob")]) as (bob,):
            await bob.wait_for_function(REMOTE_VIDEO_PLAYS, timeout=20000)
            await example.wait_for_function(EXAMPLE_VIDEO_PLAYS, timeout=20000)
            assert await bob.locator(".tile:not(.me) .name").text_content() == "Eve"
            await example.click("#leave")
            await bob.wait_for_function(
                "() => document.querySelectorAll('.tile').length === 1", timeout=5000
            )
            await example.wait_for_function(
                "() => document.getElementById('status').textContent.includes('(left)')",
                timeout=5000,
            )
            assert await example.locator("#videos .tile").count() == 0
        assert errors == []
    finally:
        await context.close()
