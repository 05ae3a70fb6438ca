"""``create_app(settings)``: the one place that wires Veche together."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final

from aiohttp import web

from veche.appkeys import (
    CLUSTER,
    HUB,
    LOOP_MONITOR,
    METRICS,
    PIPES,
    PLACEMENT,
    RELAY,
    SETTINGS,
    WEB_ROOT,
)
from veche.assets import web_root as default_web_root
from veche.cluster.bus import Bus, create_bus
from veche.cluster.membership import Cluster
from veche.cluster.pipes import PipeBroker, default_pipe_host
from veche.cluster.placement import Placement
from veche.cluster.relay import Relay
from veche.cluster.roomstate import BusStore
from veche.hub import Hub
from veche.ice import server_ice_servers
from veche.media import MediaConfig
from veche.media.governor import GovernorPolicy, LoadGovernor
from veche.media.pipe import PipeEndpoint
from veche.metrics import LoopMonitor, metrics_registry, monitor_loop
from veche.roomstore import NoStore, RoomStore, SqliteStore
from veche.routes import setup_routes
from veche.settings import Settings
from veche.tasks import cancel_and_wait, every
from veche.views import security_headers

__all__ = ["create_app"]

SHUTDOWN_WAIT: Final = 5.0
"""Seconds shutdown waits for client loops to send their 1001 close frames."""


def create_app(settings: Settings, *, web_root: Path | None = None) -> web.Application:
    """Build the application: routes, the hub, and the lifetimes of background work."""
    app = web.Application()
    root = web_root or default_web_root()
    app[SETTINGS] = settings
    bus = create_bus(settings)
    hub = app[HUB] = Hub(settings, media=media_config(settings), store=room_store(settings, bus))
    cluster = app[CLUSTER] = Cluster(
        bus,
        load=lambda: hub.rooms.participant_count,
        rooms=lambda: hub.rooms.names,
        media=lambda: hub.media.member_count,
        host=settings.host_id,
    )
    app[RELAY] = Relay(bus, cluster, hub)
    app[LOOP_MONITOR] = LoopMonitor()
    app[METRICS] = metrics_registry(app)
    app[WEB_ROOT] = root
    setup_routes(app, root, settings)
    app.on_response_prepare.append(security_headers)
    app.cleanup_ctx.append(_room_sweeper)
    app.cleanup_ctx.append(_credential_refresher)
    app.cleanup_ctx.append(_media)
    app.cleanup_ctx.append(_coordination)
    app[PIPES] = []
    app[PLACEMENT] = []
    if settings.pipes_on:
        app.cleanup_ctx.append(_pipes)
    app.cleanup_ctx.append(_room_state)
    app.cleanup_ctx.append(monitor_loop)
    app.on_shutdown.append(_close_clients)
    return app


def media_config(settings: Settings) -> MediaConfig:
    """What every peer connection of this server is configured with, from the settings."""
    return MediaConfig(
        ice_servers=lambda: server_ice_servers(settings, now=time.time()),
        relay_only=settings.ice_transport_policy == "relay",
        allow_local_candidates=settings.allow_local_candidates,
        max_candidates=settings.max_candidates,
        max_tracks=settings.max_tracks,
        max_pending_per_address=settings.max_pending_media_per_address,
        max_sdp=settings.max_sdp_length,
        max_members=settings.max_participants,
        connect_timeout=settings.media_connect_timeout,
        port_min=settings.media_port_min,
        port_max=settings.media_port_max,
        public_ip=settings.public_ip,
        video_codecs=tuple(settings.video_codecs),
        max_audio_streams=settings.max_audio_streams,
        governor=LoadGovernor(GovernorPolicy(threshold=settings.governor_lag)),
    )


def room_store(settings: Settings, bus: Bus) -> RoomStore:
    """Where rooms' lasting state is kept (``room_state``): Redis when nodes share one,
    else a SQLite file in ``data_dir``, or nowhere."""
    mode = settings.room_state
    if mode == "auto":
        mode = "redis" if settings.redis_url else "sqlite"
    if mode == "off":
        return NoStore()
    if mode == "redis":
        return BusStore(bus)
    return SqliteStore(Path(settings.data_dir))


async def _room_state(app: web.Application) -> AsyncIterator[None]:
    """The room store opens (a bad ``data_dir`` stops the start) and the rooms it kept come
    back; at the end what is queued is written before the bus closes."""
    hub = app[HUB]
    store = hub.keeper.store
    if isinstance(store, SqliteStore):
        await store.open()
    await hub.restore_all()
    yield
    await hub.keeper.close()


async def _room_sweeper(app: web.Application) -> AsyncIterator[None]:
    """Drop rooms that stay empty past the grace period, checking every few seconds."""
    interval = min(5.0, max(0.05, app[SETTINGS].empty_room_grace / 4))
    async with _every(interval, app[HUB].sweep, "room-sweeper"):
        yield


async def _credential_refresher(app: web.Application) -> AsyncIterator[None]:
    """With a ``turn_secret``, participants get fresh TURN credentials before theirs expire."""
    settings = app[SETTINGS]
    if settings.turn_secret is None:
        yield
        return
    interval = max(1.0, min(60.0, settings.turn_ttl / 8))
    async with _every(interval, app[HUB].refresh_credentials, "credential-refresher"):
        yield


@contextlib.asynccontextmanager
async def _every(interval: float, action: Callable[[], None], name: str) -> AsyncIterator[None]:
    """Call ``action`` every ``interval`` seconds while the block runs."""

    task = asyncio.create_task(every(interval, action, name), name=name)
    try:
        yield
    finally:
        await cancel_and_wait(task)


async def _media(app: web.Application) -> AsyncIterator[None]:
    """Every peer connection is closed (bounded in time), and recordings are written, before
    the process exits."""
    yield
    await app[HUB].media.close()
    await app[HUB].finish()


async def _coordination(app: web.Application) -> AsyncIterator[None]:
    """The bus, this node's heartbeat and room leases, and the relay, for the app's lifetime."""
    cluster, relay = app[CLUSTER], app[RELAY]
    await cluster.bus.start()
    await cluster.start()
    await relay.start()
    yield
    await relay.stop()
    await cluster.stop()
    await cluster.bus.close()


async def _pipes(app: web.Application) -> AsyncIterator[None]:
    """With pipes on (by default in a cluster): this node's pipe endpoint and broker, and
    media placed on the least-loaded process of the host each participant's WebSocket reached
    (see :mod:`veche.cluster.placement`)."""
    settings, hub, relay = app[SETTINGS], app[HUB], app[RELAY]
    host = settings.pipe_host or await default_pipe_host(settings.redis_url)
    endpoint = await PipeEndpoint.open(host, settings.pipe_port_min, settings.pipe_port_max)
    broker = PipeBroker(
        relay.node_id, hub.media, endpoint, relay.post, counters=hub.media.config.counters
    )
    placement = Placement(relay, hub, broker, threshold=settings.placement_threshold)
    relay.media = placement
    hub.media.elsewhere = placement
    app[PIPES].append(broker)
    app[PLACEMENT].append(placement)
    await broker.start()
    await placement.start()
    yield
    app[PIPES].clear()
    app[PLACEMENT].clear()
    relay.media = None
    hub.media.elsewhere = None
    await placement.stop()
    await broker.stop()


async def _close_clients(app: web.Application) -> None:
    """Take no new rooms, close every WebSocket with 1001 and wait (bounded) for their loops to
    finish: the clients reconnect, through any other node, and their rooms move there."""
    await app[CLUSTER].drain()
    hub = app[HUB]
    hub.shutdown()
    deadline = time.monotonic() + SHUTDOWN_WAIT
    while hub.sessions and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a set
        await asyncio.sleep(0.02)
