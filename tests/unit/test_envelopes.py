"""Relay envelopes survive the wire unchanged, and what cannot be read is dropped with a log."""

from __future__ import annotations

import json
import logging

import pytest

from veche.auth import Identity
from veche.cluster.envelopes import (
    ClientFrame,
    CloseSession,
    MediaForwarding,
    MediaJoin,
    MediaLeave,
    MediaReport,
    OpenSession,
    PipeKey,
    RelayedIdentity,
    RoomMedia,
    ServerFrame,
    SessionClosed,
    ToEdge,
    ToMedia,
    ToOwner,
    TrackPiped,
    TrackUnpiped,
    decode_batch,
    encode_batch,
)
from veche.protocol import CloseCode

ONE_OF_EACH: list[ToOwner | ToEdge | ToMedia] = [
    OpenSession(
        session="n-a/1",
        edge="n-a",
        remote="192.0.2.7",
        browser_session="b-123",
        identity=RelayedIdentity(subject="u1", room="*", name="Ada", moderator=True),
    ),
    OpenSession(session="n-a/2", edge="n-a", remote="192.0.2.8"),
    ClientFrame(session="n-a/1", edge="n-a", text='{"type":"chat","text":"hi"}'),
    SessionClosed(session="n-a/1", edge="n-a", reason="timeout"),
    ServerFrame(session="n-a/1", text='{"type":"pong"}'),
    CloseSession(session="n-a/1", code=CloseCode.SERVICE_RESTART, reason="moved"),
    MediaJoin(session="n-a/1", room="r", participant="p1", receive_codecs=["video/VP8"]),
    MediaLeave(participant="p1"),
    MediaForwarding(participant="p1", audio=True, video=False, screen=False),
    RoomMedia(room="r", nodes=["n-a", "n-b"]),
    PipeKey(node="n-a", host="10.0.0.2", port=40200, key="a2V5"),
    PipeKey(node="n-b", host="10.0.0.3", port=40201, key="a2V6", answer=True),
    TrackPiped(
        node="n-a",
        room="r",
        track="p1-camera-3",
        owner="p1",
        kind="video",
        source="camera",
        mime_type="video/VP8",
        clock_rate=90000,
        payload_type=96,
        rids=["q", "h", "f"],
        ssrc=0x12345670,
    ),
    TrackUnpiped(node="n-a", room="r", ssrc=0x12345670),
    MediaReport(
        participant="p1",
        receiving={"audio": 1, "video": 2, "frames": 300},
        layers=[{"from": "p2", "source": "camera", "layer": "h", "width": 640, "bitrate": 500000}],
    ),
]


@pytest.mark.parametrize("envelope", ONE_OF_EACH, ids=lambda e: e.type)
def test_envelope_round_trips_alone(envelope: ToOwner | ToEdge | ToMedia) -> None:
    """Each kind decodes to an equal envelope of the same class."""
    (decoded,) = decode_batch(encode_batch([envelope]))
    assert type(decoded) is type(envelope)
    assert decoded == envelope


def test_envelope_batch_keeps_its_order() -> None:
    """A batch decodes to the same envelopes in the order they were encoded."""
    assert decode_batch(encode_batch(ONE_OF_EACH)) == ONE_OF_EACH


def test_envelope_wire_names_its_type_first_and_leaves_out_absent_fields() -> None:
    """On the wire an envelope is a readable object: type first, full names, no nulls."""
    wire = encode_batch([OpenSession(session="n-a/2", edge="n-a", remote="192.0.2.8")])
    assert wire == (
        b'[{"type":"open_session","session":"n-a/2","edge":"n-a","remote":"192.0.2.8"}]'
    )


def test_envelope_identity_is_the_tokens_identity() -> None:
    """A token's identity crosses nodes unchanged."""
    identity = Identity(subject="u1", room="standup", name="Ada", moderator=False)
    assert RelayedIdentity.of(identity).identity() == identity


def test_envelope_malformed_is_dropped_and_the_rest_of_its_batch_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bad envelope (unknown type, missing field, unknown field, wrong value) is logged and
    left out; the good envelopes around it still decode."""
    good = json.loads(encode_batch(ONE_OF_EACH[2:4]))
    bad = [
        {"type": "teleport", "session": "n-a/1"},
        {"type": "server_frame", "session": "n-a/1"},
        {"type": "server_frame", "session": "n-a/1", "text": "x", "node": "n-z"},
        {"type": "session_closed", "session": "n-a/1", "edge": "n-a", "reason": "bored"},
        {"type": "close_session", "session": "n-a/1", "code": 4999, "reason": ""},
        "open_session",
    ]
    data = json.dumps([good[0], *bad, good[1]]).encode()
    with caplog.at_level(logging.WARNING, logger="veche.cluster.envelopes"):
        assert decode_batch(data) == ONE_OF_EACH[2:4]
    assert [r.getMessage() for r in caplog.records] == ["unreadable relay envelope"] * len(bad)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xfe", b"not json", b'{"type": "server_frame"}', b"null", b"[" * 100_000],
    ids=["empty", "not utf-8", "not json", "an object", "null", "deeply nested"],
)
def test_envelope_unreadable_message_is_dropped_whole(
    data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A bus message that is not a JSON array of objects yields nothing, and says so."""
    with caplog.at_level(logging.WARNING, logger="veche.cluster.envelopes"):
        assert decode_batch(data) == []
    assert [r.getMessage() for r in caplog.records] == ["unreadable relay message"]


def test_envelope_is_frozen() -> None:
    """An envelope cannot change after it is made (one may sit in a queue for a while)."""
    envelope = ServerFrame(session="n-a/1", text="{}")
    with pytest.raises(ValueError, match="frozen"):
        envelope.text = "changed"  # type: ignore[misc]
