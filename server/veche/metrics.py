"""``GET /metrics``: the server's state and totals in the Prometheus text format.

Everything is read when Prometheus scrapes (one collector walks the hub, the media router and
the loop monitor), so the forwarding path only adds to plain integers. Access: a client in
``metrics_networks`` (loopback by default), or a bearer ``metrics_token``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator, Iterator
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from veche import __version__
from veche.appkeys import CLUSTER, HUB, LOOP_MONITOR, METRICS, PIPES, PLACEMENT, SETTINGS
from veche.auth import bearer_matches
from veche.hub import Hub
from veche.media.counters import DELAY_BUCKETS
from veche.settings import Settings
from veche.tasks import cancel_and_wait

__all__ = ["LoopMonitor", "metrics_handler", "metrics_registry", "monitor_loop"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


class LoopMonitor:
    """How late the event loop runs a timer: a busy loop delays every client."""

    INTERVAL: Final = 0.25

    def __init__(self) -> None:
        self.last = 0.0
        self.worst = 0.0

    async def run(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(self.INTERVAL)
            lag = max(0.0, time.monotonic() - start - self.INTERVAL)
            self.last, self.worst = lag, max(self.worst, lag)


async def monitor_loop(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: run the loop monitor for the app's lifetime."""
    task = asyncio.create_task(app[LOOP_MONITOR].run(), name="loop-monitor")
    yield
    await cancel_and_wait(task)


class VecheCollector(Collector):
    """Reads the live state of one app."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        hub: Hub = self._app[HUB]
        cluster = self._app[CLUSTER]
        monitor = self._app[LOOP_MONITOR]
        info = GaugeMetricFamily("veche_info", "Version and node id.", labels=["version", "node"])
        info.add_metric([__version__, cluster.node_id], 1)
        yield info
        yield GaugeMetricFamily("veche_rooms", "Rooms on this node.", value=len(hub.rooms))
        yield GaugeMetricFamily(
            "veche_participants",
            "Participants in this node's rooms (reconnecting ones included).",
            value=hub.rooms.participant_count,
        )
        yield GaugeMetricFamily(
            "veche_connections", "Open signalling connections.", value=len(hub.sessions)
        )
        yield GaugeMetricFamily(
            "veche_bus_up",
            "1 while the cluster's Redis answers (always 1 alone).",
            value=1 if cluster.healthy else 0,
        )
        states = GaugeMetricFamily(
            "veche_peer_connections", "Peer connections by state.", labels=["state"]
        )
        counts: dict[str, int] = {}
        uptracks = downtracks = 0
        for peer in hub.media.peers:
            for pc in (peer.publish_pc, peer.subscribe_pc):
                if pc is not None:
                    counts[pc.connectionState] = counts.get(pc.connectionState, 0) + 1
            uptracks += len(peer.uptracks)
            downtracks += sum(len(u.downtracks) for u in peer.uptracks)
        for state in ("new", "connecting", "connected", "disconnected", "failed", "closed"):
            states.add_metric([state], counts.get(state, 0))
        yield states
        tracks = GaugeMetricFamily("veche_tracks", "Forwarded tracks.", labels=["direction"])
        tracks.add_metric(["published"], uptracks)
        tracks.add_metric(["subscribed"], downtracks)
        yield tracks

        media = hub.media.config.counters
        yield CounterMetricFamily(
            "veche_packets_forwarded",
            "RTP packets sent to subscribers.",
            value=media.packets_forwarded,
        )
        yield CounterMetricFamily(
            "veche_bytes_forwarded",
            "RTP payload bytes sent to subscribers.",
            value=media.bytes_forwarded,
        )
        yield CounterMetricFamily(
            "veche_keyframe_requests",
            "Keyframe requests (PLI) sent to publishers.",
            value=media.keyframe_requests,
        )
        yield CounterMetricFamily(
            "veche_nacks_sent",
            "NACKs sent to publishers for lost packets.",
            value=media.nacks_sent,
        )
        yield CounterMetricFamily(
            "veche_frames_thinned",
            "Video frames of a temporal layer left out for a viewer, to lower its frame rate "
            "(the load governor), counted per viewer.",
            value=media.frames_thinned,
        )
        delay = media.forwarding_delay
        buckets, running = [], 0
        for bound, count in zip((*DELAY_BUCKETS, float("inf")), delay.counts, strict=True):
            running += count
            buckets.append((str(bound) if bound != float("inf") else "+Inf", running))
        yield HistogramMetricFamily(
            "veche_forwarding_delay_seconds",
            "From the packet completing a frame arriving to the frame sent to every subscriber.",
            buckets=buckets,
            sum_value=delay.total,
        )

        governor = hub.media.config.governor
        yield GaugeMetricFamily(
            "veche_governor_level",
            "Load governor level: 0 nothing degraded, up to 3 the least important videos at "
            "their lowest.",
            value=governor.level,
        )
        yield CounterMetricFamily(
            "veche_governor_engagements",
            "Times the load governor started degrading video.",
            value=governor.engagements,
        )
        yield GaugeMetricFamily(
            "veche_governor_lag_seconds",
            "The event loop lag the load governor saw last.",
            value=governor.lag,
        )
        yield CounterMetricFamily(
            "veche_udp_receive_drops",
            "Datagrams the kernel dropped from the media sockets, not read in time (Linux).",
            value=governor.dropped,
        )
        yield GaugeMetricFamily(
            "veche_udp_receive_queue_bytes",
            "Bytes waiting in the media sockets' receive buffers at the last look (Linux).",
            value=governor.queued,
        )

        messages = CounterMetricFamily(
            "veche_signalling_messages", "Client messages handled, by type.", labels=["type"]
        )
        for kind, count in sorted(hub.stats.messages.items()):
            messages.add_metric([kind], count)
        yield messages
        errors = CounterMetricFamily("veche_errors", "Error replies, by code.", labels=["code"])
        for code, count in sorted(hub.stats.errors.items()):
            errors.add_metric([code], count)
        yield errors
        yield CounterMetricFamily(
            "veche_turn_credentials_issued",
            "TURN credentials handed out.",
            value=hub.stats.turn_credentials,
        )
        yield GaugeMetricFamily(
            "veche_event_loop_lag_seconds",
            "How late the event loop ran its last check.",
            value=monitor.last,
        )
        yield GaugeMetricFamily(
            "veche_event_loop_lag_max_seconds",
            "The worst event loop lag since start.",
            value=monitor.worst,
        )
        yield from self._pipes()
        yield from self._placement()

    def _placement(self) -> Iterator[Metric]:
        """This process's load as its heartbeat publishes it, and where the rooms it owns
        placed their participants' media (``pipes`` on; see :mod:`veche.cluster.placement`)."""
        cluster = self._app[CLUSTER]
        yield GaugeMetricFamily(
            "veche_load",
            "Share of the CPU this process may use that it used lately (smoothed).",
            value=cluster.meter.load,
        )
        yield GaugeMetricFamily(
            "veche_media_participants",
            "Participants whose media runs in this process (guests included).",
            value=self._app[HUB].media.member_count,
        )
        placements = CounterMetricFamily(
            "veche_placements",
            "Participants' media placed by the rooms of this process, by the process chosen.",
            labels=["node"],
        )
        passed = CounterMetricFamily(
            "veche_media_frames_passed",
            "Clients' media frames passed on to the process running their media, by who passed "
            "them: edge (this process holds the WebSocket) or owner (this process owns the room).",
            labels=["by"],
        )
        for placement in self._app[PLACEMENT]:
            for node, count in placement.placements.items():
                placements.add_metric([node], count)
            for by, count in placement.passed_on.items():
                passed.add_metric([by], count)
        yield placements
        yield passed

    def _pipes(self) -> Iterator[Metric]:
        """Pipes to other nodes (``pipes`` on): one series per other node."""
        brokers = self._app[PIPES]
        links = brokers[0].links if brokers else {}
        yield GaugeMetricFamily("veche_pipes", "Pipes up to other nodes.", value=len(links))
        tracks = GaugeMetricFamily(
            "veche_pipe_tracks",
            "Tracks piped, by other node and direction (out: published here).",
            labels=["peer", "direction"],
        )
        for node, link in links.items():
            tracks.add_metric([node, "out"], len(link.outgoing))
            tracks.add_metric([node, "in"], len(link.incoming))
        yield tracks
        for name, help_text, field in (
            ("packets_sent", "SRTP packets sent over the pipe, by other node.", "packets_sent"),
            ("bytes_sent", "Bytes sent over the pipe, by other node.", "bytes_sent"),
            ("packets_received", "RTP packets received over the pipe.", "packets_received"),
            ("bytes_received", "Bytes received over the pipe.", "bytes_received"),
            ("packets_lost", "Sequence numbers skipped on the pipe.", "packets_lost"),
            ("rejected", "Datagrams that failed SRTP authentication.", "rejected"),
            (
                "keyframe_requests",
                "Keyframe requests sent back over the pipe.",
                "keyframe_requests_sent",
            ),
            (
                "keyframe_requests_received",
                "Keyframe requests that came over the pipe for tracks published here.",
                "keyframe_requests_received",
            ),
            ("stalls", "Times the pipe went silent for 1.5 s (and was keyed afresh).", "stalls"),
            (
                "stalled_seconds",
                "Silence on the pipe in its stalls (counted when it carries again).",
                "stalled_seconds",
            ),
        ):
            family = CounterMetricFamily(f"veche_pipe_{name}", help_text, labels=["peer"])
            for node, link in links.items():
                family.add_metric([node], getattr(link.stats, field))
            yield family
        stalled = GaugeMetricFamily(
            "veche_pipe_stalled",
            "1 while nothing comes over the pipe, by other node.",
            labels=["peer"],
        )
        for node, link in links.items():
            stalled.add_metric([node], 1.0 if link.stalled else 0.0)
        yield stalled


def _allowed(request: web.Request, settings: Settings) -> bool:
    token = settings.metrics_token
    header = request.headers.get("Authorization", "")
    if token is not None and header.startswith("Bearer "):
        return bearer_matches(header, token.get_secret_value())
    try:
        address = ipaddress.ip_address(request.remote or "")
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net) for net in settings.metrics_networks)


def metrics_registry(app: web.Application) -> CollectorRegistry:
    """A registry of this app's metrics only (several apps may share a process in tests)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(VecheCollector(app))
    return registry


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: 403 unless the client may read them."""
    if not _allowed(request, request.app[SETTINGS]):
        raise web.HTTPForbidden(text="metrics are not available to you\n")
    body = generate_latest(request.app[METRICS])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
