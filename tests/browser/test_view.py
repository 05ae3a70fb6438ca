"""The browser client says which videos it shows (``view``) and the server sends only those:
a tile taken off the screen, a hidden tab, and their return, in Chromium and Firefox, with
three aiortc publishers, and a page of 16 in a room of twenty; the server's own
per-participant counters (admin API) are checked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Page

from tests.browser.conftest import chromium
from tests.browser.firefox import FirefoxPage, firefox, firefox_missing
from tests.integration.peers import MediaClient
from tests.integration.serverproc import run_server
from tests.integration.waiting import until

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

TOKEN = "admin-token-0123456789abcdef-0123456"

JS_FRAMES = """() => {
    const pc = window.veche.connection?.subscribePc;
    if (!pc) return 0;
    return pc.getStats().then(stats => {
        let frames = 0;
        stats.forEach(s => {
            if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
        });
        return frames;
    });
}"""
"""Page function: video frames decoded on the subscribe connection, from everyone."""

JS_HIDE_TAB = """(hidden) => {
    if (hidden) {
        Object.defineProperty(
            document, 'visibilityState', {configurable: true, get: () => 'hidden'});
    } else {
        delete document.visibilityState;
    }
    document.dispatchEvent(new Event('visibilitychange'));
}"""
"""Page function: make the page believe its tab was hidden (or shown again), as switching
tabs does."""

JS_TAKE_OFF = """(on) => {
    const tile = document.querySelectorAll('.tile:not(.me)')[0];
    tile.style.display = on ? 'none' : '';
    return tile.dataset.participantId;
}"""
"""Page function: take the first remote tile off the screen (or put it back); its owner."""


@contextlib.asynccontextmanager
async def _viewer(browser: str, base: str) -> AsyncIterator[Page | FirefoxPage]:
    if browser == "firefox":
        reason = firefox_missing()
        if reason:
            pytest.skip(reason)
        async with firefox() as fox:
            page = await fox.new_page(base)
            yield page
    else:
        async with chromium() as launched:
            context = await launched.new_context(
                permissions=["camera", "microphone"], base_url=base
            )
            yield await context.new_page()


@pytest.mark.parametrize("browser", ["chromium", "firefox"])
async def test_the_server_sends_only_the_videos_the_page_shows(browser: str) -> None:
    """Three publishers: the page shows three videos and is sent three; a tile taken off the
    screen is no longer sent within 2 s (the others still are); a hidden tab is sent no video
    within 2 s and decodes none; shown again, video is sent and decoded within 2 s."""
    with run_server("--admin-token", TOKEN) as server:
        publishers = [await MediaClient.join(server.ws, "seen", f"P{n}") for n in range(3)]
        try:
            for publisher in publishers:
                await publisher.publish()
            async with _viewer(browser, server.http) as page:
                await page.goto("/r/seen?name=Viewer&join=1&lang=en")
                await page.wait_for_function(
                    "() => [...document.querySelectorAll('.tile:not(.me) video')]"
                    ".filter(v => v.videoWidth > 0).length === 3",
                    timeout=30_000,
                )
                me = await page.evaluate("() => window.veche.connection.participantId")
                assert server.receiving("seen", me)["video"] == 3

                owner = await page.evaluate(JS_TAKE_OFF, True)
                took = await until(lambda: server.receiving("seen", me)["video"] == 2, timeout=2)
                await page.evaluate(JS_TAKE_OFF, False)
                await until(lambda: server.receiving("seen", me)["video"] == 3, timeout=2)
                assert owner in {p.participant_id for p in publishers}

                await page.evaluate(JS_HIDE_TAB, True)
                hid = await until(lambda: server.receiving("seen", me)["video"] == 0, timeout=2)
                await asyncio.sleep(0.5)  # what was in flight is decoded
                decoded = await page.evaluate(JS_FRAMES)
                await asyncio.sleep(1)
                assert await page.evaluate(JS_FRAMES) == decoded, "video decoded while hidden"
                assert server.receiving("seen", me)["audio"] == 3

                await page.evaluate(JS_HIDE_TAB, False)

                async def decoding() -> bool:
                    return bool(await page.evaluate(JS_FRAMES) > decoded + 10)

                back = await until(decoding, timeout=2)
                assert server.receiving("seen", me)["video"] == 3
                print(f"\n{browser}: off-screen tile stopped {took:.2f} s, hidden tab {hid:.2f} s,")
                print(f"video decoded again {back:.2f} s after the tab was shown")
        finally:
            for publisher in publishers:
                await publisher.close()


JS_PLAYING = """() => [...document.querySelectorAll('.tile:not(.me):not([hidden]) video')]
    .filter(v => v.videoWidth > 0 && !v.paused).length"""
"""Page function: videos playing in the remote tiles shown."""
JS_ON_PAGE = """() => [...document.querySelectorAll('.tile:not(.me)')]
    .filter(tile => !tile.hidden).map(tile => tile.dataset.participantId)"""
"""Page function: the remote tiles on the page shown."""


async def test_a_page_of_sixteen_in_a_room_of_twenty_is_sent_sixteen_videos() -> None:
    """Twenty aiortc publishers (a tiny slide each, no sound, themselves sent nothing) and one
    Chromium at 1280x800 with self view hidden: its page of 16 tiles plays 16 videos and the
    server forwards exactly 16; the next page shows the other 4, forwarded within 2 s; back on
    page one, a hidden tab is forwarded no video within 2 s, and the 16 again within 2 s of
    being shown."""
    limits = ("--max-connections-per-address", "100", "--max-pending-media-per-address", "100")
    with run_server("--admin-token", TOKEN, *limits) as server:
        publishers: list[MediaClient] = []
        try:
            for n in range(20):
                publisher = await MediaClient.join(server.ws, "twenty", f"P{n:02}")
                await publisher.send({"type": "view", "tiles": []})
                publishers.append(publisher)
            await asyncio.gather(*(p.publish(audio=False, cheap=True) for p in publishers))
            ids = {p.participant_id for p in publishers}
            async with chromium() as launched:
                context = await launched.new_context(
                    permissions=["camera", "microphone"],
                    base_url=server.http,
                    viewport={"width": 1280, "height": 800},
                )
                page = await context.new_page()
                await page.goto("/r/twenty?name=Viewer&join=1&lang=en")
                await page.wait_for_function(
                    "() => document.querySelectorAll('.tile:not(.me)').length === 20",
                    timeout=30_000,
                )
                await page.click(".pager-self")
                await page.wait_for_function(f"{JS_PLAYING} === 16", timeout=30_000)
                me = await page.evaluate("() => window.veche.connection.participantId")
                await until(lambda: server.receiving("twenty", me)["video"] == 16, timeout=2)
                first = set(await page.evaluate(JS_ON_PAGE))
                assert len(first) == 16
                assert first <= ids

                await page.click(".pager-next")
                turned = await until(
                    lambda: server.receiving("twenty", me)["video"] == 4, timeout=2
                )
                second = set(await page.evaluate(JS_ON_PAGE))
                assert len(second) == 4
                assert first | second == ids
                await page.wait_for_function(f"{JS_PLAYING} === 4", timeout=5_000)

                await page.click(".pager-previous")
                await until(lambda: server.receiving("twenty", me)["video"] == 16, timeout=2)
                assert set(await page.evaluate(JS_ON_PAGE)) == first

                await page.evaluate(JS_HIDE_TAB, True)
                hid = await until(lambda: server.receiving("twenty", me)["video"] == 0, timeout=2)
                await page.evaluate(JS_HIDE_TAB, False)
                back = await until(lambda: server.receiving("twenty", me)["video"] == 16, timeout=2)
                await page.wait_for_function(f"{JS_PLAYING} === 16", timeout=5_000)
                print(f"\ntwenty: next page sent in {turned:.2f} s, a hidden tab none in")
                print(f"{hid:.2f} s, shown again all 16 in {back:.2f} s")
                await context.close()
        finally:
            await asyncio.gather(*(p.close() for p in publishers), return_exceptions=True)
