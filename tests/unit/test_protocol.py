"""The signalling protocol: models, parsing of client frames, generated browser files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from veche import reference, schema
from veche.assets import web_root
from veche.errors import ErrorCode, ProtocolError
from veche.protocol import (
    CLIENT_ADAPTER,
    CLIENT_TYPES,
    REACTIONS,
    SERVER_ADAPTER,
    SERVER_TYPES,
    Ack,
    ActiveSpeaker,
    Admit,
    Answer,
    Asked,
    Candidate,
    Chat,
    ChatEntry,
    ChatPosted,
    Configure,
    Deny,
    EndMeeting,
    Error,
    Goodbye,
    Hand,
    Hello,
    IceServer,
    IceServers,
    Leave,
    LobbyUpdated,
    Moderate,
    ModerateAll,
    Offer,
    ParticipantInfo,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    Ping,
    Pong,
    React,
    Reacted,
    Record,
    RecordingFile,
    RecordingReady,
    Renegotiate,
    RoomState,
    RoomUpdated,
    ScreenShare,
    ShownTile,
    TrackUnavailable,
    Update,
    View,
    Waiting,
    WaitingInfo,
    Welcome,
    encode,
    parse_client_message,
)

INFO = ParticipantInfo(id="p-1", name="Ada", audio=True, video=False, joined_at=1.5)
CLIENT_SAMPLES: list[BaseModel] = [
    Hello(id="m1", version=1, room="team", name="Ada", resume="tok"),
    Leave(),
    Ping(id="x"),
    Update(audio=False),
    Offer(pc="publish", sdp="v=0\r\n"),
    Answer(pc="subscribe", sdp="v=0\r\n"),
    Candidate(pc="publish", candidate="candidate:1 1 udp 1 10.0.0.1 5000 typ host", sdp_mid="0"),
    Chat(text="hello <b>all</b>"),
    Hand(raised=True),
    React(emoji="👍"),
    ScreenShare(active=True),
    Moderate(action="mute", participant_id="p-2"),
    Configure(lobby=True, password=""),
    Admit(all=True),
    Deny(participant_id="p-3"),
    EndMeeting(),
    Record(active=True, audio_only=True),
    View(tiles=[ShownTile(participant_id="p-2", width=320, height=180)]),
    ModerateAll(action="mute"),
]
SERVER_SAMPLES: list[BaseModel] = [
    Welcome(
        version=1,
        participant_id="p-1",
        room="team",
        participants=[INFO],
        ice_servers=[IceServer(urls=["turn:example.invalid"], username="u", credential="c")],
        resume_token="tok",
    ),
    ParticipantJoined(participant=INFO),
    ParticipantLeft(participant_id="p-1", reason="left"),
    ParticipantUpdated(participant=INFO),
    Pong(ref="x"),
    Ack(ref="x"),
    Error(code=ErrorCode.ROOM_FULL, message="full", ref="m1"),
    Offer(pc="subscribe", sdp="v=0\r\n"),
    Answer(pc="publish", sdp="v=0\r\n"),
    Candidate(pc="subscribe", candidate="", sdp_mline_index=0),
    ChatPosted(entry=ChatEntry(id=1, participant_id="p-1", name="Ada", text="hi", at=2.0)),
    Reacted(participant_id="p-1", emoji="🎉"),
    ActiveSpeaker(participant_id="p-1"),
    RoomUpdated(settings=RoomState(locked=True)),
    LobbyUpdated(waiting=[WaitingInfo(id="p-9", name="Eve", since=3.0)]),
    Waiting(),
    Goodbye(reason="removed"),
    Renegotiate(),
    TrackUnavailable(participant_id="p-1", source="camera", codec="video/H264"),
    IceServers(
        ice_servers=[IceServer(urls=["turn:example.invalid"], username="u", credential="c")]
    ),
    Asked(request="unmute", by="Teacher"),
    RecordingReady(
        recording="2026-11-30_team",
        files=[RecordingFile(name="a.webm", url="/recordings/x/a.webm?sig=1", bytes=10)],
    ),
]


def test_samples_cover_every_message_type() -> None:
    """Each message type of both directions has a round-trip sample below."""
    assert {m.type for m in CLIENT_SAMPLES} == set(CLIENT_TYPES)  # type: ignore[attr-defined]
    assert {m.type for m in SERVER_SAMPLES} == set(SERVER_TYPES)  # type: ignore[attr-defined]


@pytest.mark.parametrize("message", CLIENT_SAMPLES, ids=lambda m: m.type)
def test_client_message_round_trips(message: BaseModel) -> None:
    """A client message survives JSON encoding and parsing unchanged."""
    assert parse_client_message(message.model_dump_json()) == message
    assert CLIENT_ADAPTER.validate_json(message.model_dump_json(exclude_none=True)) == message


@pytest.mark.parametrize("message", SERVER_SAMPLES, ids=lambda m: m.type)
def test_server_message_round_trips(message: BaseModel) -> None:
    """A server message survives :func:`encode` and validation unchanged."""
    assert SERVER_ADAPTER.validate_json(encode(message)) == message  # type: ignore[arg-type]


def test_encode_omits_none_fields() -> None:
    """Unset optional fields are not sent."""
    assert json.loads(encode(Pong())) == {"type": "pong"}


@pytest.mark.parametrize(
    ("frame", "code", "fragment"),
    [
        ("{", ErrorCode.BAD_JSON, "invalid JSON"),
        ("null", ErrorCode.BAD_MESSAGE, "not null"),
        ("[]", ErrorCode.BAD_MESSAGE, "not an array"),
        ('"hello"', ErrorCode.BAD_MESSAGE, "not a string"),
        ('{"id": "a"}', ErrorCode.BAD_MESSAGE, "'type'"),
        ('{"type": 5}', ErrorCode.BAD_MESSAGE, "'type'"),
        ('{"type": "dance"}', ErrorCode.UNKNOWN_TYPE, "'dance'"),
        (
            '{"type": "hello", "version": "one", "room": "a", "name": "b"}',
            ErrorCode.BAD_MESSAGE,
            "version",
        ),
        (
            '{"type": "hello", "version": true, "room": "a", "name": "b"}',
            ErrorCode.BAD_MESSAGE,
            "version",
        ),
        (
            '{"type": "hello", "version": 1.0, "room": "a", "name": "b"}',
            ErrorCode.BAD_MESSAGE,
            "version",
        ),
        ('{"type": "hello", "version": 1, "room": "a"}', ErrorCode.BAD_MESSAGE, "name"),
        ('{"type": "update", "participant_id": "p-x"}', ErrorCode.BAD_MESSAGE, "participant_id"),
        ('{"type": "ping", "id": ""}', ErrorCode.BAD_MESSAGE, "id"),
        (
            '{"type": "update", "audio": ' + "[" * 5000 + "]" * 5000 + "}",
            ErrorCode.BAD_JSON,
            "deep",
        ),
    ],
)
def test_parse_rejects_bad_frame(frame: str, code: ErrorCode, fragment: str) -> None:
    """Each malformed frame raises a ProtocolError with the right code and a telling message."""
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(frame)
    assert caught.value.code is code
    assert fragment in caught.value.message


def test_parse_error_carries_message_id_as_ref() -> None:
    """The ``id`` of a rejected message comes back as ``ref``."""
    with pytest.raises(ProtocolError) as caught:
        parse_client_message('{"type": "update", "id": "m7", "audio": "loud"}')
    assert caught.value.ref == "m7"
    assert "audio" in caught.value.message


def test_generated_browser_files_are_fresh() -> None:
    """web/protocol.gen.js and web/protocol.schema.json match protocol.py (else run
    ``python -m veche.schema``)."""
    for name, content in schema.generate().items():
        assert (web_root() / name).read_text(encoding="utf-8") == content, f"{name} is stale"


def test_generated_message_reference_is_fresh() -> None:
    """docs/protocol-messages.md matches protocol.py (else run ``python -m veche.schema``)."""
    path = schema.docs_root() / reference.FILE
    assert path.read_text(encoding="utf-8") == reference.render(), f"{path.name} is stale"


def test_schema_check_passes_on_the_checkout_and_fails_on_a_stale_copy(tmp_path: Path) -> None:
    """``--check`` accepts the committed files and refuses a directory with one edited."""
    assert schema.main(["--check"]) == 0
    assert schema.main(["--out", str(tmp_path)]) == 0
    assert schema.main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / reference.FILE).write_text("# edited by hand\n", encoding="utf-8")
    assert schema.main(["--out", str(tmp_path), "--check"]) == 1


def test_generated_js_names_every_type_and_code() -> None:
    """The JS constants list every message type and error code."""
    js = schema.generate()[schema.JS_FILE]
    for kind in (*CLIENT_TYPES, *SERVER_TYPES, *(code.value for code in ErrorCode)):
        assert f'"{kind}"' in js


def test_generated_js_lists_the_reactions() -> None:
    """The browser takes its reaction buttons from the generated file, in the server's order."""
    js = schema.generate()[schema.JS_FILE]
    assert '(["' + '", "'.join(REACTIONS) + '"])' in js
