"""Simulcast: a Chromium or Firefox publisher sends its camera in three layers and the server
forwards each viewer the one layer that suits the size it shows the video at, switching at a
keyframe when the size changes; a Firefox viewer of a simulcast publisher decodes it too."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Browser, Page

from tests.browser.conftest import chromium
from tests.browser.firefox import firefox, firefox_missing
from tests.integration.serverproc import NO_GOVERNOR, ServerProcess, run_server
from tests.integration.waiting import until

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

TOKEN = "admin-token-0123456789abcdef-0123456"

JS_VIDEO = """(owner) => {
    const pc = window.veche.connection?.subscribePc;
    const video = document.querySelector(`.tile[data-participant-id="${owner}"] video`);
    const track = video?.srcObject?.getVideoTracks()[0];
    if (!pc || !track) return null;
    return pc.getStats().then(stats => {
        let found = null;
        stats.forEach(s => {
            if (s.type === 'inbound-rtp' && s.kind === 'video' && s.trackIdentifier === track.id
                && (s.framesDecoded || 0) > 0)
                found = {width: s.frameWidth || 0, frames: s.framesDecoded,
                         freezes: s.freezeCount || 0};
        });
        return found;
    });
}"""
"""Page function: the width, frames decoded and freezes of ``owner``'s decoded video (or null)."""

JS_HD_CAMERA = """(() => {
    const devices = navigator.mediaDevices;
    const original = devices.getUserMedia.bind(devices);
    devices.getUserMedia = (constraints) => {
        if (constraints && constraints.video) {
            const video = constraints.video === true ? {} : constraints.video;
            constraints = {...constraints,
                           video: {...video, width: {ideal: 1280}, height: {ideal: 720}}};
        }
        return original(constraints);
    };
})()"""
"""Init script: capture the camera at 1280x720 (the client asks for 640x480, at which Chromium
sends only two of the three layers)."""

JS_SENT = """() => window.veche.connection.publishPc.getStats().then(stats => {
    const out = [];
    stats.forEach(s => {
        if (s.type === 'outbound-rtp' && s.kind === 'video')
            out.push([s.rid, s.frameWidth, s.qualityLimitationReason, s.targetBitrate, s.active]);
        if (s.type === 'candidate-pair' && s.nominated)
            out.push(['bwe', s.availableOutgoingBitrate]);
    });
    return out;
})"""

JS_LAYERS_SENT = """() => window.veche.connection.publishPc.getStats().then(stats => {
    const out = {};
    stats.forEach(s => {
        if (s.type === 'outbound-rtp' && s.kind === 'video' && s.rid && s.frameWidth)
            out[s.rid] = s.frameWidth;
    });
    return out;
})"""
"""Page function: the width each camera layer is being encoded at, by rid."""

JS_TILE_WIDTH = """([owner, width]) => {
    const tile = document.querySelector(`.tile[data-participant-id="${owner}"]`);
    if (!tile) return false;
    tile.style.width = width + 'px';
    tile.style.maxWidth = width + 'px';
    tile.style.flex = 'none';
    return true;
}"""
"""Page function: show ``owner``'s tile ``width`` CSS pixels wide (the view report follows);
the other listener's tile is left as it is."""


def _layers(server: ServerProcess, participant_id: str, publisher: str) -> list[str | None]:
    """The layer ``participant_id`` is sent of each simulcast video of ``publisher``."""
    me = server.participant("simul", participant_id)
    return [x["layer"] for x in me["layers"] if x["from"] == publisher]


async def listener(
    browser: Browser, base: str, name: str, owner: str, width: int, room: str = "simul"
) -> Page:
    """A participant of ``room`` without camera or microphone (a listener) who shows
    ``owner``'s tile ``width`` CSS pixels wide."""
    context = await browser.new_context(base_url=base, viewport={"width": 1600, "height": 1000})
    page = await context.new_page()
    await page.goto(f"/r/{room}?name={name}&join=1&lang=en")
    await page.wait_for_function(
        "() => [...document.querySelectorAll('.tile:not(.me) video')].some(v => v.videoWidth > 0)",
        timeout=30_000,
    )
    assert await page.evaluate(JS_TILE_WIDTH, [owner, width])
    return page


async def _decoded_width(page: Page, owner: str, check: Any, seconds: float) -> tuple[float, int]:
    """Wait until the decoded width of ``owner``'s video satisfies ``check``; the time it took
    and the width."""
    seen: dict[str, int] = {}

    async def ok() -> bool:
        video = await page.evaluate(JS_VIDEO, owner)
        if video is None:
            return False
        seen["width"] = video["width"]
        return bool(check(video["width"]))

    took = await until(ok, timeout=seconds)
    return took, seen["width"]


async def test_each_viewer_gets_the_layer_of_its_tile_size() -> None:
    """A publisher simulcasts; a viewer showing the tile 200 px wide decodes the low layer and
    one showing it 1200 px wide a higher one; when the small tile grows it switches up within
    4 s, and back down within 3 s, and the video never stops (frames decoded keep rising)."""
    with run_server("--admin-token", TOKEN, *NO_GOVERNOR) as server:
        async with chromium(fake_ui=True) as browser:
            context = await browser.new_context(
                permissions=["camera", "microphone"], base_url=server.http
            )
            await context.add_init_script(JS_HD_CAMERA)
            publisher = await context.new_page()
            await publisher.goto("/r/simul?name=Pub&join=1&lang=en")
            await publisher.wait_for_function(
                "() => window.veche?.connection?.publishPc?.connectionState === 'connected'",
                timeout=30_000,
            )
            async with chromium() as viewers:
                pub = await publisher.evaluate("() => window.veche.connection.participantId")
                small = await listener(viewers, server.http, "Small", pub, 200)
                large = await listener(viewers, server.http, "Large", pub, 1200)
                _, low = await _decoded_width(small, pub, lambda w: 0 < w <= 400, 10)
                _, high = await _decoded_width(large, pub, lambda w: w > low, 20)
                me = await small.evaluate("() => window.veche.connection.participantId")
                assert _layers(server, me, pub) == ["q"]
                sent = await publisher.evaluate(JS_SENT)
                print(f"\nlayers decoded: small tile {low} px wide, large tile {high} px wide;")
                print(f"the publisher sends {sent}")

                before = await small.evaluate(JS_VIDEO, pub)
                await small.evaluate(JS_TILE_WIDTH, [pub, 1200])
                # Up to the top layer takes its (large) keyframe: up to 4 s on this machine.
                took, width = await _decoded_width(small, pub, lambda w: w > low, 4)
                after = await small.evaluate(JS_VIDEO, pub)
                assert after["frames"] > before["frames"]
                await small.evaluate(JS_TILE_WIDTH, [pub, 200])
                # The low layer, whatever size the publisher's CPU lets it have now; within the
                # 3 s the issue allows a viewer to step down (the publisher encodes three
                # layers of 720p on a shared 2-core machine meanwhile).
                down, lower = await _decoded_width(small, pub, lambda w: 0 < w <= 400, 3)
                final = await small.evaluate(JS_VIDEO, pub)
                assert final["frames"] > after["frames"]
                assert _layers(server, me, pub) == ["q"]
                print(
                    f"switched up to {width} px in {took:.2f} s, down to {lower} px in "
                    f"{down:.2f} s; freezes {final['freezes']}"
                )


async def test_firefox_decodes_a_simulcast_publisher() -> None:
    """A Firefox viewer of a Chromium publisher that simulcasts decodes its video."""
    reason = firefox_missing()
    if reason:
        pytest.skip(reason)
    with run_server("--admin-token", TOKEN, *NO_GOVERNOR) as server:
        async with chromium(fake_ui=True) as browser:
            context = await browser.new_context(
                permissions=["camera", "microphone"], base_url=server.http
            )
            publisher = await context.new_page()
            await publisher.goto("/r/simul?name=Pub&join=1&lang=en")
            async with firefox() as fox:
                page = await fox.new_page(server.http)
                await page.goto("/r/simul?name=Fox&join=1&lang=en")
                await page.wait_for_function(
                    "() => [...document.querySelectorAll('.tile:not(.me) video')]"
                    ".some(v => v.videoWidth > 0)",
                    timeout=30_000,
                )
                me = await page.evaluate("() => window.veche.connection.participantId")
                pub = await publisher.evaluate("() => window.veche.connection.participantId")
                assert _layers(server, me, pub) in (["q"], ["h"], ["f"])


async def test_a_firefox_publisher_sends_three_layers_and_each_viewer_gets_its_own() -> None:
    """A Firefox publisher encodes its camera in three layers (q, h, f, each wider than the one
    below); a Chromium viewer showing the tile 200 px wide decodes the low layer and one showing
    it 1200 px wide the high one; when the small tile grows it switches up within 4 s and back
    down within 3 s, and the video never stops."""
    reason = firefox_missing()
    if reason:
        pytest.skip(reason)
    with run_server("--admin-token", TOKEN, *NO_GOVERNOR) as server:
        async with firefox() as fox:
            publisher = await fox.new_page(server.http)
            await publisher.goto("/r/simul?name=Fox&join=1&lang=en")
            await publisher.wait_for_function(
                "() => window.veche?.connection?.publishPc?.connectionState === 'connected'",
                timeout=30_000,
            )
            sent: dict[str, int] = {}

            async def three_layers() -> bool:
                sent.update(await publisher.evaluate(JS_LAYERS_SENT))
                return len(sent) == 3

            await until(three_layers, timeout=10)
            assert sent["q"] < sent["h"] < sent["f"], sent
            pub = await publisher.evaluate("() => window.veche.connection.participantId")
            async with chromium() as viewers:
                small = await listener(viewers, server.http, "Small", pub, 200)
                large = await listener(viewers, server.http, "Large", pub, 1200)
                _, low = await _decoded_width(small, pub, lambda w: 0 < w <= 400, 10)
                me = await small.evaluate("() => window.veche.connection.participantId")
                other = await large.evaluate("() => window.veche.connection.participantId")
                assert _layers(server, me, pub) == ["q"]
                # Firefox starts its top layer once its bandwidth estimate has grown (2-3 s).
                await until(lambda: _layers(server, other, pub) == ["f"], timeout=15)
                _, high = await _decoded_width(large, pub, lambda w: w > sent["h"], 10)
                print(f"\nFirefox encodes {sent}; decoded: small tile {low} px, large {high} px")

                before = await small.evaluate(JS_VIDEO, pub)
                await small.evaluate(JS_TILE_WIDTH, [pub, 1200])
                took, width = await _decoded_width(small, pub, lambda w: w > low, 4)
                after = await small.evaluate(JS_VIDEO, pub)
                assert after["frames"] > before["frames"]
                await small.evaluate(JS_TILE_WIDTH, [pub, 200])
                down, lower = await _decoded_width(small, pub, lambda w: 0 < w <= 400, 3)
                final = await small.evaluate(JS_VIDEO, pub)
                assert final["frames"] > after["frames"]
                assert _layers(server, me, pub) == ["q"]
                print(
                    f"switched up to {width} px in {took:.2f} s, down to {lower} px in "
                    f"{down:.2f} s; freezes {final['freezes']}"
                )


async def test_a_firefox_viewer_decodes_a_firefox_simulcast_publisher() -> None:
    """A Firefox viewer of a Firefox publisher that simulcasts is sent one of its layers and
    decodes it, frames rising."""
    reason = firefox_missing()
    if reason:
        pytest.skip(reason)
    with run_server("--admin-token", TOKEN, *NO_GOVERNOR) as server:
        async with firefox() as fox:
            publisher = await fox.new_page(server.http)
            await publisher.goto("/r/simul?name=Pub&join=1&lang=en")
            viewer = await fox.new_page(server.http)
            await viewer.goto("/r/simul?name=Fox&join=1&lang=en")
            await viewer.wait_for_function(
                "() => [...document.querySelectorAll('.tile:not(.me) video')]"
                ".some(v => v.videoWidth > 0)",
                timeout=30_000,
            )
            me = await viewer.evaluate("() => window.veche.connection.participantId")
            pub = await publisher.evaluate("() => window.veche.connection.participantId")
            assert _layers(server, me, pub) in (["q"], ["h"], ["f"])
            _, width = await _decoded_width(viewer, pub, lambda w: w > 0, 10)
            frames = (await viewer.evaluate(JS_VIDEO, pub))["frames"]

            async def rising() -> bool:
                video = await viewer.evaluate(JS_VIDEO, pub)
                return bool(video and video["frames"] >= frames + 20)

            await until(rising, timeout=5)
            print(f"\nthe Firefox viewer decodes {width} px wide")
