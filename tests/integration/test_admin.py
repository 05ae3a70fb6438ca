"""The admin API and ``veche admin``: each endpoint, the token required, a wrong one refused."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest

from veche.admin import OPENAPI
from veche.app import create_app
from veche.client import VecheClient
from veche.protocol import Goodbye, ParticipantLeft

from .serverproc import run_server

TOKEN = "admin-token-0123456789abcdef-0123456"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def api(aiohttp_client: Any, make_settings: Any) -> Any:
    return await aiohttp_client(create_app(make_settings(admin_token=TOKEN)))


async def _join(
    api: Any, room: str, name: str, cookie: str | None = None
) -> tuple[VecheClient, str]:
    client = await VecheClient.connect(f"ws://{api.host}:{api.port}/ws", cookie=cookie)
    welcome = await client.join(room, name)
    return client, welcome.participant_id


async def test_the_api_is_off_without_a_token(aiohttp_client: Any, make_settings: Any) -> None:
    client = await aiohttp_client(create_app(make_settings()))
    for path in ("/api/rooms", "/api/openapi.json", "/api/rooms/x"):
        assert (await client.get(path, headers=AUTH)).status == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/rooms"),
        ("GET", "/api/rooms/team"),
        ("DELETE", "/api/rooms/team"),
        ("DELETE", "/api/rooms/team/participants/p-x"),
        ("POST", "/api/rooms/team/recording"),
        ("DELETE", "/api/rooms/team/recording"),
        ("GET", "/api/recordings"),
        ("GET", "/api/recordings/x/manifest.json"),
        ("GET", "/api/governor"),
        ("PUT", "/api/governor"),
    ],
)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer "])
async def test_every_endpoint_needs_the_token(
    api: Any, method: str, path: str, header: str | None
) -> None:
    ada, _ = await _join(api, "team", "Ada")
    headers = {"Authorization": header} if header else {}
    response = await api.request(method, path, headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert TOKEN not in await response.text()
    # Nothing happened to the meeting.
    await ada.send({"type": "ping", "id": "alive"})
    assert (await ada.expect("pong")).type == "pong"
    await ada.ws.close()


async def test_list_and_read_rooms(api: Any) -> None:
    ada, ada_id = await _join(api, "Team", "Ada")
    bob, _ = await _join(api, "team", "Bob")
    await _join(api, "other", "Cyd")
    listed = await (await api.get("/api/rooms", headers=AUTH)).json()
    by_name = {room["name"]: room for room in listed["rooms"]}
    assert set(by_name) == {"team", "other"}
    team = by_name["team"]
    assert [p["name"] for p in team["participants"]] == ["Ada", "Bob"]
    assert team["participants"][0] == {**team["participants"][0], "id": ada_id, "role": "moderator"}
    assert team["waiting"] == 0
    one = await api.get("/api/rooms/TEAM", headers=AUTH)
    assert one.status == 200
    assert one.headers["Cache-Control"] == "no-store"
    assert (await one.json())["name"] == "team"
    assert (await api.get("/api/rooms/nowhere", headers=AUTH)).status == 404
    assert (await api.get("/api/rooms/%2F..", headers=AUTH)).status == 404
    await ada.ws.close()
    await bob.ws.close()


async def test_remove_a_participant(api: Any) -> None:
    ada, _ = await _join(api, "rm", "Ada")
    bob, bob_id = await _join(api, "rm", "Bob", cookie="veche_session=bob-session-0123456789")
    response = await api.delete(f"/api/rooms/rm/participants/{bob_id}", headers=AUTH)
    assert response.status == 204
    goodbye = await bob.expect("goodbye")
    assert isinstance(goodbye, Goodbye)
    assert goodbye.reason == "removed"
    left = await ada.expect("participant_left")
    assert isinstance(left, ParticipantLeft)
    assert (left.participant_id, left.reason) == (bob_id, "removed")
    again = await VecheClient.connect(
        f"ws://{api.host}:{api.port}/ws", cookie="veche_session=bob-session-0123456789"
    )
    await again.send({"type": "hello", "version": 1, "room": "rm", "name": "Bob"})
    refused = await again.expect("error")
    assert refused.type == "error"
    assert refused.code == "room_unavailable"
    missing = await api.delete(f"/api/rooms/rm/participants/{bob_id}", headers=AUTH)
    assert missing.status == 404
    await ada.ws.close()
    await again.ws.close()


async def test_close_a_room(api: Any) -> None:
    clients = [(await _join(api, "closing", name))[0] for name in ("Ada", "Bob")]
    assert (await api.delete("/api/rooms/closing", headers=AUTH)).status == 204
    for client in clients:
        goodbye = await client.expect("goodbye")
        assert isinstance(goodbye, Goodbye)
        assert goodbye.reason == "ended"
    assert (await api.get("/api/rooms/closing", headers=AUTH)).status == 404
    assert (await api.delete("/api/rooms/closing", headers=AUTH)).status == 404


async def test_the_governor_can_be_pinned_at_a_level_and_released(api: Any) -> None:
    """PUT /api/governor holds the load governor at a level (taken at its next sample, a
    quarter of a second while a room is open); null lets the load decide again; anything but
    0-3 or null is refused with 400 naming what is allowed, and changes nothing."""
    client, _ = await _join(api, "team", "Ada")  # the governor samples while a room is open
    try:
        state = await (await api.get("/api/governor", headers=AUTH)).json()
        assert state["level"] == 0
        assert state["pinned"] is None
        for bad in ({"level": 4}, {"level": -1}, {"level": "2"}, {"level": True}, {}, [2]):
            refused = await api.put("/api/governor", json=bad, headers=AUTH)
            assert refused.status == 400
            assert "level must be 0 to 3, or null" in await refused.text()
        refused = await api.put("/api/governor", data=b"{", headers=AUTH)
        assert refused.status == 400
        assert (await (await api.get("/api/governor", headers=AUTH)).json())["pinned"] is None
        pinned = await api.put("/api/governor", json={"level": 2}, headers=AUTH)
        assert pinned.status == 200
        assert (await pinned.json())["pinned"] == 2
        for _ in range(40):
            state = await (await api.get("/api/governor", headers=AUTH)).json()
            if state["level"] == 2:
                break
            await asyncio.sleep(0.1)
        assert state == {"level": 2, "pinned": 2, "lag": state["lag"]}
        released = await api.put("/api/governor", json={"level": None}, headers=AUTH)
        assert (await released.json())["pinned"] is None
    finally:
        await client.ws.close()


async def test_the_openapi_description_covers_every_api_route(api: Any) -> None:
    described = await (await api.get("/api/openapi.json")).json()
    assert described == OPENAPI
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in api.app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/api/")
    }
    documented = {
        (method, path)
        for path, item in described["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert routes - {("head", path) for _, path in routes} == documented


@pytest.mark.slow
async def test_veche_admin_command(tmp_path: Any) -> None:
    env = {**os.environ, "VECHE_ADMIN_TOKEN": TOKEN}
    with run_server(
        env={"VECHE_ADMIN_TOKEN": TOKEN, "VECHE_RECORDING_DIR": str(tmp_path)}
    ) as server:
        client = await VecheClient.connect(server.ws)
        welcome = await client.join("cli", "Ada")

        def admin(*args: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "veche", "admin", "--url", server.http, *args],
                env={**env, "VECHE_ADMIN_TOKEN": token},
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )

        listed = admin("rooms")
        assert listed.returncode == 0, listed.stderr
        assert '"name": "cli"' in listed.stdout
        assert welcome.participant_id in listed.stdout
        wrong = admin("rooms", token="x" * 40)
        assert wrong.returncode == 1
        assert "401" in wrong.stderr
        recording = admin("record", "cli", "--audio-only")
        assert recording.returncode == 0, recording.stderr
        assert '"recording": "cli-' in recording.stdout
        assert admin("stop-recording", "cli").returncode == 0
        assert admin("recordings").returncode == 0
        pinned = admin("governor", "2")
        assert pinned.returncode == 0, pinned.stderr
        assert '"pinned": 2' in pinned.stdout
        assert '"pinned": 2' in admin("governor").stdout
        assert '"pinned": null' in admin("governor", "auto").stdout
        assert admin("governor", "4").returncode == 2  # not a level: refused before any call
        assert admin("remove", "cli", welcome.participant_id).returncode == 0
        assert (await client.expect("goodbye")).type == "goodbye"
        assert admin("close", "cli").returncode == 0  # empty but still there
        assert admin("room", "cli").returncode == 1
        await client.ws.close()
        assert server.terminate() == 0


async def test_recording_through_the_api(
    aiohttp_client: Any, make_settings: Any, tmp_path: Any
) -> None:
    """Start and stop a room's recording; everyone in it is told; the recording is listed and
    its manifest downloads; nothing outside a recording's folder can be fetched, and a path with
    a NUL byte is a 404 like any other missing file."""
    api = await aiohttp_client(
        create_app(make_settings(admin_token=TOKEN, recording_dir=str(tmp_path / "rec")))
    )
    ada, _ = await _join(api, "taped", "Ada")
    started = await api.post("/api/rooms/taped/recording", json={"audio_only": True}, headers=AUTH)
    assert started.status == 201
    folder = (await started.json())["recording"]
    updated = await ada.expect("room_updated")
    assert updated.type == "room_updated"
    assert updated.settings.recording is True
    assert (await api.delete("/api/rooms/taped/recording", headers=AUTH)).status == 204
    assert (await ada.expect("room_updated")).settings.recording is False  # type: ignore[union-attr]
    assert (await api.delete("/api/rooms/taped/recording", headers=AUTH)).status == 404
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        listed = (await (await api.get("/api/recordings", headers=AUTH)).json())["recordings"]
        if listed and listed[0]["manifest"] is not None:
            break
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    assert listed[0]["id"] == folder
    assert listed[0]["manifest"]["audio_only"] is True
    manifest = await api.get(f"/api/recordings/{folder}/manifest.json", headers=AUTH)
    assert manifest.status == 200
    assert (await manifest.json())["room"] == "taped"
    (tmp_path / "secret.txt").write_text("outside")
    for path in (
        f"/api/recordings/{folder}/..%2F..%2Fsecret.txt",
        "/api/recordings/..%2F/secret.txt",
        f"/api/recordings/{folder}/missing.webm",
        f"/api/recordings/{folder}/manifest.json%2F..",
        f"/api/recordings/{folder}/manifest.json%00",
        f"/api/recordings/{folder}%00/manifest.json",
    ):
        response = await api.get(path, headers=AUTH)
        assert response.status == 404, path
    assert (await api.get(f"/api/recordings/{folder}/manifest.json")).status == 401
    await ada.ws.close()


async def test_recording_api_without_a_recording_dir(api: Any) -> None:
    ada, _ = await _join(api, "untaped", "Ada")
    assert (await api.post("/api/rooms/untaped/recording", headers=AUTH)).status == 501
    assert (await api.get("/api/recordings", headers=AUTH)).status == 404
    await ada.ws.close()
