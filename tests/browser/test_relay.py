"""A call forced through a real coturn: browsers and the server use relay candidates only."""

from __future__ import annotations

import asyncio
import re
import shutil
import time

import pytest
from playwright.async_api import Browser

from tests.browser.conftest import REMOTE_VIDEO_PLAYS, meeting_pages
from tests.integration.serverproc import run_server
from tests.integration.test_turn import SECRET, coturn

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(shutil.which("turnserver") is None, reason="coturn is not installed"),
]

JS_RELAYED = """async () => {
    const pc = window.veche.connection?.subscribePc;
    if (!pc) return null;
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach(s => {
        if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
    });
    if (!pair) return null;
    return stats.get(pair.localCandidateId).candidateType;
}"""


JS_TURN_USER = """() => {
    const pc = window.veche.connection.subscribePc;
    return pc.getConfiguration().iceServers.find(s => s.username)?.username ?? null;
}"""
"""Page function: the TURN user name the subscribe connection is configured with now."""


async def test_relay_only_call_flows_through_coturn(browser: Browser) -> None:
    """With ice_transport_policy=relay, two browsers and the server connect through TURN
    (credentials from the server's secret) and video plays; before their credentials expire
    (``turn_ttl`` 10 s here) the browsers' connections get fresh ones and video goes on; when
    they leave, the server releases its TURN allocations."""
    turn_args = (
        "-c",
        "/dev/null",  # not Debian's /etc/turnserver.conf, which logs to syslog
        "--no-cli",
        "--allow-loopback-peers",
        "--use-auth-secret",
        "--realm=veche.test",
        "--log-file=stdout",
        "--simple-log",
        "--verbose",
    )
    with (
        coturn(*turn_args) as turn,
        run_server(
            "--ice-servers",
            f"turn:127.0.0.1:{turn.port}?transport=udp",
            "--turn-secret",
            SECRET,
            "--ice-transport-policy",
            "relay",
            # The relay candidates of this one-host test are on loopback.
            "--allow-local-candidates",
            "--turn-ttl",
            "10",
        ) as server,
    ):
        people = [(server.http, "Ada"), (server.http, "Bob")]
        async with meeting_pages(browser, "relayed", people) as pages:
            for page in pages:
                await page.wait_for_function(REMOTE_VIDEO_PLAYS, timeout=30000)
                assert await page.evaluate(JS_RELAYED) == "relay"
                welcome_policy = await page.evaluate(
                    "() => window.veche.connection.iceTransportPolicy"
                )
                assert welcome_policy == "relay"
            first = await pages[0].evaluate(JS_TURN_USER)
            await pages[0].wait_for_function(
                f"() => ({JS_TURN_USER})() !== {first!r}", timeout=15000
            )
            renewed = await pages[0].evaluate(JS_TURN_USER)
            assert int(renewed.split(":")[0]) > int(first.split(":")[0])
            for page in pages:
                await page.wait_for_function(REMOTE_VIDEO_PLAYS, timeout=10000)
        assert SECRET not in server.output()
        # When the participants are gone, the server releases each of its TURN allocations.
        deadline = time.monotonic() + 10
        while True:
            made, released = _server_allocations(turn.output())
            if made and made == released:
                break
            assert time.monotonic() < deadline, f"allocations {made}, released {released}"
            await asyncio.sleep(0.2)


def _server_allocations(log: str) -> tuple[set[str], set[str]]:
    """coturn sessions the server allocated, and those it released (refresh to lifetime 0)."""
    made, released = set(), set()
    for line in log.splitlines():
        found = re.search(
            r"session (\d+): (new|refreshed), .*:veche-server-\w+>, lifetime=(\d+)", line
        )
        if found and found[2] == "new":
            made.add(found[1])
        elif found and found[3] == "0":
            released.add(found[1])
    return made, released
