"""The grid in real Chromium with aiortc publishers: pages of tiles (4 on a phone), only the
page shown is sent, the active speaker is brought onto page one, self view can be hidden, a
tile can be pinned and shown full screen."""

from __future__ import annotations

import pytest

from tests.browser.conftest import chromium
from tests.integration.peers import MediaClient
from tests.integration.serverproc import run_server
from tests.integration.waiting import until

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

TOKEN = "admin-token-0123456789abcdef-0123456"
JS_ON_PAGE = """() => [...document.querySelectorAll('.tile:not(.me)')]
    .filter(tile => !tile.hidden).map(tile => tile.dataset.participantId).sort()"""
"""Page function: the remote tiles on the page shown."""


async def test_pages_speaker_self_view_pin_and_full_screen_on_a_phone() -> None:
    with run_server("--admin-token", TOKEN) as server:
        publishers = [await MediaClient.join(server.ws, "paged", f"P{n}") for n in range(5)]
        ids = [p.participant_id for p in publishers]
        try:
            for publisher in publishers:
                await publisher.publish(silent=True)
            async with chromium() as browser:
                context = await browser.new_context(
                    permissions=["camera", "microphone"],
                    base_url=server.http,
                    viewport={"width": 390, "height": 844},
                )
                page = await context.new_page()
                await page.goto("/r/paged?name=Viewer&join=1&lang=en")
                await page.wait_for_function(
                    "() => document.querySelectorAll('.tile:not(.me)').length === 5",
                    timeout=30_000,
                )
                me = await page.evaluate("() => window.veche.connection.participantId")
                # Page one: yourself and three others; only those three are sent.
                assert await page.evaluate(JS_ON_PAGE) == sorted(ids[:3])
                await until(lambda: server.receiving("paged", me)["video"] == 3, timeout=3)
                assert await page.text_content(".pager-label") == "Page 1 of 2 · 6 people"

                await page.click(".pager-next")
                assert await page.evaluate(JS_ON_PAGE) == sorted(ids[3:])
                assert await page.is_hidden(".tile.me")
                await until(lambda: server.receiving("paged", me)["video"] == 2, timeout=2)
                await page.wait_for_function(
                    "() => [...document.querySelectorAll('.tile:not(.me):not([hidden]) video')]"
                    ".every(v => v.videoWidth > 0)",
                    timeout=5_000,
                )
                await page.click(".pager-previous")

                # P4 speaks: it is brought onto page one in place of its last tile.
                track = publishers[4].publish_pc.getSenders()[0].track
                track.amplitude = 8000  # type: ignore[union-attr]
                await page.wait_for_function(
                    f"() => !document.querySelector('[data-participant-id=\"{ids[4]}\"]').hidden",
                    timeout=10_000,
                )
                assert ids[4] in await page.evaluate(JS_ON_PAGE)
                assert len(await page.evaluate(JS_ON_PAGE)) == 3

                await page.click(".pager-self")
                assert await page.is_hidden(".tile.me")
                assert await page.text_content(".pager-self") == "Show self view"
                assert len(await page.evaluate(JS_ON_PAGE)) == 4
                await until(lambda: server.receiving("paged", me)["video"] == 4, timeout=3)

                first = f'[data-participant-id="{ids[0]}"]'
                await page.click(f"{first} .tile-pin", force=True)
                assert await page.get_attribute(f"{first} .tile-pin", "aria-pressed") == "true"
                assert await page.evaluate(
                    f"() => document.querySelector('{first}').classList.contains('featured')"
                )
                await page.click(f"{first} .tile-fullscreen", force=True)
                await page.wait_for_function(
                    f"() => document.fullscreenElement === document.querySelector('{first}')",
                    timeout=5_000,
                )
                await context.close()
        finally:
            for publisher in publishers:
                await publisher.close()


async def test_someone_without_a_camera_shows_initials_not_a_black_tile() -> None:
    """A participant who publishes only a microphone (its camera flag still on, as when it
    joined without a camera) is drawn with its initials; one whose video arrives is not."""
    with run_server() as server:
        voice = await MediaClient.join(server.ws, "faces", "Farid Aliev")
        face = await MediaClient.join(server.ws, "faces", "Elena")
        try:
            await voice.publish(video=False, silent=True)
            await face.publish(cheap=True)
            async with chromium() as browser:
                context = await browser.new_context(
                    permissions=["camera", "microphone"], base_url=server.http
                )
                page = await context.new_page()
                await page.goto("/r/faces?name=Viewer&join=1&lang=en")
                voice_tile = f'[data-participant-id="{voice.participant_id}"]'
                face_tile = f'[data-participant-id="{face.participant_id}"]'
                await page.wait_for_function(
                    f"() => document.querySelector('{face_tile} video')?.videoWidth > 0",
                    timeout=30_000,
                )
                assert await page.is_visible(f"{voice_tile} .initials")
                assert await page.text_content(f"{voice_tile} .initials") == "FA"
                assert await page.is_hidden(f"{face_tile} .initials")
                await context.close()
        finally:
            await voice.close()
            await face.close()
