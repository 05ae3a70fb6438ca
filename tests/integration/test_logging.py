"""Structured logs of a real server: one JSON object per line, a line per room and participant
lifecycle event, each client's lines carrying its connection id, no secret anywhere."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from veche.client import VecheClient

from .serverproc import run_server

pytestmark = pytest.mark.slow

TURN_SECRET = "turn-secret-0123456789-abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef-0123456"
PASSWORD = "room-password-42"


async def test_lifecycle_lines_carry_ids_and_no_secrets() -> None:
    with run_server(
        *("--log-format", "json", "--empty-room-grace", "0"),
        *("--ice-servers", "turn:turn.internal:3478", "--turn-secret", TURN_SECRET),
        *("--admin-token", ADMIN_TOKEN),
    ) as server:
        ada = await VecheClient.connect(server.ws)
        ada_welcome = await ada.join("logged", "Ada")
        await ada.send({"type": "configure", "password": PASSWORD})
        await ada.expect("room_updated")
        bob = await VecheClient.connect(server.ws)
        await bob.send(
            {"type": "hello", "version": 1, "room": "logged", "name": "Bob", "password": PASSWORD}
        )
        bob_welcome = await bob.expect("welcome")
        assert bob_welcome.type == "welcome"
        await bob.send({"type": "leave"})
        await ada.expect("participant_left")
        await ada.send({"type": "leave"})
        with pytest.raises(ConnectionClosed):  # the server closes after leave
            await ada.receive(timeout=5)
        assert server.terminate() == 0
        output = server.output()
    lines: list[dict[str, Any]] = []
    for raw in output.splitlines():
        entry = json.loads(raw)  # every line is one JSON object
        assert {"time", "level", "logger", "message"} <= set(entry)
        lines.append(entry)

    def events(message: str) -> list[dict[str, Any]]:
        return [line for line in lines if line["message"] == message]

    (created,) = events("room created")
    assert created["room"] == "logged"
    joined = events("participant joined")
    assert {line["participant"] for line in joined} == {
        ada_welcome.participant_id,
        bob_welcome.participant_id,
    }
    left = events("participant left")
    assert {line["reason"] for line in left} == {"left"}
    assert events("room dropped")
    for line in joined + left + [created]:
        assert line["connection"].startswith("c-")
        assert line["room"] == "logged"
    connections = {line["connection"] for line in joined}
    assert len(connections) == 2, "each client's lines carry its own connection id"
    for secret in (TURN_SECRET, ADMIN_TOKEN, PASSWORD, ada_welcome.resume_token):
        assert secret not in output
