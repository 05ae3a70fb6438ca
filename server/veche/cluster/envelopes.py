"""Relay envelopes: what one node's relay sends another's over the bus, defined once.

A bus message on a node's channel is a *batch*: a JSON array of envelopes, in the order they
were posted. Each envelope is a JSON object keyed on ``type``, one model per kind, every model
frozen and forbidding unknown fields (as the client protocol in :mod:`veche.protocol`).

From the *edge* node (the one holding the client's WebSocket) to the *owner* of its room
(:data:`ToOwner`):

* ``open_session`` -- a client connected to the edge said ``hello`` for a room the owner hosts;
* ``client_frame`` -- one text frame of that client, exactly as received (the owner parses it);
* ``session_closed`` -- the client's connection ended, and why.

From the owner back to the edge (:data:`ToEdge`):

* ``server_frame`` -- one server message for the client, already encoded;
* ``close_session`` -- close the client's connection with a code and a reason.

With ``pipes`` on (see :mod:`veche.cluster.placement`), the owner also tells the process it
chose to run a participant's media there (:data:`ToMedia`): ``media_join`` (naming the edge,
where the replies go), ``media_leave``, ``media_forwarding``; tells the edge which process that
is when it is a third one (``media_route``), and the edge passes the client's media frames on
to it (``media_frame``); and the nodes of a room's media tell each other what their pipes need
(:mod:`veche.media.pipe`): ``room_media`` (owner to each node: which nodes have members),
``pipe_key`` (a node's pipe address and the SRTP key it sends under), ``track_piped`` /
``track_unpiped`` (a published track that starts or stops coming over the pipe); and the edge
tells the owner what each participant whose media it runs is sent (``media_report``, for the
admin API there). They travel on
the same ordered channel as the relayed frames: a ``media_join`` reaches the edge before the
client, answering the ``welcome`` sent ahead of it, can offer; a ``pipe_key`` before the tracks
sent under it.

Every relayed-session envelope names the relayed ``session`` (``<edge node id>/<number>``).
Only nodes of the same version talk to each other (a rolling update drains a node before
replacing it), so the format carries no version. :func:`encode_batch` and
:func:`decode_batch` are the only (de)serialisation of this wire.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from veche.auth import Identity
from veche.protocol import CloseCode, LeaveReason

__all__ = [
    "ClientFrame",
    "CloseSession",
    "Envelope",
    "MediaForwarding",
    "MediaFrame",
    "MediaJoin",
    "MediaLeave",
    "MediaReport",
    "MediaRoute",
    "OpenSession",
    "PipeKey",
    "RelayedIdentity",
    "RoomMedia",
    "ServerFrame",
    "SessionClosed",
    "ToEdge",
    "ToMedia",
    "ToOwner",
    "TrackPiped",
    "TrackUnpiped",
    "decode_batch",
    "encode_batch",
]

log = logging.getLogger(__name__)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RelayedIdentity(_Model):
    """What the client's token said (``auth=jwt``) or its sign-in proved, checked by the edge
    node that received it."""

    subject: str
    room: str
    name: str
    moderator: bool
    name_editable: bool = False

    @classmethod
    def of(cls, identity: Identity) -> RelayedIdentity:
        return cls(
            subject=identity.subject,
            room=identity.room,
            name=identity.name,
            moderator=identity.moderator,
            name_editable=identity.name_editable,
        )

    def identity(self) -> Identity:
        return Identity(
            self.subject, self.room, self.name, self.moderator, name_editable=self.name_editable
        )


SessionId = Annotated[str, Field(description="A relayed session: '<edge node id>/<number>'.")]
NodeId = Annotated[str, Field(description="The edge node's id: where replies go.")]


class OpenSession(_Model):
    """Start serving a client connected to the edge node; its frames follow."""

    type: Literal["open_session"] = "open_session"
    session: SessionId
    edge: NodeId
    remote: str = Field(description="The client's IP address, as the edge node saw it.")
    browser_session: str | None = Field(None, description="The browser's session cookie.")
    identity: RelayedIdentity | None = None


class ClientFrame(_Model):
    """One text frame of the client, unparsed: the owner answers a bad one as for its own."""

    type: Literal["client_frame"] = "client_frame"
    session: SessionId
    edge: NodeId
    text: str


class SessionClosed(_Model):
    """The client's connection ended; ``reason`` decides whether it may resume."""

    type: Literal["session_closed"] = "session_closed"
    session: SessionId
    edge: NodeId
    reason: LeaveReason


class ServerFrame(_Model):
    """One server message for the client, encoded with :func:`veche.protocol.encode`."""

    type: Literal["server_frame"] = "server_frame"
    session: SessionId
    text: str


class CloseSession(_Model):
    """Close the client's connection once what was sent before is delivered."""

    type: Literal["close_session"] = "close_session"
    session: SessionId
    code: CloseCode
    reason: str


class MediaJoin(_Model):
    """Run the media of the participant of relayed ``session`` here, in ``room``'s media."""

    type: Literal["media_join"] = "media_join"
    session: SessionId
    room: str
    participant: str
    receive_codecs: list[str] | None = None
    address: str | None = None
    edge: str | None = Field(
        None, description="The node holding the client's WebSocket (absent: the receiver)."
    )
    owner: str | None = Field(None, description="The room's node (absent: the edge).")


class MediaLeave(_Model):
    """The participant's media here ends (it left, or was let go)."""

    type: Literal["media_leave"] = "media_leave"
    participant: str


class MediaForwarding(_Model):
    """Forward the participant's microphone, camera and screen only while they are on."""

    type: Literal["media_forwarding"] = "media_forwarding"
    participant: str
    audio: bool
    video: bool
    screen: bool


class MediaRoute(_Model):
    """The media of relayed ``session`` runs on ``node`` (a third node, not the owner): pass
    its media frames straight there. ``None``: no longer."""

    type: Literal["media_route"] = "media_route"
    session: SessionId
    participant: str
    node: str | None = None


class MediaFrame(_Model):
    """One media frame (``offer``, ``answer``, ``candidate``, ``view``) of the client of a
    participant whose media runs on the receiver, unparsed."""

    type: Literal["media_frame"] = "media_frame"
    participant: str
    text: str


class RoomMedia(_Model):
    """The nodes that have members of ``room``'s media now (a node not listed has none)."""

    type: Literal["room_media"] = "room_media"
    room: str
    nodes: list[str]


class PipeKey(_Model):
    """Node ``node`` receives pipes at ``host``:``port`` and sends to the receiver under
    ``key`` (base64 SRTP master key and salt), from now on. ``answer``: the reply to the
    receiver's own ``pipe_key`` (which is not answered again)."""

    type: Literal["pipe_key"] = "pipe_key"
    node: str
    host: str
    port: int
    key: str
    answer: bool = False


class TrackPiped(_Model):
    """A track of ``room`` published on ``node`` comes over its pipe from now on (layer ``i``
    as SSRC ``ssrc | i``)."""

    type: Literal["track_piped"] = "track_piped"
    node: str
    room: str
    track: str
    owner: str
    kind: Literal["audio", "video"]
    source: Literal["microphone", "camera", "screen"]
    mime_type: str
    clock_rate: int
    channels: int | None = None
    payload_type: int
    parameters: dict[str, str | int | None] = Field(default_factory=dict)
    rids: list[str] = Field(default_factory=list)
    ssrc: int


class TrackUnpiped(_Model):
    """The track sent as base SSRC ``ssrc`` by ``node`` no longer comes."""

    type: Literal["track_unpiped"] = "track_unpiped"
    node: str
    room: str
    ssrc: int


class MediaReport(_Model):
    """What the participant whose media runs on the sending node is sent now: ``receiving``
    (tracks by kind, and frames) and ``layers`` (of each simulcast video), as
    :meth:`veche.media.rooms.MediaRooms.receiving` and ``layers`` say there."""

    type: Literal["media_report"] = "media_report"
    participant: str
    receiving: dict[str, int]
    layers: list[dict[str, str | int | None]] = Field(default_factory=list)


ToMedia = (
    MediaJoin
    | MediaLeave
    | MediaForwarding
    | MediaRoute
    | MediaFrame
    | RoomMedia
    | PipeKey
    | TrackPiped
    | TrackUnpiped
    | MediaReport
)
"""An envelope about where media runs and what the pipes between nodes carry."""

ToOwner = OpenSession | ClientFrame | SessionClosed
"""An envelope from the edge node to the room's owner."""

ToEdge = ServerFrame | CloseSession
"""An envelope from the room's owner to the edge node."""

Envelope = Annotated[ToOwner | ToEdge | ToMedia, Field(discriminator="type")]
"""Any relay envelope."""

_ENVELOPE: Final[TypeAdapter[Envelope]] = TypeAdapter(Envelope)
_BATCH: Final[TypeAdapter[list[Envelope]]] = TypeAdapter(list[Envelope])


def encode_batch(envelopes: Sequence[ToOwner | ToEdge | ToMedia]) -> bytes:
    """One bus message carrying ``envelopes`` in order (absent optional fields left out)."""
    return _BATCH.dump_json(list(envelopes), exclude_none=True)


def decode_batch(data: bytes) -> list[ToOwner | ToEdge | ToMedia]:
    """The envelopes of one bus message, in order. What cannot be read is logged and left
    out: the whole message if it is not a JSON array, else each bad envelope alone (the others
    of the batch still count)."""
    try:
        return _BATCH.validate_json(data)
    except ValueError:
        pass  # below: find which envelopes are bad, and keep the rest
    try:
        items = json.loads(data)
    except (ValueError, RecursionError) as exc:
        log.warning("unreadable relay message", extra={"error": str(exc)[:200]})
        return []
    if not isinstance(items, list):
        log.warning("unreadable relay message", extra={"error": "not a JSON array"})
        return []
    envelopes: list[ToOwner | ToEdge | ToMedia] = []
    for item in items:
        try:
            envelopes.append(_ENVELOPE.validate_python(item))
        except (ValidationError, RecursionError) as exc:
            log.warning("unreadable relay envelope", extra={"error": _summary(exc)})
    return envelopes


def _summary(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where}: {first['msg']}" if where else str(first["msg"])
    return type(exc).__name__
