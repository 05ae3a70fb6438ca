"""Every URL the server answers, in one table."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from veche import views
from veche.admin import setup_admin_routes
from veche.metrics import metrics_handler
from veche.settings import Settings
from veche.signalling import websocket_handler
from veche.signin import setup_signin

__all__ = ["setup_routes"]


def setup_routes(app: web.Application, web_root: Path, settings: Settings) -> None:
    """Add Veche's routes to ``app``; static files come from ``web_root``; sign-in's
    (``/auth/...``) as ``settings`` say."""
    app.router.add_get("/", views.landing, name="landing")
    app.router.add_get("/new", views.new_meeting, name="new")
    app.router.add_get("/join", views.join_form, name="join")
    app.router.add_get("/r/{room}", views.room_page, name="room")
    app.router.add_get("/doctor", views.doctor, name="doctor")
    app.router.add_get("/recordings/{recording}/{file}", views.recording_download, name="recording")
    app.router.add_get("/healthz", views.healthz, name="healthz")
    app.router.add_get("/metrics", metrics_handler, name="metrics")
    app.router.add_get("/ws", websocket_handler, name="ws")
    setup_signin(app, settings)
    setup_admin_routes(app)
    app.router.add_static("/static", web_root, name="static", follow_symlinks=False)
