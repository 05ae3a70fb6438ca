"""``/metrics`` of a real server process, parsed with Prometheus' own text parser."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from veche import __version__
from veche.client import VecheClient

from .peers import MediaClient
from .serverproc import ServerProcess, run_server

pytestmark = pytest.mark.slow

TOKEN = "metrics-token-0123456789abcdef-0123"


def scrape(
    server: ServerProcess, token: str | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    request = urllib.request.Request(server.http + "/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def status(server: ServerProcess, token: str | None = None) -> int:
    request = urllib.request.Request(server.http + "/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_signalling_metrics_count_messages_and_errors() -> None:
    with run_server() as server:
        before = scrape(server)
        assert value(before, "veche_rooms") == 0
        (info,) = [dict(labels) for name, labels in before if name == "veche_info"]
        assert info["version"] == __version__
        assert info["node"] == server.health()["node"]
        assert value(before, "veche_info", **info) == 1
        client = await VecheClient.connect(server.ws)
        await client.join("metered", "Ada")
        await client.ws.send("{not json")
        await client.expect("error")
        await client.send({"type": "chat", "text": "x" * 3000})
        await client.expect("error")
        after = scrape(server)
        assert value(after, "veche_rooms") == 1
        assert value(after, "veche_participants") == 1
        assert value(after, "veche_connections") == 1
        assert value(after, "veche_signalling_messages_total", type="hello") == 1
        assert value(after, "veche_errors_total", code="bad_json") == 1
        assert value(after, "veche_errors_total", code="too_long") == 1
        assert value(after, "veche_bus_up") == 1
        await client.ws.close()
        assert server.terminate() == 0


async def test_access_is_limited_to_networks_or_the_token() -> None:
    with run_server("--metrics-networks", "10.0.0.0/8", "--metrics-token", TOKEN) as server:
        assert status(server) == 403
        assert status(server, "wrong-token-wrong-token-wrong-token-0") == 403
        assert status(server, TOKEN) == 200
        assert value(scrape(server, TOKEN), "veche_rooms") == 0
    with run_server() as server:
        assert status(server) == 200  # loopback is allowed by default


@pytest.mark.skipif(os.environ.get("VECHE_IN_NETNS") != "1", reason="media runs in the netns")
async def test_media_metrics_follow_a_call() -> None:
    """A call starts: participants, connected peer connections, tracks, packets and bytes
    forwarded and the forwarding delay rise; the call ends: they go back to zero."""
    with run_server() as server:
        peers = [await MediaClient.join(server.ws, "metered-call", name) for name in ("A", "B")]
        try:
            for peer in peers:
                await peer.publish()
            deadline = time.monotonic() + 20
            while True:
                first = scrape(server)
                if value(first, "veche_packets_forwarded_total") > 100:
                    break
                assert time.monotonic() < deadline, "nothing forwarded"
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)
            second = scrape(server)
            assert value(second, "veche_participants") == 2
            assert value(second, "veche_peer_connections", state="connected") == 4
            assert value(second, "veche_tracks", direction="published") == 4
            assert value(second, "veche_tracks", direction="subscribed") == 4
            assert value(second, "veche_packets_forwarded_total") > value(
                first, "veche_packets_forwarded_total"
            )
            assert value(second, "veche_bytes_forwarded_total") > value(
                first, "veche_bytes_forwarded_total"
            )
            assert value(second, "veche_forwarding_delay_seconds_count") > 0
            assert value(second, "veche_forwarding_delay_seconds_bucket", le="+Inf") == value(
                second, "veche_forwarding_delay_seconds_count"
            )
            assert ("veche_keyframe_requests_total", ()) in second  # none needed in this call
            assert ("veche_nacks_sent_total", ()) in second
            assert value(second, "veche_frames_thinned_total") == 0  # nothing governed
            assert value(second, "veche_event_loop_lag_max_seconds") < 1.0
            assert value(second, "veche_signalling_messages_total", type="offer") == 2
        finally:
            for peer in peers:
                await peer.close()
        deadline = time.monotonic() + 10
        while value(scrape(server), "veche_participants") or value(
            scrape(server), "veche_tracks", direction="published"
        ):
            assert time.monotonic() < deadline, "the call's metrics did not go back"
            await asyncio.sleep(0.2)
        assert server.terminate() == 0
