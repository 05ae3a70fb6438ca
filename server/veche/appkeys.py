"""Typed keys for what :func:`veche.app.create_app` stores on the application."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry

from veche.cluster.membership import Cluster
from veche.cluster.pipes import PipeBroker
from veche.cluster.placement import Placement
from veche.cluster.relay import Relay
from veche.hub import Hub
from veche.settings import Settings

if TYPE_CHECKING:  # veche.metrics imports this module
    from veche.metrics import LoopMonitor

__all__ = [
    "CLUSTER",
    "HUB",
    "LOOP_MONITOR",
    "METRICS",
    "PIPES",
    "PLACEMENT",
    "RELAY",
    "SETTINGS",
    "WEB_ROOT",
]

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)
WEB_ROOT: web.AppKey[Path] = web.AppKey("web_root", Path)
CLUSTER: web.AppKey[Cluster] = web.AppKey("cluster", Cluster)
RELAY: web.AppKey[Relay] = web.AppKey("relay", Relay)
METRICS: web.AppKey[CollectorRegistry] = web.AppKey("metrics", CollectorRegistry)
LOOP_MONITOR: web.AppKey[LoopMonitor] = web.AppKey("loop_monitor")
PIPES: web.AppKey[list[PipeBroker]] = web.AppKey("pipes", list[PipeBroker])
"""This node's pipe broker while it runs (``pipes`` on), else empty."""
PLACEMENT: web.AppKey[list[Placement]] = web.AppKey("placement", list[Placement])
"""This node's media placement while it runs (``pipes`` on), else empty."""
