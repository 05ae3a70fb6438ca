"""Calls in real headless Chromium with fake cameras and microphones, against the real server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page

from tests.integration.serverproc import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

JS_REMOTE_VIDEOS = """() => [...document.querySelectorAll('.tile:not(.me) video')]
    .filter(v => v.videoWidth > 0).length"""

JS_INBOUND = """async () => {
    const pc = window.veche.connection?.subscribePc;
    if (!pc) return {video: [], audio: []};
    const stats = await pc.getStats();
    const out = {video: [], audio: []};
    stats.forEach(s => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') out.video.push(s.framesDecoded || 0);
        else out.audio.push(s.packetsReceived || 0);
    });
    return out;
}"""


async def _participant(
    browser: Browser, server: ServerProcess, room: str, name: str, *, devices: bool = True
) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(
        permissions=["camera", "microphone"] if devices else [],
        base_url=server.http,
    )
    page = await context.new_page()
    await page.goto(f"/r/{room}?name={name}&join=1&lang=en")
    return context, page


async def _wait(page: Page, script: str, expected: Any, timeout: float) -> float:
    start = time.monotonic()
    await page.wait_for_function(f"() => ({script})() >= {expected}", timeout=timeout * 1000)
    return time.monotonic() - start


async def _tile_count(page: Page) -> int:
    return await page.locator(".tile").count()


async def test_three_participants_see_and_hear_each_other(
    browser: Browser, server: ServerProcess
) -> None:
    """Two join, a third joins late and shows both videos within 2 s; everyone decodes two
    videos and receives two audio streams; toggles and leaving are seen by the others."""
    a_ctx, a = await _participant(browser, server, "trio", "Ada")
    b_ctx, b = await _participant(browser, server, "trio", "Bob")
    c_ctx: BrowserContext | None = None
    contexts: list[BrowserContext] = []
    try:
        for page in (a, b):
            await _wait(page, JS_REMOTE_VIDEOS, 1, timeout=20)

        c_ctx, c = await _participant(browser, server, "trio", "Cyd")
        await c.wait_for_selector(".tile.me", timeout=10000)
        joined = time.monotonic()
        await _wait(c, JS_REMOTE_VIDEOS, 2, timeout=10)
        late_join_seconds = time.monotonic() - joined
        assert late_join_seconds < 2.0, (
            f"late joiner showed both videos after {late_join_seconds:.2f} s"
        )

        for page in (a, b, c):
            await _wait(page, JS_REMOTE_VIDEOS, 2, timeout=10)
            first = await page.evaluate(JS_INBOUND)
            await asyncio.sleep(1.0)
            second = await page.evaluate(JS_INBOUND)
            assert len(second["video"]) >= 2
            assert len(second["audio"]) >= 2
            decoding = sorted(second["video"])[-2:]
            assert all(frames > 0 for frames in decoding)
            assert sum(second["video"]) > sum(first["video"]) + 20, (first, second)
            assert sorted(second["audio"])[-2] > 0

        # Ada mutes her microphone and turns off her camera: the others see it.
        await a.click("#mic")
        await a.click("#cam")
        for page in (b, c):
            tile = page.locator(".tile[data-audio='false'][data-video='false']")
            await tile.wait_for(timeout=5000)
            assert await tile.locator(".mic-off").is_visible()
            assert await tile.locator(".cam-off").is_visible()
        assert await a.get_attribute("#mic", "aria-pressed") == "false"

        # Cyd leaves: the tile disappears from the others within 2 s.
        await c.click("#leave")
        left = time.monotonic()
        for page in (a, b):
            await page.wait_for_function(
                "() => document.querySelectorAll('.tile').length === 2", timeout=5000
            )
        assert time.monotonic() - left < 2.0
        # (Cyd's own page says so once the server's close reaches it.)
        await c.wait_for_function(
            "() => document.getElementById('ended-title').textContent === 'You left the meeting.'",
            timeout=5000,
        )

        # Dan joins next: the others' idle transceivers (Cyd's) are reused for his tracks.
        d_ctx, d = await _participant(browser, server, "trio", "Dan")
        contexts.append(d_ctx)
        # (Ada's camera is off by now: Bob and Dan see one video each, Ada sees two.)
        await _wait(a, JS_REMOTE_VIDEOS, 2, timeout=10)
        for page in (b, d):
            await _wait(page, JS_REMOTE_VIDEOS, 1, timeout=10)
        offer_sections = await a.evaluate(
            "() => window.veche.connection.subscribePc.remoteDescription.sdp.split('m=').length - 1"
        )
        assert offer_sections == 4, "Cyd's two m-sections were not reused for Dan"
    finally:
        for ctx in (a_ctx, b_ctx, c_ctx, *contexts):
            if ctx is not None:
                await ctx.close()


async def test_participant_without_camera_permission_joins_and_hears(
    browser: Browser, server: ServerProcess
) -> None:
    """Camera and microphone denied: the page says so in words, joins as a listener and
    receives the others' audio and video."""
    a_ctx, a = await _participant(browser, server, "listen", "Ada")
    l_ctx, listener = await _participant(browser, server, "listen", "Lia", devices=False)
    try:
        await listener.wait_for_selector(".tile.me", timeout=15000)
        note = await listener.locator("#device-note").text_content()
        assert note is not None
        assert "listener" in note
        await _wait(listener, JS_REMOTE_VIDEOS, 1, timeout=20)
        await listener.wait_for_function(
            f"async () => ((await ({JS_INBOUND})()).audio.some(p => p > 20))", timeout=10000
        )
        me = listener.locator(".tile.me")
        assert await me.get_attribute("data-audio") == "false"
        # The speaker sees the listener's tile with both indicators.
        await a.locator(".tile[data-audio='false'][data-video='false']").wait_for(timeout=5000)
    finally:
        await a_ctx.close()
        await l_ctx.close()


async def test_switching_microphone_during_the_call(
    browser: Browser, server: ServerProcess
) -> None:
    """Choosing another microphone in the call's device picker sends that device without a
    new negotiation."""
    a_ctx, a = await _participant(browser, server, "switch", "Ada")
    b_ctx, b = await _participant(browser, server, "switch", "Bob")
    try:
        await _wait(b, JS_REMOTE_VIDEOS, 1, timeout=20)
        options = await a.eval_on_selector_all(
            "#mic-select-call option", "els => els.map(e => [e.value, e.textContent])"
        )
        assert len(options) >= 2, options
        current = await a.evaluate(
            "() => window.veche.connection.tracks.audio.getSettings().deviceId"
        )
        other = next(value for value, _ in options if value != current)
        offers = await a.evaluate("() => window.veche.connection.publishPc.localDescription.sdp")
        await a.click(".settings summary")
        await a.select_option("#mic-select-call", other)
        await a.wait_for_function(
            "(id) => window.veche.connection.senders.audio.track?.getSettings().deviceId === id",
            arg=other,
        )
        after = await a.evaluate("() => window.veche.connection.publishPc.localDescription.sdp")
        assert after == offers
    finally:
        await a_ctx.close()
        await b_ctx.close()


@pytest.mark.parametrize("how", ["closed", "crashed"])
async def test_closed_tab_disappears_from_the_others(
    browser: Browser, server: ServerProcess, how: str
) -> None:
    """A tab closed without leaving, or whose renderer is killed, disappears from the other's
    view within 15 s (its browser ends the connection: no resume grace)."""
    room = f"closing-{how}"
    a_ctx, a = await _participant(browser, server, room, "Ada")
    b_ctx, b = await _participant(browser, server, room, "Bob")
    try:
        await _wait(a, JS_REMOTE_VIDEOS, 1, timeout=20)
        if how == "closed":
            await b.close()
        else:
            cdp = await b_ctx.new_cdp_session(b)
            # The renderer dies before it can answer.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(cdp.send("Page.crash"), 2)
        closed = time.monotonic()
        await a.wait_for_function(
            "() => document.querySelectorAll('.tile').length === 1", timeout=15000
        )
        assert time.monotonic() - closed < 15
    finally:
        await a_ctx.close()
        await b_ctx.close()


async def test_a_lost_subscribe_connection_is_renewed_alone(
    browser: Browser, server: ServerProcess
) -> None:
    """Bob's receiving connection ends under him (closed here from the page, as a lost ICE
    consent ends it): the server renews that connection only, Bob's page answers its offer on a
    new one and decodes Ada again, and Ada, whose view of Bob never depended on it, keeps
    decoding Bob on the same connection throughout."""
    logged = len(server.output())  # the server is shared by this module's tests
    a_ctx, a = await _participant(browser, server, "renew", "Ada")
    b_ctx, b = await _participant(browser, server, "renew", "Bob")
    try:
        for page in (a, b):
            await _wait(page, JS_REMOTE_VIDEOS, 1, timeout=20)
        await a.evaluate("() => { window.veche.connection.subscribePc.__kept = true; }")
        before = await a.evaluate(JS_INBOUND)
        await b.evaluate(
            """() => {
                window.__errors = [];
                const connection = window.veche.connection;
                const onError = connection.onError;
                connection.onError = (message) => {
                    window.__errors.push(message);
                    onError(message);
                };
                connection.subscribePc.__old = true;
                connection.subscribePc.close();
            }"""
        )
        await b.wait_for_function(
            "() => window.__errors.some(e => e.code === 'media_failed' && e.pc === 'subscribe')",
            timeout=10000,
        )
        await b.wait_for_function(
            """async () => {
                const pc = window.veche.connection.subscribePc;
                if (!pc || pc.__old) return false;
                let frames = 0;
                (await pc.getStats()).forEach(s => {
                    if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded;
                });
                return frames > 10;
            }""",
            timeout=20000,
        )
        await _wait(b, JS_REMOTE_VIDEOS, 1, timeout=5)
        await a.wait_for_function(
            f"async () => (await ({JS_INBOUND})()).video.reduce((x, y) => x + y, 0) >= "
            f"{sum(before['video']) + 30}",
            timeout=10000,
        )
        assert await a.evaluate("() => window.veche.connection.subscribePc.__kept === true")
        assert server.output()[logged:].count("media reset after failure") == 1
        # Bob still publishes on his first connection: only the receiving one was renewed.
        assert await b.evaluate("() => window.veche.connection.publishPc.connectionState") == (
            "connected"
        )
    finally:
        await a_ctx.close()
        await b_ctx.close()
