"""The WebSocket edge, driven in-process with aiohttp's test client."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType, WSServerHandshakeError
from aiohttp.test_utils import TestClient

from veche.app import create_app
from veche.protocol import MAX_MESSAGE_BYTES, CloseCode

from .wsutil import expect, hello, no_message, ping_ok, recv

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_client(aiohttp_client: Any, make_settings: Any) -> MakeClient:
    async def make(**overrides: Any) -> Client:
        client: Client = await aiohttp_client(create_app(make_settings(**overrides)))
        return client

    return make


async def test_hello_welcomes_and_tells_others(make_client: MakeClient) -> None:
    """hello gets welcome with the roster; the others get participant_joined, then _left."""
    client = await make_client()
    ada = await client.ws_connect("/ws")
    welcome = await hello(ada, "Team", "  Ada ")
    assert welcome["room"] == "team"
    assert welcome["version"] == 1
    assert welcome["ice_servers"] == []
    assert [p["name"] for p in welcome["participants"]] == ["Ada"]
    bob = await client.ws_connect("/ws")
    bob_welcome = await hello(bob, "team", "Bob")
    assert [p["name"] for p in bob_welcome["participants"]] == ["Ada", "Bob"]
    joined = await recv(ada)
    assert joined["type"] == "participant_joined"
    assert joined["participant"]["id"] == bob_welcome["participant_id"]
    await bob.close()
    left = await recv(ada)
    assert left == {
        "type": "participant_left",
        "participant_id": bob_welcome["participant_id"],
        "reason": "disconnected",
    }


async def test_update_reaches_everyone(make_client: MakeClient) -> None:
    """An update is stamped with the sender's id and reaches the whole room."""
    client = await make_client()
    ada, bob = await client.ws_connect("/ws"), await client.ws_connect("/ws")
    ada_id = (await hello(ada, "r", "Ada"))["participant_id"]
    await hello(bob, "r", "Bob")
    await expect(ada, "participant_joined")
    await ada.send_json({"type": "update", "audio": False})
    for ws in (ada, bob):
        updated = await expect(ws, "participant_updated")
        assert updated["participant"]["id"] == ada_id
        assert updated["participant"]["audio"] is False


async def test_leave_closes_with_1000(make_client: MakeClient) -> None:
    """leave: the others hear reason 'left' and the leaver's socket closes normally."""
    client = await make_client()
    ada, bob = await client.ws_connect("/ws"), await client.ws_connect("/ws")
    await hello(ada, "r", "Ada")
    bob_id = (await hello(bob, "r", "Bob"))["participant_id"]
    await expect(ada, "participant_joined")
    await bob.send_json({"type": "leave"})
    closing = await bob.receive(timeout=3)
    assert closing.type is WSMsgType.CLOSE
    assert closing.data == CloseCode.NORMAL
    left = await expect(ada, "participant_left")
    assert (left["participant_id"], left["reason"]) == (bob_id, "left")


async def test_full_room_answers_room_full(make_client: MakeClient) -> None:
    """Beyond max_participants, hello gets room_full and the connection stays usable."""
    client = await make_client(max_participants=1)
    ada, eve = await client.ws_connect("/ws"), await client.ws_connect("/ws")
    await hello(ada, "r", "Ada")
    await eve.send_json({"type": "hello", "id": "h", "version": 1, "room": "r", "name": "Eve"})
    assert await recv(eve) == {
        "type": "error",
        "code": "room_full",
        "message": "the room is full (1 participants)",
        "ref": "h",
    }
    await ping_ok(eve)
    await hello(eve, "other", "Eve")


async def test_full_lobby_answers_room_full_and_the_room_still_admits(
    make_client: MakeClient,
) -> None:
    """Beyond max_waiting, hello gets room_full naming the lobby; those waiting took no place,
    so the moderator can still let one in."""
    client = await make_client(max_participants=2, max_waiting=1)
    ada, bob, eve = [await client.ws_connect("/ws") for _ in range(3)]
    await hello(ada, "r", "Ada")
    await ada.send_json({"type": "configure", "lobby": True})
    await expect(ada, "room_updated")
    await bob.send_json({"type": "hello", "id": "h", "version": 1, "room": "r", "name": "Bob"})
    bob_id = (await expect(ada, "lobby_updated"))["waiting"][0]["id"]
    await eve.send_json({"type": "hello", "id": "h", "version": 1, "room": "r", "name": "Eve"})
    assert await recv(eve) == {
        "type": "error",
        "code": "room_full",
        "message": "the lobby is full (1 people waiting)",
        "ref": "h",
    }
    await ada.send_json({"type": "admit", "participant_id": bob_id})
    assert (await expect(bob, "welcome"))["participant_id"] == bob_id


# ------------------------------------------------------------------ bad input

# Each case: (frames the bad client sends, whether it joins first, the error code expected).
# A frame is text, or bytes for a binary frame.
BAD_INPUTS: dict[str, tuple[list[str | bytes], bool, str]] = {
    "binary frame": ([b"\x00\x01"], True, "binary_unsupported"),
    "invalid json": (["{not json"], True, "bad_json"),
    "null": (["null"], True, "bad_message"),
    "array": (["[]"], True, "bad_message"),
    "number": (["42"], True, "bad_message"),
    "missing type": (['{"id": "m1"}'], True, "bad_message"),
    "wrong field type": (['{"type": "update", "audio": "loud"}'], True, "bad_message"),
    "wrong hello types": (
        ['{"type": "hello", "version": "1", "room": 3, "name": "x"}'],
        False,
        "bad_message",
    ),
    "unknown type": (['{"type": "teleport"}'], True, "unknown_type"),
    "duplicate hello": (
        ['{"type": "hello", "version": 1, "room": "r", "name": "x"}'],
        True,
        "already_joined",
    ),
    "message before hello": (['{"type": "update", "audio": false}'], False, "not_joined"),
    "spoofed participant id": (
        ['{"type": "update", "audio": false, "participant_id": "SPOOF"}'],
        True,
        "bad_message",
    ),
    "spoofed role in hello": (
        ['{"type": "hello", "version": 1, "room": "r", "name": "x", "role": "moderator"}'],
        False,
        "bad_message",
    ),
    "deep nesting": (
        ['{"type": "update", "audio": ' + "[" * 30000 + "]" * 30000 + "}"],
        True,
        "bad_json",
    ),
    "hostile room name": (
        ['{"type": "hello", "version": 1, "room": "../etc", "name": "x"}'],
        False,
        "invalid_room",
    ),
    "wrong version": (
        ['{"type": "hello", "version": 99, "room": "r", "name": "x"}'],
        False,
        "unsupported_version",
    ),
    "unusable sdp": (['{"type": "offer", "pc": "publish", "sdp": "v=0"}'], True, "bad_sdp"),
    "answer with no offer": (
        ['{"type": "answer", "pc": "subscribe", "sdp": "v=0"}'],
        True,
        "wrong_state",
    ),
    "offer for the server's connection": (
        ['{"type": "offer", "pc": "subscribe", "sdp": "v=0"}'],
        True,
        "wrong_state",
    ),
    "candidate with no connection": (
        ['{"type": "candidate", "pc": "publish", "candidate": "x"}'],
        True,
        "wrong_state",
    ),
}


async def _send(ws: ClientWebSocketResponse, frame: str | bytes) -> None:
    if isinstance(frame, bytes):
        await ws.send_bytes(frame)
    else:
        await ws.send_str(frame)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
async def test_bad_input_gets_error_and_disrupts_nobody(make_client: MakeClient, case: str) -> None:
    """A bad frame gets an ``error`` naming the problem; the sender stays connected and a
    well-behaved participant in the same room notices nothing."""
    frames, join_first, code = BAD_INPUTS[case]
    client = await make_client()
    good = await client.ws_connect("/ws")
    await hello(good, "r", "Good")
    bad = await client.ws_connect("/ws")
    if join_first:
        await hello(bad, "r", "Bad")
        await expect(good, "participant_joined")
    for frame in frames:
        await _send(bad, frame)
    error = await recv(bad)
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["message"]
    await ping_ok(bad)
    await ping_ok(good)
    await no_message(good)
    if case == "spoofed participant id":
        assert "participant_id" in error["message"]
    await bad.close()
    if join_first:
        assert (await expect(good, "participant_left"))["reason"] == "disconnected"
    await ping_ok(good)


async def test_error_reply_echoes_message_id(make_client: MakeClient) -> None:
    """``ref`` of an error is the ``id`` of the offending message."""
    client = await make_client()
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "warp", "id": "m-42"})
    error = await recv(ws)
    assert (error["code"], error["ref"]) == ("unknown_type", "m-42")
    assert "'warp'" in error["message"]


async def test_done_request_gets_ack_and_refused_one_only_an_error(make_client: MakeClient) -> None:
    """A message with an ``id`` that was done is answered by ``ack`` with that ``ref``, after what
    it caused; a refused one gets ``error`` with that ``ref`` and no ``ack``."""
    client = await make_client()
    ada, bob = await client.ws_connect("/ws"), await client.ws_connect("/ws")
    await hello(ada, "r", "Ada")
    await hello(bob, "r", "Bob")
    await expect(ada, "participant_joined")
    await ada.send_json({"type": "screen_share", "active": True, "id": "share-1"})
    updated = await recv(ada)
    assert (updated["type"], updated["participant"]["screen"]) == ("participant_updated", True)
    assert await recv(ada) == {"type": "ack", "ref": "share-1"}
    await expect(bob, "participant_updated")
    await bob.send_json({"type": "screen_share", "active": True, "id": "share-2"})
    error = await recv(bob)
    assert (error["type"], error["code"], error["ref"]) == ("error", "screen_busy", "share-2")
    await ping_ok(bob)
    await no_message(ada)


async def test_hello_ping_and_leave_are_answered_without_ack(make_client: MakeClient) -> None:
    """``hello`` is answered by ``welcome``, ``ping`` by ``pong`` and ``leave`` by the close,
    whatever their ``id``: none of them gets an ``ack``."""
    client = await make_client()
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "hello", "id": "h", "version": 1, "room": "r", "name": "Ada"})
    assert (await recv(ws))["type"] == "welcome"
    await ping_ok(ws, "p")
    await ws.send_json({"type": "leave", "id": "bye"})
    closing = await ws.receive(timeout=3)
    assert closing.type is WSMsgType.CLOSE
    assert ws.close_code == CloseCode.NORMAL


async def test_oversized_message_closes_with_1009(make_client: MakeClient) -> None:
    """A frame over 64 KiB (in a room too small for a longer subscribe answer) closes that
    connection with 1009; the room goes on."""
    client = await make_client(max_participants=2)
    good = await client.ws_connect("/ws")
    await hello(good, "r", "Good")
    bad = await client.ws_connect("/ws")
    await hello(bad, "r", "Bad")
    await expect(good, "participant_joined")
    frame = json.dumps({"type": "ping", "pad": ""})
    frame = frame.replace('""', '"' + "x" * (MAX_MESSAGE_BYTES + 1 - len(frame)) + '"')
    assert len(frame.encode()) == MAX_MESSAGE_BYTES + 1
    await bad.send_str(frame)
    closing = await bad.receive(timeout=3)
    assert closing.type is WSMsgType.CLOSE
    assert closing.data == CloseCode.TOO_BIG
    assert (await expect(good, "participant_left"))["reason"] == "disconnected"
    await ping_ok(good)


async def test_message_at_size_limit_is_accepted(make_client: MakeClient) -> None:
    """A frame of exactly 64 KiB is read normally (and here refused for its content only)."""
    client = await make_client(max_participants=2)
    ws = await client.ws_connect("/ws")
    frame = json.dumps({"type": "ping", "pad": ""})
    frame = frame.replace('""', '"' + "x" * (MAX_MESSAGE_BYTES - len(frame)) + '"')
    assert len(frame.encode()) == MAX_MESSAGE_BYTES
    await ws.send_str(frame)
    assert (await recv(ws))["code"] == "bad_message"


async def test_foreign_origin_is_refused_before_upgrade(make_client: MakeClient) -> None:
    """A browser page from another origin gets HTTP 403 and no WebSocket."""
    client = await make_client()
    with pytest.raises(WSServerHandshakeError) as caught:
        await client.ws_connect("/ws", headers={"Origin": "https://evil.example"})
    assert caught.value.status == 403


async def test_own_and_configured_origins_are_accepted(make_client: MakeClient) -> None:
    """The server's own origin, public_url and allowed_origins may connect."""
    client = await make_client(
        public_url="https://meet.example.org", allowed_origins="https://portal.example.org"
    )
    own = f"http://{client.host}:{client.port}"
    for origin in (own, "https://meet.example.org", "https://portal.example.org"):
        ws = await client.ws_connect("/ws", headers={"Origin": origin})
        await ping_ok(ws)
        await ws.close()


async def test_silent_client_is_dropped_by_keepalive(make_client: MakeClient) -> None:
    """A client that stops answering pings is shown 'reconnecting', then removed after the
    resume grace and the others told 'timeout'."""
    client = await make_client(ws_heartbeat=0.3, resume_grace=0.3)
    good = await client.ws_connect("/ws", heartbeat=None)
    await hello(good, "r", "Good")
    dead = await client.ws_connect("/ws", autoping=False)
    await hello(dead, "r", "Dead")
    await expect(good, "participant_joined")
    # ``good`` keeps reading (and so answering pings); ``dead`` never reads again.
    away = await expect(good, "participant_updated", timeout=3)
    assert away["participant"]["reconnecting"] is True
    left = await expect(good, "participant_left", timeout=3)
    assert left["reason"] == "timeout"


async def test_client_that_does_not_read_is_closed_without_delaying_others(
    make_client: MakeClient,
) -> None:
    """A participant whose socket is never read is dropped as 'slow' while the sender of the
    flood keeps getting prompt replies."""
    client = await make_client(ws_outbox_size=8, ws_send_timeout=0.3, resume_grace=0.2)
    good = await client.ws_connect("/ws")
    await hello(good, "r", "Good")

    # A raw socket with a tiny receive buffer that completes the handshake and never reads.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (client.host, client.port))
    await loop.sock_sendall(
        sock,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    response = await loop.sock_recv(sock, 1024)
    assert response.startswith(b"HTTP/1.1 101")
    hello_frame = json.dumps({"type": "hello", "version": 1, "room": "r", "name": "Slow"})
    await loop.sock_sendall(sock, _masked_text_frame(hello_frame))
    slow_id = (await expect(good, "participant_joined"))["participant"]["id"]

    left: dict[str, Any] | None = None
    state = True
    try:
        for _ in range(400):  # at most 40,000 updates, about 6 MB towards the silent client
            for _ in range(100):
                state = not state
                await good.send_json({"type": "update", "audio": state})
            updates = 0
            while updates < 100 and left is None:
                message = await recv(good)
                updates += message["type"] == "participant_updated"
                if message["type"] == "participant_left":
                    left = message
            if left is not None:
                break
        assert left is not None, "the non-reading client was never dropped"
        assert left == {"type": "participant_left", "participant_id": slow_id, "reason": "slow"}
        await good.send_json({"type": "ping", "id": "after"})
        assert (await expect(good, "pong"))["ref"] == "after"
    finally:
        sock.close()


def _masked_text_frame(text: str) -> bytes:
    payload = text.encode()
    assert len(payload) < 126
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


async def test_shutdown_closes_every_socket_with_1001(
    aiohttp_client: Any, make_settings: Any
) -> None:
    """Stopping the app closes each connection with GOING_AWAY."""
    app = create_app(make_settings())
    client: Client = await aiohttp_client(app)
    ada = await client.ws_connect("/ws")
    await hello(ada, "r", "Ada")
    idle = await client.ws_connect("/ws")
    await client.server.close()
    for ws in (ada, idle):
        closing = await ws.receive(timeout=5)
        assert closing.type is WSMsgType.CLOSE
        assert closing.data == CloseCode.GOING_AWAY


async def test_frames_grow_with_the_longest_answer_a_full_room_may_need(
    make_client: MakeClient,
) -> None:
    """With 50 participants a subscribe answer may have 150 sections: a 300,000-character
    answer reaches the server (refused for its content, not closed); one over the room's bound
    closes with 1009."""
    client = await make_client(max_participants=50)
    ws = await client.ws_connect("/ws")
    await hello(ws, "big", "Ada")
    sdp = "v=0\r\n" + "a=x\r\n" * 50_000
    await ws.send_json({"type": "answer", "pc": "subscribe", "sdp": sdp})
    reply = await recv(ws)
    assert reply["type"] == "error"
    await ping_ok(ws)
    await ws.send_str(json.dumps({"type": "ping", "pad": "x" * 500_000}))
    closing = await ws.receive(timeout=3)
    assert closing.type is WSMsgType.CLOSE
    assert closing.data == CloseCode.TOO_BIG
