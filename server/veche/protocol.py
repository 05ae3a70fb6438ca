"""THE signalling protocol between a browser (or any client) and a Veche server.

One pydantic model per message, one tagged union per direction (:data:`ClientMessage`,
:data:`ServerMessage`), keyed on ``type``; every model forbids unknown fields, so a client cannot
smuggle identity fields (``participant_id``, ``role``...) that the server stamps itself.
Messages travel as JSON text frames on the ``/ws`` WebSocket. ``docs/protocol.md`` describes the
sequences; ``python -m veche.schema`` turns this module into ``web/protocol.schema.json`` and
``web/protocol.gen.js`` for the browser, and ``docs/protocol-messages.md`` for people.

Any client message may carry an ``id`` (a string of at most 64 characters); the server's verdict
on it echoes that ``id`` as ``ref``: ``error`` if it was refused, otherwise ``ack`` (``pong`` for
``ping``; see :data:`UNACKNOWLEDGED` for the messages answered in other ways).
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from veche.errors import ErrorCode, ProtocolError

__all__ = [
    "CLIENT_TYPES",
    "MAX_CHAT_LENGTH",
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "REACTIONS",
    "SERVER_TYPES",
    "SUPPORTED_VERSIONS",
    "UNACKNOWLEDGED",
    "Ack",
    "ActiveSpeaker",
    "Admit",
    "Answer",
    "Asked",
    "Candidate",
    "Chat",
    "ChatAudience",
    "ChatEntry",
    "ChatPosted",
    "ClientMessage",
    "CloseCode",
    "Configure",
    "Deny",
    "EndMeeting",
    "Error",
    "Goodbye",
    "GoodbyeReason",
    "Hand",
    "Hello",
    "IceServer",
    "IceServers",
    "Leave",
    "LeaveReason",
    "LobbyUpdated",
    "Moderate",
    "ModerateAll",
    "Offer",
    "ParticipantInfo",
    "ParticipantJoined",
    "ParticipantLeft",
    "ParticipantUpdated",
    "PeerRole",
    "Ping",
    "Pong",
    "React",
    "Reacted",
    "Record",
    "RecordingFile",
    "RecordingReady",
    "Renegotiate",
    "Role",
    "RoomState",
    "RoomUpdated",
    "ScreenShare",
    "ServerMessage",
    "ShownTile",
    "Source",
    "TrackUnavailable",
    "Update",
    "View",
    "Waiting",
    "WaitingInfo",
    "Welcome",
    "encode",
    "parse_client_message",
]

PROTOCOL_VERSION: Final = 1
"""The version this server speaks; a client states its version in ``hello``."""

SUPPORTED_VERSIONS: Final = frozenset({1})

MAX_MESSAGE_BYTES: Final = 64 * 1024
"""Largest text frame a server accepts, unless a subscribe answer of a full room may be longer
(the server then accepts frames that long); a larger one closes the connection with 1009."""

MAX_CHAT_LENGTH: Final = 2000
"""Characters in one chat message, counted by the room after it drops control characters and
trims white space; a longer message is refused with ``too_long``."""


class CloseCode(IntEnum):
    """WebSocket close codes the server uses, and what each means to a client."""

    NORMAL = 1000
    """The client said ``leave``, or a ``goodbye`` ended its presence."""
    GOING_AWAY = 1001
    """The server is shutting down; reconnect later."""
    POLICY = 1008
    """The client broke a rule: no ``hello`` within ``hello_timeout``, or it kept sending after
    ``rate_limited``."""
    TOO_BIG = 1009
    """A frame exceeded 64 KiB."""
    SERVICE_RESTART = 1012
    """The node hosting the room went away (scale-out): reconnect now; the room continues on
    another node."""
    TRY_AGAIN_LATER = 1013
    """The client did not read its messages fast enough (its outbox of ``ws_outbox_size``
    filled up)."""
    RECONNECTING = 4000
    """Sent by a client that gives up a connection it believes dead and reconnects: the server
    keeps the participant for the resume grace, as for a lost connection."""


MessageId = Annotated[str, Field(min_length=1, max_length=64)]
PeerRole = Literal["publish", "subscribe"]
"""Which of a participant's two peer connections a media message is about: ``publish`` carries the
participant's own tracks (the client offers); ``subscribe`` carries everyone else's (the server
offers)."""

LeaveReason = Literal[
    "left", "disconnected", "timeout", "slow", "shutdown", "removed", "ended", "replaced"
]
"""Why a participant left: ``left`` said ``leave``; ``disconnected`` closed its socket;
``timeout`` lost its connection (missed keepalives, or dropped without a close) and did not resume
within the grace period; ``slow`` did not read its messages; ``shutdown`` the server stopped;
``removed`` by a moderator; ``ended`` the meeting was ended; ``replaced`` the same identity joined
again on another connection."""


GoodbyeReason = Literal["removed", "denied", "ended", "replaced"]
"""Why the server ends a participant's presence with ``goodbye``: ``removed`` a moderator (or the
admin API) removed the participant; ``denied`` a moderator refused its entry from the lobby;
``ended`` a moderator (or the admin API) ended the meeting; ``replaced`` the same identity joined
again on another connection."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ClientBase(_Model):
    id: MessageId | None = None


# ---------------------------------------------------------------- shared payloads


Role = Literal["moderator", "participant"]
"""A moderator may mute, remove, admit and change the room's settings; see :class:`Moderate`."""

Source = Literal["microphone", "camera", "screen"]
"""What a published track carries."""

Reaction = Literal["👍", "👏", "❤️", "😂", "😮", "🎉"]

REACTIONS: Final[tuple[str, ...]] = get_args(Reaction)
"""The fixed set of reactions."""


class ParticipantInfo(_Model):
    """What everyone in a room knows about one participant."""

    id: str
    name: str
    role: Role = "participant"
    audio: bool = Field(description="Whether the microphone is on (and forwarded).")
    video: bool = Field(description="Whether the camera is on (and forwarded).")
    screen: bool = Field(False, description="Whether this participant is sharing a screen.")
    hand_raised_at: float | None = Field(
        None, description="Unix time the hand was raised; hands are ordered by it."
    )
    audio_blocked: bool = Field(
        False, description="Muted by a moderator while 'moderator must allow' is on."
    )
    joined_at: float = Field(description="Unix time of joining, in seconds.")
    reconnecting: bool = Field(
        False,
        description="The connection dropped; the participant may resume within the grace "
        "period. Its media is paused meanwhile.",
    )
    signed_in: bool = Field(
        False,
        description="Whether it signed in (with the server's identity provider, or a join "
        "token); clients mark the others as guests where sign-in is on.",
    )


class RoomState(_Model):
    """A room's settings, as everyone in it sees them."""

    locked: bool = False
    lobby: bool = False
    has_password: bool = False
    moderator_must_allow: bool = Field(
        False, description="A participant muted by a moderator cannot unmute until allowed."
    )
    recording: bool = Field(
        False, description="The meeting is being recorded: clients show it for as long as it lasts."
    )


ChatAudience = Literal["everyone", "moderators"]
"""Who a chat message is for: the whole room, or its moderators (and the sender)."""


class ChatEntry(_Model):
    """One chat message. ``text`` is plain text: clients must never render it as HTML."""

    id: int
    participant_id: str
    name: str
    text: str
    at: float = Field(description="Unix time the server received it.")
    to: ChatAudience = Field(
        "everyone", description="``moderators``: seen only by the moderators and the sender."
    )


class WaitingInfo(_Model):
    """Someone waiting in the lobby, as moderators see them."""

    id: str
    name: str
    since: float


class IceServer(_Model):
    """One entry of ``RTCConfiguration.iceServers``."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


# ---------------------------------------------------------------- both directions

SDP_BOUND: Final = (
    "At most `max_sdp_length` characters in a client's publish offer; a subscribe answer, which "
    "has a section for each track the room forwards, may be longer, by a bound derived from "
    "`max_participants` (see the configuration page)."
)


class Offer(_ClientBase):
    """An SDP offer: client -> server for ``publish``, server -> client for ``subscribe``."""

    type: Literal["offer"] = "offer"
    pc: PeerRole
    sdp: str = Field(description=SDP_BOUND)
    sources: dict[Annotated[str, Field(max_length=32)], Source] | None = Field(
        None,
        description="Publish offers: what each section (by mid) carries; a video section not "
        "named is the camera, an audio section the microphone.",
        max_length=16,
    )

    @classmethod
    def from_server(cls, pc: PeerRole, sdp: str) -> Offer:
        """The server's own offer, not held to the length limit of what clients send: a
        subscribe offer grows with the room (a section for every other member's track)."""
        return cls.model_construct(pc=pc, sdp=sdp)


class Answer(_ClientBase):
    """An SDP answer to the other side's :class:`Offer` on the same ``pc``."""

    type: Literal["answer"] = "answer"
    pc: PeerRole
    sdp: str = Field(description=SDP_BOUND)

    @classmethod
    def from_server(cls, pc: PeerRole, sdp: str) -> Answer:
        """The server's own answer, not held to the length limit of what clients send."""
        return cls.model_construct(pc=pc, sdp=sdp)


class Candidate(_ClientBase):
    """A trickled ICE candidate; an empty ``candidate`` means end of candidates."""

    type: Literal["candidate"] = "candidate"
    pc: PeerRole
    candidate: Annotated[str, Field(max_length=1024)]
    sdp_mid: Annotated[str, Field(max_length=64)] | None = None
    sdp_mline_index: Annotated[int, Field(ge=0, le=255)] | None = None


# ---------------------------------------------------------------- client -> server


class Hello(_ClientBase):
    """Join ``room`` as ``name``; the first message of every connection."""

    type: Literal["hello"] = "hello"
    # Strict: JSON ``true`` is not version 1.
    version: int = Field(strict=True, description="The protocol version the client speaks.")
    room: Annotated[str, Field(max_length=256)]
    name: Annotated[str, Field(max_length=256)] = Field(
        description="Display name; the server trims it to 64 characters."
    )
    resume: Annotated[str, Field(max_length=128)] | None = Field(
        None,
        description="Resume token from the last ``welcome``: within the grace period the "
        "participant comes back as itself (``welcome.resumed``); an unknown or expired token "
        "is a new join.",
    )
    password: Annotated[str, Field(max_length=128)] | None = Field(
        None, description="The room's password, when it has one."
    )
    receive_codecs: list[Annotated[str, Field(max_length=64)]] | None = Field(
        None,
        max_length=64,
        description="MIME types this client can decode, as ``RTCRtpReceiver.getCapabilities`` "
        "lists them (``video/VP8``, ``video/H264``, ``audio/opus``): publishers are asked for a "
        "codec that everyone can decode. Omitted: whatever the server forwards.",
    )


class Leave(_ClientBase):
    """Leave the room; the server answers by closing the socket with 1000."""

    type: Literal["leave"] = "leave"


class Ping(_ClientBase):
    """Application-level liveness check; answered by :class:`Pong`. Allowed before ``hello``."""

    type: Literal["ping"] = "ping"


class Update(_ClientBase):
    """Change one's own state; omitted fields stay as they are."""

    type: Literal["update"] = "update"
    audio: bool | None = None
    video: bool | None = None


class Chat(_ClientBase):
    """Send a chat message to the room (plain text, at most 2000 characters)."""

    type: Literal["chat"] = "chat"
    # Looser than the limit on purpose: the room counts after cleaning the text and answers an
    # over-long message with too_long (not bad_message, which a tighter bound here would give).
    text: Annotated[str, Field(min_length=1, max_length=8 * MAX_CHAT_LENGTH)]
    to: ChatAudience = Field(
        "everyone", description="``moderators``: a private message to the room's moderators."
    )


class Hand(_ClientBase):
    """Raise or lower one's hand."""

    type: Literal["hand"] = "hand"
    raised: bool


class React(_ClientBase):
    """Show a reaction on one's tile for a moment (one of :data:`REACTIONS`, rate-limited)."""

    type: Literal["react"] = "react"
    emoji: Reaction


class ScreenShare(_ClientBase):
    """Ask to start (or say one stopped) sharing a screen; one sharer at a time."""

    type: Literal["screen_share"] = "screen_share"
    active: bool


MAX_VIEW_TILES: Final = 200
"""Tiles one ``view`` may name (a page of tiles, and a shared screen, is far fewer)."""


class ShownTile(_Model):
    """One video a client shows: whose, which source, and its size on screen."""

    participant_id: str = Field(max_length=64)
    source: Literal["camera", "screen"] = "camera"
    width: int = Field(0, ge=0, le=16384, description="Width on screen, in CSS pixels.")
    height: int = Field(0, ge=0, le=16384, description="Height on screen, in CSS pixels.")


class View(_ClientBase):
    """Which videos this client shows, and how large: the server forwards video only for
    these (audio comes from everyone). Until a client sends ``view`` it receives every video;
    an empty ``tiles`` receives none (a hidden tab, audio only). Sent again whenever it
    changes (a page, a pin, a resize)."""

    type: Literal["view"] = "view"
    tiles: list[ShownTile] = Field(max_length=MAX_VIEW_TILES)


class Moderate(_ClientBase):
    """A moderator's action on one participant.

    ``mute`` stops forwarding their microphone, ``camera_off`` their camera; ``allow_unmute``
    lets someone muted under 'moderator must allow' unmute again; ``ask_unmute`` does that and
    asks them to unmute (they get ``asked``; only they can turn their microphone on);
    ``lower_hand`` lowers their hand; ``remove`` ends their participation (they cannot come
    back with the same browser session); ``make_moderator`` shares the role.
    """

    type: Literal["moderate"] = "moderate"
    action: Literal[
        "mute",
        "camera_off",
        "allow_unmute",
        "ask_unmute",
        "lower_hand",
        "remove",
        "make_moderator",
    ]
    participant_id: Annotated[str, Field(max_length=64)]


class ModerateAll(_ClientBase):
    """A moderator's action on every participant who is not a moderator: ``mute`` them all
    (as ``moderate`` does, one by one), or ``lower_hand``: lower every raised hand (the
    moderators' too)."""

    type: Literal["moderate_all"] = "moderate_all"
    action: Literal["mute", "lower_hand"]


class Configure(_ClientBase):
    """A moderator changes room settings; omitted fields stay. ``password`` set to an empty
    string clears it."""

    type: Literal["configure"] = "configure"
    locked: bool | None = None
    lobby: bool | None = None
    password: Annotated[str, Field(max_length=128)] | None = None
    moderator_must_allow: bool | None = None


class Admit(_ClientBase):
    """A moderator lets waiting people in: one (``participant_id``) or everyone (``all``)."""

    type: Literal["admit"] = "admit"
    participant_id: Annotated[str, Field(max_length=64)] | None = None
    all: bool = False


class Deny(_ClientBase):
    """A moderator turns waiting people away: one (``participant_id``) or everyone (``all``)."""

    type: Literal["deny"] = "deny"
    participant_id: Annotated[str, Field(max_length=64)] | None = None
    all: bool = False


class Record(_ClientBase):
    """A moderator starts or stops recording the room (each participant's audio and video to a
    file on the server; ``audio_only`` leaves video out). Everyone is told by ``room_updated``."""

    type: Literal["record"] = "record"
    active: bool
    audio_only: bool = False


class EndMeeting(_ClientBase):
    """A moderator ends the meeting for everyone."""

    type: Literal["end_meeting"] = "end_meeting"


ClientMessage = Annotated[
    Hello
    | Leave
    | Ping
    | Update
    | Offer
    | Answer
    | Candidate
    | Chat
    | Hand
    | React
    | ScreenShare
    | Moderate
    | Configure
    | Admit
    | Deny
    | Record
    | EndMeeting
    | View
    | ModerateAll,
    Field(discriminator="type"),
]
"""Any message a client may send."""


# ---------------------------------------------------------------- server -> client


class Welcome(_Model):
    """Reply to a successful ``hello``: who you are and who is here."""

    type: Literal["welcome"] = "welcome"
    version: int
    participant_id: str
    room: str = Field(description="The normalised room name.")
    participants: list[ParticipantInfo] = Field(description="Everyone in the room, you included.")
    ice_servers: list[IceServer]
    ice_transport_policy: Literal["all", "relay"] = Field(
        "all", description="``RTCConfiguration.iceTransportPolicy`` to use."
    )
    resume_token: str = Field(
        description="Secret for ``hello.resume`` after a dropped connection; a new one comes "
        "with every ``welcome``."
    )
    can_record: bool = Field(
        False,
        description="Whether this participant, as a moderator, may start a recording on this "
        "server (clients show Record only then).",
    )
    resumed: bool = Field(
        False,
        description="True when ``hello.resume`` brought back the same participant: keep its "
        "state, and set up both peer connections afresh.",
    )
    settings: RoomState = RoomState()
    chat: list[ChatEntry] = Field(default_factory=list, description="The last 200 messages.")
    active_speaker: str | None = None


class ParticipantJoined(_Model):
    """Someone else entered the room."""

    type: Literal["participant_joined"] = "participant_joined"
    participant: ParticipantInfo


class ParticipantLeft(_Model):
    """Someone else left the room."""

    type: Literal["participant_left"] = "participant_left"
    participant_id: str
    reason: LeaveReason


class ParticipantUpdated(_Model):
    """Someone's state changed (including yours, as confirmation)."""

    type: Literal["participant_updated"] = "participant_updated"
    participant: ParticipantInfo


class Pong(_Model):
    """Answer to :class:`Ping`."""

    type: Literal["pong"] = "pong"
    ref: str | None = None


class Ack(_Model):
    """A client message that carried an ``id`` was done: sent after everything it caused (a
    ``participant_updated``, a ``room_updated``, an SDP answer...). A refused message gets an
    :class:`Error` with the same ``ref`` instead, never both."""

    type: Literal["ack"] = "ack"
    ref: str = Field(description="The ``id`` of the client message that was done.")


class Error(_Model):
    """A request was refused or a message could not be read. The connection stays open unless a
    close frame follows."""

    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    ref: str | None = Field(None, description="The ``id`` of the offending client message.")
    pc: PeerRole | None = Field(
        None,
        description="With ``media_failed``: the one connection the server started afresh (the "
        "client closes its side of it: publishes again on a new ``publish`` connection, or "
        "answers the next ``subscribe`` offer on a new one); absent: both.",
    )


class ChatPosted(_Model):
    """A chat message, to everyone in the room (the sender included)."""

    type: Literal["chat_posted"] = "chat_posted"
    entry: ChatEntry


class Reacted(_Model):
    """Someone reacted; show ``emoji`` on their tile for a moment."""

    type: Literal["reacted"] = "reacted"
    participant_id: str
    emoji: Reaction


class ActiveSpeaker(_Model):
    """Who is speaking now (``None``: nobody), from the audio levels publishers send."""

    type: Literal["active_speaker"] = "active_speaker"
    participant_id: str | None = None


class RoomUpdated(_Model):
    """The room's settings changed."""

    type: Literal["room_updated"] = "room_updated"
    settings: RoomState


class LobbyUpdated(_Model):
    """To moderators: who is waiting in the lobby now."""

    type: Literal["lobby_updated"] = "lobby_updated"
    waiting: list[WaitingInfo]


class Waiting(_Model):
    """To someone in the lobby: wait until a moderator admits (``welcome``) or denies you, or
    (``for_host``) until a host is present, when you enter by yourself (``welcome``)."""

    type: Literal["waiting"] = "waiting"
    for_host: bool = Field(
        False,
        description="Waiting for a host to be present (the server's sign-in rules), not for "
        "a moderator's admission.",
    )


class RecordingFile(_Model):
    """One file of a written recording, and a link to download it (valid for a day)."""

    name: str
    url: str = Field(description="Same-origin path with its own permission (a signed query).")
    bytes: int


class RecordingReady(_Model):
    """A recording of this room is written (moderators present get this): its files, each
    with a download link that needs no account and expires in a day."""

    type: Literal["recording_ready"] = "recording_ready"
    recording: str = Field(description="The recording's folder name.")
    files: list[RecordingFile]


class Asked(_Model):
    """A moderator (``by``, its name) asks you to do something only you can do: ``unmute``
    your microphone (you are allowed to)."""

    type: Literal["asked"] = "asked"
    request: Literal["unmute"]
    by: str


class Goodbye(_Model):
    """The server ends this participant's presence; the socket closes next (1000).

    ``removed`` by a moderator, ``denied`` entry from the lobby, ``ended``: the meeting ended,
    ``replaced``: the same identity joined on another connection.
    """

    type: Literal["goodbye"] = "goodbye"
    reason: GoodbyeReason


class Renegotiate(_Model):
    """Send a new offer on the ``publish`` connection: the server will answer with another
    codec (someone who joined cannot decode the one in use). Nothing is torn down."""

    type: Literal["renegotiate"] = "renegotiate"
    pc: Literal["publish"] = "publish"


class IceServers(_Model):
    """Fresh TURN credentials, before the ones you have expire (``turn_ttl``): use them for
    every connection set up from now on (``RTCPeerConnection.setConfiguration`` on those you
    have). Connections already relayed keep working."""

    type: Literal["ice_servers"] = "ice_servers"
    ice_servers: list[IceServer]


class TrackUnavailable(_Model):
    """One of someone's tracks cannot reach you: its publisher can send it only in ``codec``
    (a MIME type), which your client said it cannot decode. Their other tracks still come."""

    type: Literal["track_unavailable"] = "track_unavailable"
    participant_id: str
    source: Source
    codec: str


ServerMessage = Annotated[
    Welcome
    | ParticipantJoined
    | ParticipantLeft
    | ParticipantUpdated
    | Pong
    | Ack
    | Error
    | Offer
    | Answer
    | Candidate
    | ChatPosted
    | Reacted
    | ActiveSpeaker
    | RoomUpdated
    | LobbyUpdated
    | Waiting
    | Goodbye
    | Renegotiate
    | TrackUnavailable
    | IceServers
    | Asked
    | RecordingReady,
    Field(discriminator="type"),
]
"""Any message a server may send."""

UNACKNOWLEDGED: Final = frozenset({"hello", "ping", "leave"})
"""Client message types that never get :class:`Ack`, whatever their ``id``: ``hello`` is answered
by ``welcome`` or ``waiting``, ``ping`` by ``pong``, ``leave`` by the close (1000)."""

CLIENT_ADAPTER: Final[TypeAdapter[ClientMessage]] = TypeAdapter(ClientMessage)
SERVER_ADAPTER: Final[TypeAdapter[ServerMessage]] = TypeAdapter(ServerMessage)


def _tags(union: Any) -> dict[str, type[_Model]]:
    """The models of a tagged union (``Annotated[A | B | ..., Field(...)]``) by their ``type``."""
    members: tuple[type[_Model], ...] = get_args(get_args(union)[0])
    return {model.model_fields["type"].default: model for model in members}


_CLIENT_MODELS: Final = _tags(ClientMessage)
_SERVER_MODELS: Final = _tags(ServerMessage)
CLIENT_TYPES: Final = tuple(_CLIENT_MODELS)
SERVER_TYPES: Final = tuple(_SERVER_MODELS)


def parse_client_message(text: str) -> ClientMessage:
    """Parse one text frame from a client.

    Raises :class:`~veche.errors.ProtocolError` with code ``bad_json`` (not JSON, or nested too
    deeply), ``bad_message`` (not an object, no ``type``, or a field is wrong: the message names
    it) or ``unknown_type``; ``ref`` is the frame's ``id`` whenever one could be read.
    """
    try:
        data: Any = json.loads(text)
    except RecursionError:
        raise ProtocolError("JSON nests too deeply", code=ErrorCode.BAD_JSON) from None
    except ValueError as exc:
        raise ProtocolError(f"invalid JSON: {exc}", code=ErrorCode.BAD_JSON) from None
    if not isinstance(data, dict):
        raise ProtocolError(f"a message must be a JSON object, not {_json_kind(data)}")
    raw_id = data.get("id")
    ref = raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= 64 else None
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("'type' is missing or not a string", ref=ref)
    model = _CLIENT_MODELS.get(kind)
    if model is None:
        shown = kind if len(kind) <= 40 else kind[:40] + "..."
        raise ProtocolError(f"unknown message type {shown!r}", code=ErrorCode.UNKNOWN_TYPE, ref=ref)
    try:
        message: ClientMessage = model.model_validate(data)  # type: ignore[assignment]
    except RecursionError:
        raise ProtocolError("JSON nests too deeply", code=ErrorCode.BAD_JSON, ref=ref) from None
    except ValidationError as exc:
        raise ProtocolError(_describe(kind, exc), ref=ref) from None
    return message


def encode(message: ServerMessage) -> str:
    """Serialise a server message to the JSON text sent on the wire (``None`` fields omitted)."""
    return message.model_dump_json(exclude_none=True)


def _describe(kind: str, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors(include_url=False, include_input=False)[:3]:
        where = ".".join(str(part) for part in err["loc"]) or kind
        problems.append(f"{where}: {err['msg']}")
    more = exc.error_count() - len(problems)
    suffix = f" (and {more} more)" if more > 0 else ""
    return f"invalid {kind!r} message: " + "; ".join(problems) + suffix


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
