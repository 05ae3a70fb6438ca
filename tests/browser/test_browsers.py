"""Calls across browsers: Debian's Chromium and Firefox ESR, alone and in mixed rooms.

Each participant is a browser context of its own (one Chromium and one Firefox process for the
whole module). The Firefox here has no H.264, as on any closed network (it would download
OpenH264 on first use), so a Chromium told to prefer H.264 stands for Safari, which does so by
default.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext

from tests.browser.conftest import chromium
from tests.browser.firefox import Firefox, FirefoxPage, firefox, firefox_missing
from tests.integration.serverproc import ServerProcess, run_server

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

Page = Any
"""A Playwright page or a :class:`FirefoxPage`: the calls used here are the same."""

JS_REMOTE_VIDEOS = """() => [...document.querySelectorAll('.tile:not(.me) video')]
    .filter(v => v.videoWidth > 0).length"""
"""Page function: how many other participants' videos are showing."""

JS_INBOUND = """async () => {
    const pc = window.veche.connection?.subscribePc;
    const out = {video: {}, audio: {}};
    if (!pc) return out;
    (await pc.getStats()).forEach(s => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') out.video[s.ssrc] = s.framesDecoded || 0;
        else out.audio[s.ssrc] = s.packetsReceived || 0;
    });
    return out;
}"""
"""Page function: video frames decoded and audio packets received, by incoming stream."""

JS_OUTBOUND_VIDEO_CODEC = """async () => {
    const pc = window.veche.connection?.publishPc;
    if (!pc) return null;
    const stats = await pc.getStats();
    let codec = null;
    stats.forEach(s => {
        if (s.type === 'outbound-rtp' && s.kind === 'video' && s.codecId && s.packetsSent > 0) {
            codec = stats.get(s.codecId)?.mimeType ?? null;
        }
    });
    return codec;
}"""
"""Page function: the codec this participant's camera is being sent in."""

H264_FIRST = """
(() => {
  // Prefer H.264 for every video sender, as Safari does by default.
  const add = RTCPeerConnection.prototype.addTransceiver;
  RTCPeerConnection.prototype.addTransceiver = function (...args) {
    const transceiver = add.apply(this, args);
    const kind = typeof args[0] === 'string' ? args[0] : args[0].kind;
    if (kind === 'video' && transceiver.sender) {
      const codecs = RTCRtpSender.getCapabilities('video').codecs;
      const h264 = codecs.filter(c => c.mimeType === 'video/H264');
      const others = codecs.filter(c => c.mimeType !== 'video/H264');
      transceiver.setCodecPreferences([...h264, ...others]);
    }
    return transceiver;
  };
})();
"""

CLAIMS_H264 = """
(() => {
  // A client that says it decodes H.264 although it cannot (a stale capability list).
  const get = RTCRtpReceiver.getCapabilities;
  RTCRtpReceiver.getCapabilities = function (kind) {
    const caps = get.call(this, kind);
    if (kind === 'video') caps.codecs.push({mimeType: 'video/H264', clockRate: 90000});
    return caps;
  };
})();
"""

JS_MARK_CONNECTIONS = """() => {
    const c = window.veche.connection;
    for (const pc of [c.publishPc, c.subscribePc]) if (pc) pc.__vecheMark = true;
}"""
JS_SAME_CONNECTIONS = """() => {
    const c = window.veche.connection;
    return [c.publishPc, c.subscribePc].every(pc => pc && pc.__vecheMark === true);
}"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fox() -> AsyncIterator[Firefox]:
    reason = firefox_missing()
    if reason:
        pytest.skip(reason)
    async with firefox() as launched:
        yield launched


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chrome() -> AsyncIterator[Browser]:
    """Chromium whose fake UI accepts every prompt and shares a synthetic screen."""
    async with chromium(fake_ui=True) as launched:
        yield launched


@pytest.fixture(scope="module")
def h264_server() -> Iterator[ServerProcess]:
    """A server that asks publishers for H.264 whenever the whole room can decode it."""
    with run_server("--host", "127.0.0.1", env={"VECHE_VIDEO_CODECS": "H264,VP8"}) as process:
        yield process
        assert process.terminate() == 0


Join = Callable[..., Awaitable[Page]]


@contextlib.asynccontextmanager
async def meeting(
    chrome: Browser, fox: Firefox, server: ServerProcess, room: str
) -> AsyncIterator[Join]:
    """``join(browser, name, init=None)`` opens a participant (``"chromium"`` or
    ``"firefox"``) in ``room``; ``init`` is a script run before the page's own.
    Everyone opened is closed afterwards."""
    opened: list[BrowserContext | FirefoxPage] = []

    async def join(browser: str, name: str, init: str | None = None) -> Page:
        page: Page
        if browser == "chromium":
            context = await chrome.new_context(
                permissions=["camera", "microphone"], base_url=server.http
            )
            opened.append(context)
            if init:
                await context.add_init_script(init)
            page = await context.new_page()
        else:
            page = await fox.new_page(server.http)
            opened.append(page)
            if init:
                await page.add_init_script(init)
        await page.goto(f"/r/{room}?name={name}&join=1&lang=en")
        return page

    try:
        yield join
    finally:
        for item in opened:
            await item.close()


async def _videos(page: Page, count: int, timeout: float) -> None:
    await page.wait_for_function(f"() => ({JS_REMOTE_VIDEOS})() >= {count}", timeout=timeout * 1000)


async def _eventually(page: Page, script: str, timeout: float) -> Any:
    """The first result of the page function ``script`` that is not null (polled; an async
    page function cannot be waited for with wait_for_function, its promise is truthy)."""
    deadline = time.monotonic() + timeout
    while (value := await page.evaluate(script)) is None:
        assert time.monotonic() < deadline, f"no value from {script[:60]!r}"
        await asyncio.sleep(0.2)
    return value


async def _media_flows(page: Page, others: int) -> None:
    """``others`` video streams are decoded and ``others`` audio streams received, rising over
    a second."""
    first = await page.evaluate(JS_INBOUND)
    await asyncio.sleep(1.0)
    second = await page.evaluate(JS_INBOUND)
    for kind, least in (("video", 5), ("audio", 20)):
        rising = [
            stream
            for stream, count in second[kind].items()
            if count - first[kind].get(stream, 0) >= least
        ]
        assert len(rising) >= others, (kind, first, second)


@pytest.mark.parametrize("pair", [("chromium", "firefox"), ("firefox", "firefox")])
async def test_two_people_see_and_hear_each_other(
    chrome: Browser, fox: Firefox, server: ServerProcess, pair: tuple[str, str]
) -> None:
    """Two participants, one or both in Firefox: each shows the other's video and decodes
    video frames and receives audio, rising."""
    async with meeting(chrome, fox, server, f"pair-{'-'.join(pair)}") as join:
        ada = await join(pair[0], "Ada")
        bob = await join(pair[1], "Bob")
        for page in (ada, bob):
            await _videos(page, 1, timeout=20)
        for page in (ada, bob):
            await _media_flows(page, 1)


async def test_a_firefox_window_behind_another_joins(
    chrome: Browser, fox: Firefox, server: ServerProcess
) -> None:
    """A Firefox page loaded in a window behind another (Firefox lists devices only to a
    focused window) still joins and shows the other participant's video."""
    async with meeting(chrome, fox, server, "behind") as join:
        ada = await join("firefox", "Ada")
        bob = await join("firefox", "Bob")  # his window opens in front of hers
        await ada.goto("/r/behind?name=Ada&join=1&lang=en")
        assert await ada.evaluate("() => document.hasFocus()") is False
        await ada.wait_for_function("() => window.veche?.ready === true", timeout=10000)
        for page in (ada, bob):
            await _videos(page, 1, timeout=20)


async def test_a_mixed_room_with_a_late_joiner_toggles_and_a_leave(
    chrome: Browser, fox: Firefox, server: ServerProcess
) -> None:
    """Chromium and Firefox in a call; a Firefox joining late shows both videos within 2 s;
    microphone and camera toggles in either browser are seen by the others; a leave removes the
    tile within 2 s."""
    async with meeting(chrome, fox, server, "mixed-trio") as join:
        ada = await join("chromium", "Ada")
        bob = await join("firefox", "Bob")
        for page in (ada, bob):
            await _videos(page, 1, timeout=20)

        cyd = await join("firefox", "Cyd")
        await cyd.wait_for_selector(".tile.me", timeout=10000)
        joined = time.monotonic()
        await _videos(cyd, 2, timeout=10)
        late = time.monotonic() - joined
        print(f"\nlate Firefox joiner showed both videos {late:.2f} s after its welcome")
        assert late < 2.0
        for page in (ada, bob, cyd):
            await _videos(page, 2, timeout=10)
            await _media_flows(page, 2)

        # Ada (Chromium) turns her microphone and camera off, Bob (Firefox) his microphone.
        await ada.click("#mic")
        await ada.click("#cam")
        await bob.click("#mic")
        both_off = "() => document.querySelector(\".tile[data-audio='false'][data-video='false']\")"
        mic_off = "() => document.querySelector(\".tile[data-audio='false'][data-video='true']\")"
        for page in (bob, cyd):
            await page.wait_for_function(both_off, timeout=5000)
        for page in (ada, cyd):
            await page.wait_for_function(mic_off, timeout=5000)
        assert await bob.get_attribute("#mic", "aria-pressed") == "false"

        # Cyd (Firefox) leaves: her tile goes from both others within 2 s.
        await cyd.click("#leave")
        left = time.monotonic()
        for page in (ada, bob):
            await page.wait_for_function(
                "() => document.querySelectorAll('.tile').length === 2", timeout=5000
            )
        assert time.monotonic() - left < 2.0
        await cyd.wait_for_function(
            "() => document.getElementById('ended-title').textContent === 'You left the meeting.'",
            timeout=5000,
        )


async def test_a_screen_shared_from_chromium_plays_in_firefox(
    chrome: Browser, fox: Firefox, server: ServerProcess
) -> None:
    """A Chromium participant shares a screen: the Firefox participant's stage shows it.
    (Headless Firefox has no screen to capture, so it only watches.)"""
    async with meeting(chrome, fox, server, "mixed-screen") as join:
        ada = await join("chromium", "Ada")
        bob = await join("firefox", "Bob")
        await _videos(bob, 1, timeout=20)
        await ada.click("#screen")
        await ada.wait_for_selector("#screen[aria-pressed='true']", timeout=10000)
        await bob.wait_for_function(
            "() => { const v = document.querySelector('#stage video');"
            " return v && v.videoWidth > 0; }",
            timeout=10000,
        )


@pytest.mark.parametrize("preference", ["VP8 first", "H.264 first"])
async def test_an_h264_publisher_and_a_firefox_without_h264_see_and_hear_each_other(
    chrome: Browser,
    fox: Firefox,
    server: ServerProcess,
    h264_server: ServerProcess,
    preference: str,
) -> None:
    """A Chromium preferring H.264 publishes first; a Firefox without H.264 joins. Both see
    and hear each other within 2 s of Firefox's welcome and nobody's media is restarted. With
    VP8 preferred (the default) the publisher sends VP8 from the start; with H.264 preferred it
    starts in H.264 and is switched to VP8 on the same connection when Firefox joins."""
    served = server if preference == "VP8 first" else h264_server
    room = "codec-" + preference.split()[0].replace(".", "").lower()
    earlier = len(served.output())  # the server is shared with the module's other tests
    async with meeting(chrome, fox, served, room) as join:
        ada = await join("chromium", "Ada", init=H264_FIRST)
        before = await _eventually(ada, JS_OUTBOUND_VIDEO_CODEC, timeout=20)
        assert before == ("video/VP8" if preference == "VP8 first" else "video/H264")
        await ada.evaluate(JS_MARK_CONNECTIONS)  # her publish connection, alone so far

        bob = await join("firefox", "Bob")
        await bob.wait_for_selector(".tile.me", timeout=10000)
        welcomed = time.monotonic()
        await _videos(bob, 1, timeout=10)
        await _videos(ada, 1, timeout=10)
        both = time.monotonic() - welcomed
        print(f"\n{preference}: video both ways {both:.2f} s after Firefox's welcome")
        assert both < 2.0
        await _media_flows(bob, 1)
        await _media_flows(ada, 1)
        assert await ada.evaluate(JS_OUTBOUND_VIDEO_CODEC) == "video/VP8"
        assert await ada.evaluate("() => window.veche.connection.publishPc.__vecheMark") is True

        # Nobody's media restarts: the same connections keep carrying it.
        await bob.evaluate(JS_MARK_CONNECTIONS)
        await ada.evaluate(JS_MARK_CONNECTIONS)
        await asyncio.sleep(3.0)
        for page in (ada, bob):
            assert await page.evaluate(JS_SAME_CONNECTIONS) is True
            await _media_flows(page, 1)
        assert "media reset" not in served.output()[earlier:]
        assert "could not be applied" not in served.output()[earlier:]


async def test_a_firefox_that_declines_h264_still_gets_the_video(
    chrome: Browser, fox: Firefox, h264_server: ServerProcess
) -> None:
    """A Firefox that claims H.264 is offered an H.264 publisher's video and declines that
    section (as the WebRTC specification allows): its audio keeps flowing, the server takes the
    decline (no ``bad_sdp``, no reset), asks the publisher for VP8 on the same connection, and
    the video arrives."""
    earlier = len(h264_server.output())  # the server is shared with the module's other tests
    async with meeting(chrome, fox, h264_server, "codec-declined") as join:
        ada = await join("chromium", "Ada", init=H264_FIRST)
        assert await _eventually(ada, JS_OUTBOUND_VIDEO_CODEC, timeout=20) == "video/H264"
        await ada.evaluate(JS_MARK_CONNECTIONS)

        bob = await join("firefox", "Bob", init=CLAIMS_H264)
        await bob.wait_for_selector(".tile.me", timeout=10000)
        welcomed = time.monotonic()
        await _videos(bob, 1, timeout=10)
        print(f"\nvideo after the decline {time.monotonic() - welcomed:.2f} s after the welcome")
        await _media_flows(bob, 1)
        await _videos(ada, 1, timeout=10)
        assert await ada.evaluate(JS_OUTBOUND_VIDEO_CODEC) == "video/VP8"
        assert await ada.evaluate("() => window.veche.connection.publishPc.__vecheMark") is True
        log = h264_server.output()[earlier:]
        assert "section declined" in log
        assert "media reset" not in log
        assert "could not be applied" not in log
