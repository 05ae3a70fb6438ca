"""Plain HTTP handlers: pages, redirects and health. URLs are in :mod:`veche.routes`."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Final
from urllib.parse import quote

from aiohttp import web

from veche import __version__
from veche.appkeys import CLUSTER, HUB, SETTINGS, WEB_ROOT
from veche.errors import InvalidRoomName
from veche.recordings import recording_file
from veche.rooms import generate_room_name, normalize_room_name

__all__ = [
    "SESSION_COOKIE",
    "browser_session",
    "healthz",
    "join_form",
    "landing",
    "new_meeting",
    "over_https",
    "room_page",
    "security_headers",
]

SESSION_COOKIE: Final = "veche_session"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
"""Only Veche's own origin, no inline script or style: nothing a page loads leaves the server."""


def _html(path: Path) -> web.FileResponse:
    return web.FileResponse(path, headers={"Content-Type": "text/html; charset=utf-8"})


def room_url(name: str) -> str:
    """The path of a room's page."""
    return "/r/" + quote(name, safe="-_.")


async def landing(request: web.Request) -> web.FileResponse:
    """``GET /``: start a new meeting or join one by name."""
    return _html(request.app[WEB_ROOT] / "index.html")


async def doctor(request: web.Request) -> web.FileResponse:
    """``GET /doctor``: the connectivity check, run from the user's browser."""
    return _html(request.app[WEB_ROOT] / "doctor.html")


async def new_meeting(request: web.Request) -> web.Response:
    """``GET /new``: redirect to a fresh, unguessable room."""
    raise web.HTTPSeeOther(room_url(generate_room_name()))


async def join_form(request: web.Request) -> web.Response:
    """``GET /join?room=NAME``: redirect to the room, or back to ``/`` with an error code."""
    try:
        name = normalize_room_name(request.query.get("room", "").strip())
    except InvalidRoomName:
        raise web.HTTPSeeOther("/?error=invalid_room") from None
    raise web.HTTPSeeOther(room_url(name))


async def room_page(request: web.Request) -> web.StreamResponse:
    """``GET /r/{room}``: the meeting page; a non-canonical name redirects to the canonical one."""
    raw = request.match_info["room"]
    try:
        name = normalize_room_name(raw)
    except InvalidRoomName:
        # The start page, in the visitor's language, saying what a meeting name may hold.
        response = _html(request.app[WEB_ROOT] / "index.html")
        response.set_status(404)
        return response
    if name != raw:
        target = room_url(name)
        if request.query_string:
            target += "?" + request.query_string
        raise web.HTTPPermanentRedirect(target)
    response = _html(request.app[WEB_ROOT] / "room.html")
    if not _valid_session(request.cookies.get(SESSION_COOKIE)):
        # Names this browser to the server (a moderator's removal holds for the session);
        # the WebSocket to the same origin carries it.
        response.set_cookie(
            SESSION_COOKIE,
            secrets.token_urlsafe(18),
            httponly=True,
            samesite="Strict",
            path="/",
            secure=over_https(request),
        )
    return response


def over_https(request: web.Request) -> bool:
    """Whether the page reached the browser over HTTPS: the server's own TLS, a trusted proxy's
    last X-Forwarded-Proto entry (trusted as its X-Forwarded-For is), or an https
    ``public_url``."""
    if request.secure:
        return True
    settings = request.app[SETTINGS]
    if settings.public_url is not None and settings.public_url.lower().startswith("https:"):
        return True
    if settings.trust_forwarded:
        proto = request.headers.get("X-Forwarded-Proto", "").rsplit(",", 1)[-1].strip()
        return proto.lower() == "https"
    return False


def _valid_session(value: str | None) -> bool:
    return value is not None and 16 <= len(value) <= 64 and value.isascii()


def browser_session(request: web.Request) -> str | None:
    """The browser session id the request carries, if it is well-formed."""
    value = request.cookies.get(SESSION_COOKIE)
    return value if _valid_session(value) else None


async def recording_download(request: web.Request) -> web.FileResponse:
    """``GET /recordings/{recording}/{file}?expires=&sig=``: one file of a recording, for
    whoever holds the link a moderator was given (see ``recording_ready``)."""
    directory = request.app[SETTINGS].recording_dir
    recording, name = request.match_info["recording"], request.match_info["file"]
    allowed = request.app[HUB].links.allows(
        f"/recordings/{recording}/{name}",
        request.query.get("expires", ""),
        request.query.get("sig", ""),
        now=time.time(),
    )
    path = recording_file(Path(directory), recording, name) if directory and allowed else None
    if path is None:
        raise web.HTTPNotFound(text="no such file, or the link has expired\n")
    return web.FileResponse(
        path, headers={"Content-Disposition": f'attachment; filename="{path.name}"'}
    )


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: liveness and a few counts, as JSON. ``status`` is ``degraded`` while
    the cluster's Redis cannot be reached (rooms running here go on; new cross-node joins fail),
    and the answer is still 200: the process itself is healthy."""
    hub = request.app[HUB]
    cluster = request.app[CLUSTER]
    return web.json_response(
        {
            "status": "ok" if cluster.healthy else "degraded",
            "version": __version__,
            "node": cluster.node_id,
            "bus": "ok" if cluster.healthy else "unavailable",
            "draining": cluster.draining,
            "rooms": len(hub.rooms),
            "participants": hub.rooms.participant_count,
            "connections": len(hub.sessions),
            "peer_connections": hub.media.peer_connection_count,
            "tasks": len(asyncio.all_tasks()),
        }
    )


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: security and cache headers on every response."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if request.path in ("/healthz", "/metrics") or request.path.startswith("/api/"):
        headers.setdefault("Cache-Control", "no-store")
    else:
        # Assets are not content-hashed: let browsers keep them but revalidate (ETag and
        # Last-Modified make that a 304), so an upgrade is never half-applied.
        headers.setdefault("Cache-Control", "no-cache")
