"""Temporal layers: a Chromium publisher encodes each simulcast layer in three temporal layers,
and a viewer of it is sent half or a quarter of the frames when the load governor says so,
without a keyframe and without a freeze; then every frame again."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

import pytest
from playwright.async_api import Page

from tests.browser.conftest import chromium
from tests.browser.test_simulcast import JS_HD_CAMERA, listener
from tests.integration.serverproc import NO_GOVERNOR, ServerProcess, run_server
from tests.integration.test_metrics import scrape, value
from tests.integration.waiting import until

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

TOKEN = "admin-token-0123456789abcdef-0123456"

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
                         freezes: s.freezeCount || 0, packets: s.packetsReceived || 0,
                         bytes: s.bytesReceived || 0, width: s.frameWidth || 0,
                         lost: s.packetsLost || 0, at: performance.now()};
        });
        return found;
    });
}"""
"""Page function: counters of ``owner``'s video as received (or null)."""

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


async def rate(page: Page, owner: str, seconds: float) -> dict[str, Any]:
    """Frames, packets and bits per second of ``owner``'s video received over ``seconds``, with
    the counters at the end."""
    before = await page.evaluate(JS_RECEIVED, owner)
    await asyncio.sleep(seconds)
    after = await page.evaluate(JS_RECEIVED, owner)
    elapsed = (after["at"] - before["at"]) / 1000
    return after | {
        "fps": (after["frames"] - before["frames"]) / elapsed,
        "pps": (after["packets"] - before["packets"]) / elapsed,
        "kbps": (after["bytes"] - before["bytes"]) * 8 / elapsed / 1000,
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
    full frame rate; with the governor at level 1 about half of it (TID <= 1), at level 3 about
    a quarter (TID 0), back at level 0 all of it again: the video never stops (frames decoded
    rise in every second), no keyframe is decoded and none asked of the publisher throughout,
    and nothing freezes."""
    with run_server("--admin-token", TOKEN, *NO_GOVERNOR) as server:
        async with chromium(fake_ui=True) as browser:
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
                full = await rate(page, pub, 3)
                requests = value(scrape(server), "veche_keyframe_requests_total")
                seen = [full]
                for level in (1, 3, 0):
                    pin(server, level)
                    started = time.monotonic()
                    await asyncio.sleep(1)  # taken at the next sample, a quarter-second
                    seen.append(await rate(page, pub, 3))
                    print(f"level {level} after {time.monotonic() - started:.1f} s: {seen[-1]}")
                half, quarter, again = seen[1:]
                print(f"\nfull {full}")
                metrics = scrape(server)
                assert 0.35 < half["fps"] / full["fps"] < 0.65
                assert 0.15 < quarter["fps"] / full["fps"] < 0.35
                assert again["fps"] / full["fps"] > 0.8
                assert min(r["fps"] for r in seen) > 3  # moving in every window
                assert again["keyframes"] == full["keyframes"]
                assert again["freezes"] == full["freezes"]
                assert value(metrics, "veche_keyframe_requests_total") == requests
                assert value(metrics, "veche_frames_thinned_total") > 0
                assert [x["layer"] for x in server.participant("simul", me)["layers"]] == ["q"]
