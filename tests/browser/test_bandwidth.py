"""A viewer's own bandwidth decides its simulcast layer: a Chromium viewer behind a link cut to
300 kbit/s is moved down to the low layer and keeps decoding, and climbs back once the link
recovers, while an unconstrained viewer in the same room is never moved down by that policy.

The constrained viewer's browser runs in a network namespace of its own; its link is shaped
with a token bucket on the test's side of the veth pair. The publisher captures 1280x720, which
Chromium sends in three layers (320, 640 and 1280 wide).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import Page

from tests.browser.conftest import chromium
from tests.browser.netguest import Guest, guest_namespace
from tests.browser.test_simulcast import JS_HD_CAMERA, JS_VIDEO, listener
from tests.integration.serverproc import NO_GOVERNOR, ServerProcess, run_server
from tests.integration.waiting import until

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

TOKEN = "admin-token-0123456789abcdef-0123456"
ROOM = "narrow"

JS_WATCH = """(owner) => {
    const pc = window.veche.connection.subscribePc;
    const video = document.querySelector(`.tile[data-participant-id="${owner}"] video`);
    const track = video.srcObject.getVideoTracks()[0];
    const w = window.__watch = {frames: 0, last: performance.now(), gap: 0, minWidth: 1e9,
                                freezes: 0, frozen: 0, ticks: 0};
    setInterval(async () => {
        (await pc.getStats()).forEach(s => {
            if (s.type !== 'inbound-rtp' || s.trackIdentifier !== track.id) return;
            const now = performance.now();
            if (s.framesDecoded > w.frames) {
                w.gap = Math.max(w.gap, now - w.last);
                w.frames = s.framesDecoded;
                w.last = now;
            }
            if (s.frameWidth) w.minWidth = Math.min(w.minWidth, s.frameWidth);
            w.freezes = s.freezeCount || 0;
            w.frozen = s.totalFreezesDuration || 0;
        });
        w.ticks += 1;
    }, 100);
}"""
"""Page function: every 0.1 s, note the frames decoded of ``owner``'s video, the longest time
without a new one, the smallest picture width and Chromium's own freeze counters."""

JS_KEEP_SIZES = """() => Promise.all(window.veche.connection.publishPc.getSenders()
    .filter(s => s.track?.kind === 'video').map(s => {
        const p = s.getParameters();
        p.degradationPreference = 'maintain-resolution';
        return s.setParameters(p);
    }))"""
"""Page function: a publisher short of CPU lowers its frame rate rather than stop its top layer
(the test is about the viewers' links, not the publisher's CPU on shared cores)."""

JS_WATCHED = """(reset) => {
    const w = window.__watch;
    const out = {frames: w.frames, gap: Math.max(w.gap, performance.now() - w.last),
                 minWidth: w.minWidth, freezes: w.freezes, frozen: w.frozen};
    if (reset) { w.gap = 0; w.minWidth = 1e9; }
    return out;
}"""
"""Page function: what the watch saw since the last reset (and reset it if asked)."""


@pytest.fixture(scope="module")
def guest() -> Iterator[Guest]:
    if shutil.which("tc") is None:
        pytest.skip("tc is not installed (iproute2)")
    with guest_namespace("10.97.0") as made:
        yield made


def _bandwidth_log(server: ServerProcess) -> list[str]:
    lines = [
        line
        for line in server.output().splitlines()
        if "viewer bandwidth" in line or "simulcast layers" in line
    ]
    out = []
    for line in lines:
        try:
            record: dict[str, Any] = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        out.append(
            f"{record.get('participant')}: limit {record.get('limit')} "
            f"estimate {record.get('estimate')} sending {record.get('sending')}"
        )
    return out


async def _width(page: Page, owner: str, check: Any, seconds: float) -> tuple[float, int]:
    """Seconds until the decoded width of ``owner``'s video satisfies ``check``, and the width."""
    seen = {"width": 0}

    async def ok() -> bool:
        video = await page.evaluate(JS_VIDEO, owner)
        if video is None:
            return False
        seen["width"] = video["width"]
        return bool(check(video["width"]))

    took = await until(ok, timeout=seconds, step=0.1)
    return took, seen["width"]


async def _steady(pages: tuple[Page, ...], seconds: float = 2.0, within: float = 30.0) -> None:
    """Wait until every page decodes without a gap above 400 ms for ``seconds`` (the watches
    are left reset). The first browser test of a run meets a cold machine: its publisher was
    seen stalling for 1.4 s for every viewer, the unconstrained one included, which the cut
    would then be blamed for."""
    deadline = time.monotonic() + within
    while True:
        for page in pages:
            await page.evaluate(JS_WATCHED, True)
        await asyncio.sleep(seconds)
        gaps = [(await page.evaluate(JS_WATCHED, False))["gap"] for page in pages]
        if max(gaps) <= 400:
            for page in pages:
                await page.evaluate(JS_WATCHED, True)
            return
        assert time.monotonic() < deadline, f"the call never decoded steadily: gaps {gaps} ms"


async def test_a_viewer_whose_link_drops_gets_the_low_layer_and_climbs_back(
    guest: Guest,
) -> None:
    """Both viewers show the publisher's tile large and decode the top layer; the narrow
    viewer's link is cut to 300 kbit/s: within 3 s it decodes the low layer, never more than
    1 s without a new frame; when the link recovers it climbs back above the low layer; the
    wide viewer gets no bandwidth limit and never the low layer."""
    with run_server("--host", "0.0.0.0", "--admin-token", TOKEN, *NO_GOVERNOR) as server:
        try:
            await _meeting(guest, server)
        finally:
            print("\n" + "\n".join(_bandwidth_log(server)))


async def _meeting(guest: Guest, server: ServerProcess) -> None:
    """The meeting of :func:`test_a_viewer_whose_link_drops_gets_the_low_layer_and_climbs_back`."""
    guest_origin = f"http://{guest.host_address}:{server.port}"
    async with (
        chromium() as browser,
        chromium(
            executable=str(guest.launcher),
            extra_args=(f"--unsafely-treat-insecure-origin-as-secure={guest_origin}",),
        ) as far,
    ):
        context = await browser.new_context(
            permissions=["camera", "microphone"], base_url=server.http
        )
        await context.add_init_script(JS_HD_CAMERA)
        publisher = await context.new_page()
        await publisher.goto(f"/r/{ROOM}?name=Pub&join=1&lang=en")
        await publisher.wait_for_function(
            "() => window.veche?.connection?.publishPc?.connectionState === 'connected'",
            timeout=30_000,
        )
        pub = await publisher.evaluate("() => window.veche.connection.participantId")
        await publisher.evaluate(JS_KEEP_SIZES)
        wide = await listener(browser, server.http, "Wide", pub, 1200, ROOM)
        narrow = await listener(far, guest_origin, "Narrow", pub, 1200, ROOM)
        _, high = await _width(wide, pub, lambda w: w > 640, 30)
        await _width(narrow, pub, lambda w: w > 640, 30)
        for page in (wide, narrow):
            await page.evaluate(JS_WATCH, pub)
            await until(lambda p=page: p.evaluate("() => window.__watch.ticks > 1"), 5)
        await _steady((wide, narrow))
        for attempt in (1, 2):
            try:
                before = await narrow.evaluate(JS_WATCHED, False)
                guest.shape("300kbit")
                cut_at = time.monotonic()
                down, low = await _width(narrow, pub, lambda w: 0 < w <= 400, 3)
                # While the link stays narrow the picture moves, at the low layer but for
                # the odd probe of a higher one (undone as the link fills).
                widths = []
                while time.monotonic() - cut_at < 12:
                    video = await narrow.evaluate(JS_VIDEO, pub)
                    widths.append(video["width"])
                    await asyncio.sleep(0.2)
                during = await narrow.evaluate(JS_WATCHED, True)
                reference = await wide.evaluate(JS_WATCHED, False)
                guest.unshape()
                up, climbed = await _width(narrow, pub, lambda w, low=low: w > low, 30)
            finally:
                guest.unshape()
            if reference["gap"] <= 400 or attempt == 2:
                break
            # The unconstrained viewer stalled too: the publisher (a Chromium on two shared
            # cores) did, not the link; the cut is measured again once the call is steady.
            print(f"\nboth viewers stalled ({reference['gap']:.0f} ms): measuring again")
            await _steady((wide, narrow))
        after = await narrow.evaluate(JS_WATCHED, False)
        unconstrained = await wide.evaluate(JS_WATCHED, False)
        print(
            f"\nnarrow viewer: {high} px; cut to 300 kbit/s: {low} px after {down:.2f} s; "
            f"longest stall {during['gap']:.0f} ms, freezes "
            f"{during['freezes'] - before['freezes']} "
            f"({during['frozen'] - before['frozen']:.2f} s); back up to {climbed} px "
            f"{up:.2f} s after the link recovered"
        )
        low_share = sum(w <= 400 for w in widths) / len(widths)
        print(f"at the low layer {low_share:.0%} of the narrow time")
        print(
            f"wide viewer: narrowest {unconstrained['minWidth']} px, longest stall "
            f"{unconstrained['gap']:.0f} ms"
        )
        assert during["frames"] > before["frames"] + 30
        assert during["gap"] <= 1000
        assert low_share >= 0.8
        assert after["frames"] > during["frames"]
        # The unconstrained viewer is never moved down by its bandwidth: no budget is ever set
        # for it, and it never falls to the low layer (it follows the publisher's top layer,
        # which a loaded Chromium may itself stop sending for a while).
        wide_id = await wide.evaluate("() => window.veche.connection.participantId")
        assert f"viewer bandwidth participant={wide_id}" not in server.output()
        assert unconstrained["minWidth"] > low
