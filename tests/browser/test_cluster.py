"""Two Veche nodes over a real Redis, in Chromium: participants who reached different nodes
see and hear each other (signalling relayed to the room's node; with pipes, a cluster's
default, media on each one's node, or placed on another process of the host, and piped
between them; without, media straight to the room's node)."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import Browser, Page

from tests.browser.conftest import REMOTE_VIDEO_PLAYS, meeting_pages
from tests.integration.redisproc import REDIS_SERVER, run_redis
from tests.integration.serverproc import run_server
from tests.integration.test_pipes_cluster import metrics, total
from tests.integration.waiting import until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
]


async def test_participants_on_two_nodes_see_each_other(browser: Browser) -> None:
    """``VECHE_PIPES=false``: Chromium participants on two nodes see each other, the room and
    its media on one node."""
    off = {"VECHE_PIPES": "false"}
    with (
        run_redis() as redis,
        run_server("--redis-url", redis.url, env=off) as first,
        run_server("--redis-url", redis.url, env=off) as second,
    ):
        people = [(first.http, "Ada"), (second.http, "Bob")]
        async with meeting_pages(browser, "two-nodes", people) as pages:
            for page in pages:
                await page.wait_for_function(REMOTE_VIDEO_PLAYS, timeout=30000)
                assert await page.locator(".tile").count() == 2
            owners = [first.health()["participants"], second.health()["participants"]]
            assert sorted(owners) == [0, 2], "the room lives on one node"
            assert total(metrics(first), "veche_pipes") == 0


FRAMES_DECODED = """async () => {
    const pc = window.veche.connection?.subscribePc;
    let frames = 0;
    if (pc) (await pc.getStats()).forEach(s => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
    });
    return frames;
}"""


async def _frames_decoded(page: Page, least: int) -> bool:
    frames: int = await page.evaluate(FRAMES_DECODED)
    return frames > least


async def test_with_pipes_each_browser_media_stays_on_its_node(browser: Browser) -> None:
    """No pipe setting: Chromium participants on two nodes see each other, each one's media on
    the node its page reached, the tracks crossing once over the pipe (SRTP, never refused)."""
    with (
        run_redis() as redis,
        run_server("--redis-url", redis.url) as first,
        run_server("--redis-url", redis.url) as second,
    ):
        people = [(first.http, "Ada"), (second.http, "Bob")]
        async with meeting_pages(browser, "two-nodes-piped", people) as pages:
            for page in pages:
                await page.wait_for_function(REMOTE_VIDEO_PLAYS, timeout=30000)
                assert await page.locator(".tile").count() == 2
            for page in pages:  # the picture keeps coming, not only a first keyframe
                await until(lambda p=page: _frames_decoded(p, 30), timeout=20)
            for node in (first, second):
                values = metrics(node)
                assert total(values, "veche_pipes") == 1
                # Each node receives the other's camera and microphone once.
                assert sum(v for k, v in values.items() if 'direction="in"' in k) == 2
                assert total(values, "veche_pipe_packets_received_total") > 50
                assert total(values, "veche_pipe_rejected_total") == 0
                # And forwards them to its own participant.
                assert total(values, "veche_packets_forwarded_total") > 50


async def test_a_browser_whose_media_is_placed_on_another_process_gets_a_picture(
    browser: Browser,
) -> None:
    """Two nodes of one host (``--host-id``), every page connected to the first, the placement
    threshold at 0 (each participant's media goes to the least-loaded process): the second
    node, which holds no WebSocket, runs some of the pages' media, and every page, those
    included, decodes the others' video."""
    host = ("--pipes", "--host-id", "one-host", "--placement-threshold", "0")
    with (
        run_redis() as redis,
        run_server("--redis-url", redis.url, *host) as first,
        run_server("--redis-url", redis.url, *host) as second,
    ):
        await asyncio.sleep(3)  # both heartbeats read: the first node knows the second's load
        people = [(first.http, name) for name in ("Ada", "Bob", "Cy")]
        async with meeting_pages(browser, "placed", people) as pages:
            for page in pages:
                await page.wait_for_function(REMOTE_VIDEO_PLAYS, timeout=30000)
            for page in pages:
                await until(lambda p=page: _frames_decoded(p, 30), timeout=20)
            placed = metrics(second)
            assert total(placed, "veche_media_participants") >= 1
            assert total(metrics(first), "veche_media_participants") >= 1
            # The second node sends its pages what it receives over the pipe.
            assert total(placed, "veche_pipe_packets_received_total") > 50
            assert total(placed, "veche_packets_forwarded_total") > 50
            assert total(placed, "veche_pipe_rejected_total") == 0
