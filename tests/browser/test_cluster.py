"""Two Veche nodes over a real Redis, in Chromium: participants who reached different nodes
see and hear each other (signalling relayed to the room's node, media straight to it)."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser

from tests.browser.conftest import REMOTE_VIDEO_PLAYS, meeting_pages
from tests.integration.redisproc import REDIS_SERVER, run_redis
from tests.integration.serverproc import run_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
]


async def test_participants_on_two_nodes_see_each_other(browser: Browser) -> None:
    with (
        run_redis() as redis,
        run_server("--redis-url", redis.url) as first,
        run_server("--redis-url", redis.url) as second,
    ):
        people = [(first.http, "Ada"), (second.http, "Bob")]
        async with meeting_pages(browser, "two-nodes", people) as pages:
            for page in pages:
                await page.wait_for_function(REMOTE_VIDEO_PLAYS, timeout=30000)
                assert await page.locator(".tile").count() == 2
            owners = [first.health()["participants"], second.health()["participants"]]
            assert sorted(owners) == [0, 2], "the room lives on one node"
