"""Typed keys for what :func:`veche.app.create_app` stores on the application."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from veche.hub import Hub
from veche.settings import Settings

__all__ = ["HUB", "SETTINGS", "WEB_ROOT"]

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)
WEB_ROOT: web.AppKey[Path] = web.AppKey("web_root", Path)
