"""The admin API under ``/api/``: look at and act on this node's meetings.

Off unless ``admin_token`` is set (every ``/api/`` path is then 404); every call but the
OpenAPI description needs ``Authorization: Bearer <admin_token>`` (401 otherwise, the same for
a missing and a wrong token). With several nodes each node answers for the rooms it hosts.
``veche admin`` (see :mod:`veche.cli`) wraps it.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from veche import __version__
from veche.appkeys import CLUSTER, HUB, SETTINGS
from veche.auth import bearer_matches
from veche.errors import InvalidRoomName, Refused
from veche.ids import ParticipantId
from veche.media import MediaRooms
from veche.media.governor import MAX_LEVEL
from veche.recordings import recording_file
from veche.rooms import Room, normalize_room_name

__all__ = ["OPENAPI", "setup_admin_routes"]

_ROOM_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["name", "participants", "waiting", "settings", "created_at"],
    "properties": {
        "name": {"type": "string"},
        "created_at": {"type": "number", "description": "Unix time"},
        "waiting": {"type": "integer", "description": "people in the lobby"},
        "settings": {"type": "object"},
        "participants": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "name": {"type": "string"},
                    "role": {"type": "string", "enum": ["moderator", "participant"]},
                    "audio": {"type": "boolean"},
                    "video": {"type": "boolean"},
                    "screen": {"type": "boolean"},
                    "reconnecting": {"type": "boolean"},
                    "joined_at": {"type": "number"},
                    "receiving": {
                        "type": "object",
                        "description": "what it is sent now: audio and video tracks (a video "
                        "it does not show is not sent), and video and audio frames in all",
                        "properties": {
                            "audio": {"type": "integer"},
                            "video": {"type": "integer"},
                            "frames": {"type": "integer"},
                        },
                    },
                    "node": {
                        "type": "string",
                        "description": "the process (node id) its media runs on: the room's "
                        "own, or with pipes on the one its WebSocket reached",
                    },
                    "layers": {
                        "type": "array",
                        "description": "of each simulcast video it is sent, the layer: whose "
                        "video (from), its source, the layer's rid, picture width and measured "
                        "bitrate (bits per second)",
                        "items": {"type": "object"},
                    },
                },
            },
        },
    },
}
_ROOM_PARAMETER: Final = {
    "name": "room",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}
_GOVERNOR_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "level": {"type": "integer", "description": "0 nothing degraded, up to 3"},
        "pinned": {"type": ["integer", "null"], "description": "held at this level, if any"},
        "lag": {"type": "number", "description": "seconds"},
    },
}
_ERRORS: Final = {
    "401": {"description": "missing or wrong bearer token"},
    "404": {"description": "no such room (or participant) on this node"},
}

OPENAPI: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Veche admin API",
        "version": __version__,
        "description": "Meetings hosted by this node. Send `Authorization: Bearer <admin_token>`.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {"Room": _ROOM_SCHEMA},
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/rooms": {
            "get": {
                "summary": "List rooms and their participants",
                "responses": {
                    "200": {
                        "description": "the rooms",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "rooms": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Room"},
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "401": _ERRORS["401"],
                },
            }
        },
        "/api/rooms/{room}": {
            "parameters": [_ROOM_PARAMETER],
            "get": {
                "summary": "One room and its participants",
                "responses": {
                    "200": {
                        "description": "the room",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Room"}}
                        },
                    },
                    **_ERRORS,
                },
            },
            "delete": {
                "summary": "End the meeting for everyone (they get goodbye 'ended')",
                "responses": {"204": {"description": "ended"}, **_ERRORS},
            },
        },
        "/api/rooms/{room}/participants/{participant}": {
            "parameters": [
                _ROOM_PARAMETER,
                {
                    "name": "participant",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                },
            ],
            "delete": {
                "summary": "Remove a participant (goodbye 'removed'; its browser cannot return)",
                "responses": {"204": {"description": "removed"}, **_ERRORS},
            },
        },
        "/api/rooms/{room}/recording": {
            "parameters": [_ROOM_PARAMETER],
            "post": {
                "summary": "Start recording the room (everyone in it is told)",
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"audio_only": {"type": "boolean"}},
                            }
                        }
                    },
                },
                "responses": {
                    "201": {"description": "recording; the body names its folder"},
                    "501": {"description": "recording_dir is not set"},
                    **_ERRORS,
                },
            },
            "delete": {
                "summary": "Stop recording (the files are written in the background)",
                "responses": {"204": {"description": "stopped"}, **_ERRORS},
            },
        },
        "/api/recordings": {
            "get": {
                "summary": "List recordings with their manifests (null while being written)",
                "responses": {"200": {"description": "the recordings"}, "401": _ERRORS["401"]},
            }
        },
        "/api/recordings/{recording}/{file}": {
            "parameters": [
                {"name": "recording", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "file", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "get": {
                "summary": "Download a recorded file (a participant's video, or the manifest)",
                "responses": {"200": {"description": "the file"}, **_ERRORS},
            },
        },
        "/api/governor": {
            "get": {
                "summary": "The load governor: its level (0-3), the level it is pinned at, if "
                "any, and the event loop lag it saw last",
                "responses": {
                    "200": {
                        "description": "the governor",
                        "content": {"application/json": {"schema": _GOVERNOR_SCHEMA}},
                    },
                    "401": _ERRORS["401"],
                },
            },
            "put": {
                "summary": "Hold the governor at a level whatever the load (null: let the load "
                "decide again); it takes effect within a quarter of a second",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["level"],
                                "properties": {
                                    "level": {
                                        "type": ["integer", "null"],
                                        "minimum": 0,
                                        "maximum": 3,
                                    }
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "the governor",
                        "content": {"application/json": {"schema": _GOVERNOR_SCHEMA}},
                    },
                    "400": {"description": 'the body is not {"level": 0-3 or null}'},
                    "401": _ERRORS["401"],
                },
            },
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This description",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
    },
}


def _authorized(request: web.Request) -> None:
    token = request.app[SETTINGS].admin_token
    if token is None:
        raise web.HTTPNotFound()
    if not bearer_matches(request.headers.get("Authorization", ""), token.get_secret_value()):
        raise web.HTTPUnauthorized(
            text="a valid admin token is required\n", headers={"WWW-Authenticate": "Bearer"}
        )


def _room(request: web.Request) -> Room:
    try:
        name = normalize_room_name(request.match_info["room"])
    except InvalidRoomName:
        raise web.HTTPNotFound(text="no such room\n") from None
    room = request.app[HUB].rooms.get(name)
    if room is None:
        raise web.HTTPNotFound(text="no such room\n")
    return room


def _describe(room: Room, media: MediaRooms, node: str) -> dict[str, Any]:
    return {
        "name": room.name,
        "created_at": room.created_at,
        "waiting": len(room.waiting),
        "settings": room.settings.model_dump(),
        "participants": [
            p.info().model_dump(
                include={
                    "id",
                    "name",
                    "role",
                    "audio",
                    "video",
                    "screen",
                    "reconnecting",
                    "joined_at",
                }
            )
            | {
                "receiving": media.receiving(p.id),
                "layers": media.layers(p.id),
                "node": media.where(p.id) or node,
            }
            for p in room.participants
        ],
    }


async def list_rooms(request: web.Request) -> web.Response:
    _authorized(request)
    hub = request.app[HUB]
    rooms = [room for name in hub.rooms.names if (room := hub.rooms.get(name)) is not None]
    node = request.app[CLUSTER].node_id
    return web.json_response({"rooms": [_describe(room, hub.media, node) for room in rooms]})


async def get_room(request: web.Request) -> web.Response:
    _authorized(request)
    node = request.app[CLUSTER].node_id
    return web.json_response(_describe(_room(request), request.app[HUB].media, node))


async def close_room(request: web.Request) -> web.Response:
    _authorized(request)
    request.app[HUB].close_room(_room(request).name)
    return web.Response(status=204)


async def remove_participant(request: web.Request) -> web.Response:
    _authorized(request)
    room = _room(request)
    participant = ParticipantId(request.match_info["participant"])
    if not request.app[HUB].remove_participant(room.name, participant):
        raise web.HTTPNotFound(text="no such participant\n")
    return web.Response(status=204)


async def start_recording(request: web.Request) -> web.Response:
    _authorized(request)
    room = _room(request)
    audio_only = False
    if request.can_read_body:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="the body must be JSON\n") from None
        audio_only = bool(body.get("audio_only", False)) if isinstance(body, dict) else False
    try:
        directory = request.app[HUB].start_recording(room.name, audio_only=audio_only)
    except Refused as exc:
        raise web.HTTPNotImplemented(text=exc.message + "\n") from None
    return web.json_response({"recording": directory.name}, status=201)


async def stop_recording(request: web.Request) -> web.Response:
    _authorized(request)
    if not request.app[HUB].stop_recording(_room(request).name):
        raise web.HTTPNotFound(text="the room is not being recorded\n")
    return web.Response(status=204)


def _recordings_root(request: web.Request) -> Path:
    directory = request.app[SETTINGS].recording_dir
    if directory is None:
        raise web.HTTPNotFound(text="recording is not set up\n")
    return Path(directory).resolve()


async def list_recordings(request: web.Request) -> web.Response:
    _authorized(request)
    root = _recordings_root(request)
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir():
            continue
        manifest = None  # still being written
        with contextlib.suppress(OSError, ValueError):
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        found.append({"id": folder.name, "manifest": manifest})
    return web.json_response({"recordings": found})


async def download(request: web.Request) -> web.FileResponse:
    _authorized(request)
    root = _recordings_root(request)
    path = recording_file(root, request.match_info["recording"], request.match_info["file"])
    if path is None:
        raise web.HTTPNotFound(text="no such file\n")
    return web.FileResponse(path)


def _governor_state(request: web.Request) -> web.Response:
    governor = request.app[HUB].media.config.governor
    return web.json_response(
        {"level": governor.level, "pinned": governor.pinned, "lag": governor.lag}
    )


async def get_governor(request: web.Request) -> web.Response:
    _authorized(request)
    return _governor_state(request)


async def pin_governor(request: web.Request) -> web.Response:
    _authorized(request)
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="the body must be JSON\n") from None
    level = body.get("level", False) if isinstance(body, dict) else False
    if level is not None and (type(level) is not int or not 0 <= level <= MAX_LEVEL):
        raise web.HTTPBadRequest(text=f"level must be 0 to {MAX_LEVEL}, or null\n")
    request.app[HUB].media.config.governor.pin(level)
    return _governor_state(request)


async def openapi(request: web.Request) -> web.Response:
    if request.app[SETTINGS].admin_token is None:
        raise web.HTTPNotFound()
    return web.json_response(OPENAPI)


def setup_admin_routes(app: web.Application) -> None:
    """The ``/api/`` routes (they answer 404 while ``admin_token`` is unset)."""
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_get("/api/rooms", list_rooms)
    app.router.add_get("/api/rooms/{room}", get_room)
    app.router.add_delete("/api/rooms/{room}", close_room)
    app.router.add_delete("/api/rooms/{room}/participants/{participant}", remove_participant)
    app.router.add_post("/api/rooms/{room}/recording", start_recording)
    app.router.add_delete("/api/rooms/{room}/recording", stop_recording)
    app.router.add_get("/api/governor", get_governor)
    app.router.add_put("/api/governor", pin_governor)
    app.router.add_get("/api/recordings", list_recordings)
    app.router.add_get("/api/recordings/{recording}/{file}", download)
