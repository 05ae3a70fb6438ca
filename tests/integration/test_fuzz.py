"""Property-based tests: whatever a client sends, it gets at most an ``error`` that the protocol
defines, keeps its connection, and disturbs nobody else."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from veche.app import create_app
from veche.protocol import CLIENT_TYPES, SERVER_ADAPTER

from .wsutil import hello

# leave and end_meeting end the connection on purpose; hello is covered by its own tests.
TYPES = [t for t in CLIENT_TYPES if t not in ("leave", "end_meeting", "hello")]
FIELDS = [
    "pc",
    "sdp",
    "candidate",
    "sdp_mid",
    "sdp_mline_index",
    "text",
    "raised",
    "emoji",
    "active",
    "action",
    "participant_id",
    "audio",
    "video",
    "locked",
    "lobby",
    "password",
    "all",
    "id",
    "sources",
    "x",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
sdp_like = st.builds(
    lambda lines: "\r\n".join(lines) + "\r\n",
    st.lists(
        st.sampled_from(
            [
                "v=0",
                "o=- 1 1 IN IP4 0.0.0.0",
                "s=-",
                "t=0 0",
                "m=audio 9 UDP/TLS/RTP/SAVPF 111",
                "m=video 9 UDP/TLS/RTP/SAVPF 96",
                "a=mid:0",
                "a=sendonly",
                "a=rtpmap:111 opus/48000/2",
                "a=candidate:1 1 udp 1 10.0.0.1 9 typ host",
                "a=fingerprint:sha-256 00",
                "a=ice-ufrag:x",
                "a=ice-pwd:y",
                "a=setup:actpass",
                "c=IN IP4 0.0.0.0",
            ]
        )
        | st.text(max_size=40),
        max_size=25,
    ),
)
messages = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional={
        field: json_values
        | (sdp_like if field == "sdp" else st.text(max_size=80))
        | st.sampled_from(["publish", "subscribe", "mute", "👍", ""])
        for field in FIELDS
    },
).map(json.dumps)
frames = messages | json_values.map(json.dumps) | st.text(max_size=200)


async def _round_trip(ws: ClientWebSocketResponse, ref: str) -> None:
    """Every reply is a well-formed server message, and the connection still answers."""
    await ws.send_json({"type": "ping", "id": ref})
    while True:
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.TEXT, (msg.type, msg.data)
        reply = SERVER_ADAPTER.validate_json(msg.data)
        if reply.type == "error":
            assert reply.code != "internal", reply
        if reply.type == "pong" and reply.ref == ref:
            return


@pytest.fixture
async def room(aiohttp_client: Any, make_settings: Any) -> tuple[Any, Any]:
    client = await aiohttp_client(create_app(make_settings()))
    host = await client.ws_connect("/ws")
    await hello(host, "fuzz", "Host")  # the moderator: the fuzzed client is not
    guest = await client.ws_connect("/ws")
    await hello(guest, "fuzz", "Guest")
    return host, guest


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frame=frames)
@example(frame='{"type": "candidate", "pc": "publish", "candidate": "candidate:"}')
@example(frame='{"type": "offer", "pc": "publish", "sdp": "m=audio 9 x\\r\\n"}')
@example(frame='{"type": "react", "emoji": "👍", "id": ""}')
async def test_any_frame_gets_a_defined_answer_and_disturbs_nobody(
    room: tuple[ClientWebSocketResponse, ClientWebSocketResponse], frame: str
) -> None:
    """A fuzzed frame from a participant never closes its connection, never gets an internal
    error, and the moderator's connection keeps answering."""
    host, guest = room
    await guest.send_str(frame)
    await _round_trip(guest, "after-fuzz")
    await _round_trip(host, "host-check")
