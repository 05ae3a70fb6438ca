"""Temporal layers: a Chromium publisher encodes each simulcast layer in three temporal layers,
and a viewer of it is sent half or a quarter of the frames when the load governor says so,
without a keyframe and without a freeze; then every frame again."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any, Final

import pytest
from playwright.async_api import Page

from tests.browser.conftest import chromium
from tests.browser.firefox import FirefoxPage, firefox, firefox_missing
from tests.browser.test_simulcast import JS_HD_CAMERA, listener
from tests.integration.serverproc import NO_GOVERNOR, ServerProcess, run_server
from tests.integration.test_metrics import scrape, value
from tests.integration.waiting import until

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

TOKEN = "admin-token-0123456789abcdef-0123456"

CAMERA_30FPS: Final = ("--use-fake-device-for-media-stream=fps=30",)
"""Chromium's fake camera at 30 fps (20 by default), as a real one: its temporal layers are then
7.5, 15 and 30 fps (at 20 fps, TID 0's 200 ms between frames counts as a freeze in Chromium's
stats while its average frame duration still says 50 ms)."""

JS_NO_MICROPHONE = """(() => {
    const devices = navigator.mediaDevices;
    const original = devices.getUserMedia.bind(devices);
    devices.getUserMedia = (constraints) => original({...constraints, audio: false});
})()"""
"""Init script: capture the camera only, so that the publisher never becomes the active
speaker (whose video the governor never touches)."""

JS_RECEIVED = """(owner) => {
    const pc = window.veche.connection?.subscribePc;
    const video = document.querySelector(`.tile[data-participant-id="${owner}"] video`);
    const track = video?.srcObject?.getVideoTracks()[0];
    if (!pc || !track) return null;
    return pc.getStats().then(stats => {
        let found = null;
        stats.forEach(s => {
            if (s.type === 'inbound-rtp' && s.kind === 'video' && s.trackIdentifier === track.id)
                found = {frames: s.framesDecoded || 0, keyframes: s.keyFramesDecoded || 0,
                         freezes: s.freezeCount || 0, frozen: s.totalFreezesDuration || 0,
                         packets: s.packetsReceived || 0,
                         bytes: s.bytesReceived || 0, width: s.frameWidth || 0,
                         lost: s.packetsLost || 0, at: performance.now()};
        });
        return found;
    });
}"""
"""Page function: counters of ``owner``'s video as received (or null)."""

JS_RECEIVED_ANY = """() => {
    const pc = window.veche.connection?.subscribePc;
    if (!pc) return null;
    return pc.getStats().then(stats => {
        let found = null;
        stats.forEach(s => {
            if (s.type === 'inbound-rtp' && s.kind === 'video'
                && (found === null || (s.framesDecoded || 0) > found.frames))
                found = {frames: s.framesDecoded || 0, keyframes: s.keyFramesDecoded ?? null,
                         packets: s.packetsReceived || 0, bytes: s.bytesReceived || 0,
                         at: performance.now()};
        });
        return found;
    });
}"""
"""Page function: counters of the video received that decoded the most frames (Firefox's
stats name no track; these tests receive one video)."""

JS_MODES = """() => window.veche.connection.publishPc.getStats().then(stats => {
    const out = [];
    stats.forEach(s => {
        if (s.type === 'outbound-rtp' && s.kind === 'video' && s.framesEncoded > 0)
            out.push(s.scalabilityMode || null);
    });
    return out;
})"""
"""Page function: the scalability mode of each video layer the publisher encodes (at 640x480
Chromium encodes two of the three)."""


def pin(server: ServerProcess, level: int | None) -> None:
    """Hold the server's load governor at ``level`` (``PUT /api/governor``)."""
    request = urllib.request.Request(
        f"{server.http}/api/governor",
        data=json.dumps({"level": level}).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.load(response)["pinned"] == level


JS_ENCODED = """(rid) => window.veche.connection.publishPc.getStats().then(stats => {
    let frames = 0;
    stats.forEach(s => {
        if (s.type === 'outbound-rtp' && s.kind === 'video' && s.rid === rid)
            frames = s.framesEncoded || 0;
    });
    return frames;
})"""
"""Page function: frames the publisher encoded of layer ``rid`` so far."""


async def rate(
    page: Page | FirefoxPage,
    owner: str,
    seconds: float,
    script: str = JS_RECEIVED,
    publisher: Page | None = None,
) -> dict[str, Any]:
    """Frames, packets and bits per second of ``owner``'s video received over ``seconds``, with
    the counters at the end (``script`` reads them). With ``publisher``, also ``share``: the
    frames decoded over those the publisher encoded of its lowest layer meanwhile (its frame
    rate falls when a busy machine starves its encoder)."""
    before = await page.evaluate(script, owner)
    encoded = await publisher.evaluate(JS_ENCODED, "q") if publisher is not None else 0
    await asyncio.sleep(seconds)
    after = await page.evaluate(script, owner)
    if publisher is not None:
        encoded = await publisher.evaluate(JS_ENCODED, "q") - encoded
    elapsed = (after["at"] - before["at"]) / 1000
    return after | {
        "fps": (after["frames"] - before["frames"]) / elapsed,
        "pps": (after["packets"] - before["packets"]) / elapsed,
        "kbps": (after["bytes"] - before["bytes"]) * 8 / elapsed / 1000,
        "share": (after["frames"] - before["frames"]) / encoded if encoded else None,
    }


async def _publisher(browser: Any, base: str, hd: bool = False) -> tuple[Page, str]:
    context = await browser.new_context(permissions=["camera", "microphone"], base_url=base)
    await context.add_init_script(JS_NO_MICROPHONE)
    if hd:
        await context.add_init_script(JS_HD_CAMERA)
    page = await context.new_page()
    await page.goto("/r/simul?name=Pub&join=1&lang=en")
    await page.wait_for_function(
        "() => window.veche?.connection?.publishPc?.connectionState === 'connected'",
        timeout=30_000,
    )
    return page, await page.evaluate("() => window.veche.connection.participantId")


async def test_a_viewer_gets_fewer_frames_without_a_keyframe_and_all_of_them_again() -> None:
    """A Chromium publisher sends each layer in L1T3. A viewer of its lowest layer decodes its
    full frame rate (30 fps); with the governor at level 1 about half of it (15 fps, TID <= 1),
    at level 3 about a quarter (7.5 fps, TID 0), back at level 0 all of it again: the video
    keeps moving (over 3 fps in every 3 s window), no keyframe is decoded and none asked of the
    publisher throughout, and nothing freezes longer than a loaded machine's scheduling can
    explain. Frame rates are counted against what the publisher encoded meanwhile."""
    with run_server("--admin-token", TOKEN, *NO_GOVERNOR) as server:
        async with chromium(fake_ui=True, extra_args=CAMERA_30FPS) as browser:
            publisher, pub = await _publisher(browser, server.http)
            async with chromium() as viewers:
                page = await listener(viewers, server.http, "Viewer", pub, 200)
                me = await page.evaluate("() => window.veche.connection.participantId")

                async def on_low_layer() -> bool:
                    layers = server.participant("simul", me)["layers"]
                    return [x["layer"] for x in layers if x["from"] == pub] == ["q"]

                await until(on_low_layer, timeout=15)
                assert set(await publisher.evaluate(JS_MODES)) == {"L1T3"}
                await asyncio.sleep(2)  # the picture settles at its layer
                full = await rate(page, pub, 3, publisher=publisher)
                requests = value(scrape(server), "veche_keyframe_requests_total")
                seen = [full]
                for level in (1, 3, 0):
                    pin(server, level)
                    started = time.monotonic()
                    await asyncio.sleep(1)  # taken at the next sample, a quarter-second
                    seen.append(await rate(page, pub, 3, publisher=publisher))
                    print(f"level {level} after {time.monotonic() - started:.1f} s: {seen[-1]}")
                half, quarter, again = seen[1:]
                print(f"\nfull {full}")
                metrics = scrape(server)
                assert full["share"] > 0.8
                assert 0.4 < half["share"] < 0.6
                assert 0.15 < quarter["share"] < 0.35
                assert again["share"] > 0.8
                assert min(r["fps"] for r in seen) > 3  # moving in every window
                assert again["keyframes"] == full["keyframes"]
                # A frame that waited for one left out (a gap in the picture ids, a reference
                # not sent) would stall the picture until a keyframe; a loaded machine may
                # still delay one 5 fps frame past Chromium's freeze threshold.
                assert again["frozen"] - full["frozen"] < 0.5
                assert value(metrics, "veche_keyframe_requests_total") == requests
                assert value(metrics, "veche_frames_thinned_total") > 0
                assert [x["layer"] for x in server.participant("simul", me)["layers"]] == ["q"]


async def test_a_firefox_viewer_gets_half_the_frames_and_all_again() -> None:
    """A Firefox viewer of a Chromium publisher's L1T3 layers decodes about half its frame rate
    with the governor at level 1 (its layer unchanged) and all of it again at level 0, with no
    keyframe asked of the publisher."""
    reason = firefox_missing()
    if reason:
        pytest.skip(reason)
    with run_server("--admin-token", TOKEN, *NO_GOVERNOR) as server:
        async with chromium(fake_ui=True, extra_args=CAMERA_30FPS) as browser:
            publisher, pub = await _publisher(browser, server.http)
            async with firefox() as fox:
                page = await fox.new_page(server.http)
                await page.goto("/r/simul?name=Fox&join=1&lang=en")
                await page.wait_for_function(
                    "() => [...document.querySelectorAll('.tile:not(.me) video')]"
                    ".some(v => v.videoWidth > 0)",
                    timeout=30_000,
                )
                me = await page.evaluate("() => window.veche.connection.participantId")
                await asyncio.sleep(3)  # the picture settles at its layer
                layer = [x["layer"] for x in server.participant("simul", me)["layers"]]
                full = await rate(page, pub, 3, JS_RECEIVED_ANY, publisher)
                requests = value(scrape(server), "veche_keyframe_requests_total")
                pin(server, 1)
                await asyncio.sleep(1)
                half = await rate(page, pub, 3, JS_RECEIVED_ANY, publisher)
                pin(server, 0)
                await asyncio.sleep(1)
                again = await rate(page, pub, 3, JS_RECEIVED_ANY, publisher)
                print(f"\nFirefox: layer {layer}, {full}, {half}, {again}")
                # Firefox decodes late on a busy machine: its shares are compared with its own.
                assert full["share"] > 0.7
                assert 0.4 < half["share"] / full["share"] < 0.65
                assert again["share"] / full["share"] > 0.8
                assert [x["layer"] for x in server.participant("simul", me)["layers"]] == layer
                assert value(scrape(server), "veche_keyframe_requests_total") == requests
                assert again["keyframes"] == full["keyframes"]  # null where not reported
