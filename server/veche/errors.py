"""The error tree and the stable error codes sent to clients.

Hierarchy::

    VecheError                  base of everything Veche raises on purpose
    ├── ProtocolError           a client message that cannot be accepted (bad JSON, schema, order)
    ├── MediaError              an SDP or candidate could not be applied, or media failed
    └── RoomError               a room rule refused the request
        ├── InvalidRoomName     the name fails the allow-list
        ├── RoomFull            the room holds ``max_participants``, or its lobby ``max_waiting``
        └── Refused             a room rule refused the action (code says which)

Every error carries an :class:`ErrorCode`; the code is the contract with clients (they switch on
it), the message is for humans and may change.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ErrorCode",
    "InvalidRoomName",
    "MediaError",
    "ProtocolError",
    "Refused",
    "RoomError",
    "RoomFull",
    "VecheError",
]


class ErrorCode(StrEnum):
    """Stable machine-readable codes of ``error`` messages."""

    BAD_JSON = "bad_json"
    """The text frame is not valid JSON, or nests too deeply."""
    BAD_MESSAGE = "bad_message"
    """Valid JSON that is not an object, has no ``type``, or has a wrong or unknown field (the
    message names it); also an empty chat message."""
    UNKNOWN_TYPE = "unknown_type"
    """The ``type`` field names no client message."""
    BINARY_UNSUPPORTED = "binary_unsupported"
    """A binary frame was sent; the protocol is JSON text only."""
    UNSUPPORTED_VERSION = "unsupported_version"
    """``hello.version`` is not a protocol version this server speaks."""
    NOT_JOINED = "not_joined"
    """A room message was sent before a successful ``hello``."""
    ALREADY_JOINED = "already_joined"
    """A second ``hello`` on a connection that has joined."""
    INVALID_ROOM = "invalid_room"
    """The room name fails validation."""
    ROOM_FULL = "room_full"
    """The room has reached the configured participant limit."""
    BAD_SDP = "bad_sdp"
    """An offer, answer or ICE candidate could not be applied; the message says why."""
    WRONG_STATE = "wrong_state"
    """A media message that does not fit the negotiation: an answer with no offer waiting, an
    offer for ``subscribe``, an answer for ``publish``, a candidate that arrives before the
    description it belongs to (the message says which)."""
    MEDIA_FAILED = "media_failed"
    """A peer connection failed (ICE or DTLS); the client should publish or subscribe again."""
    FORBIDDEN = "forbidden"
    """Only a moderator may do that (or: muted by a moderator, the sender may not unmute yet; or:
    ``hello.room`` is not the room of the join token); nothing was changed."""
    NOT_ADMITTED = "not_admitted"
    """The sender waits in the lobby: only ``ping`` and ``leave`` are possible until admitted."""
    ROOM_UNAVAILABLE = "room_unavailable"
    """The room cannot be joined: it is locked, needs another password, the browser session was
    removed from it, or it does not exist. One answer for all, so outsiders learn nothing about
    the room."""
    RATE_LIMITED = "rate_limited"
    """Too many attempts or messages; wait and try again: more messages than ``ws_rate`` and
    ``ws_burst`` allow, too many refused joins from one address, more than five reactions at
    once or one a second after that, more than ``max_candidates`` remote candidates on one peer
    connection, or a publish offer from an address holding ``max_pending_media_per_address``
    unconnected ones."""
    TOO_LONG = "too_long"
    """A chat message over the length limit (``MAX_CHAT_LENGTH`` in :mod:`veche.protocol`)."""
    SCREEN_BUSY = "screen_busy"
    """Someone else is sharing a screen."""
    NOT_FOUND = "not_found"
    """The participant named is not in the room (or its lobby), or not any more."""
    UNAVAILABLE = "unavailable"
    """The node that hosts the room cannot be reached right now (the cluster's Redis is down, or
    the node went away): try again in a moment; nothing was changed."""
    UNSUPPORTED = "unsupported"
    """The request is valid but this server does not offer it (``record`` without a
    ``recording_dir``)."""
    RECORDING_LIMIT = "recording_limit"
    """A recording limit was reached: this server records ``recording_max_concurrent`` meetings
    at once already, or a recording ran ``recording_max_seconds`` or grew to
    ``recording_max_bytes`` and was stopped (its files are kept)."""
    SIGN_IN_REQUIRED = "sign_in_required"
    """This server lets only signed-in people join (``oidc_guests=deny``): sign in first."""
    INTERNAL = "internal"
    """The server failed; nothing about the cause is disclosed."""


class VecheError(Exception):
    """Base of all deliberate Veche errors; ``code`` is what the client sees."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(
        self, message: str, *, code: ErrorCode | None = None, ref: str | None = None
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.ref = ref
        """The ``id`` of the client message that caused this error, if known."""

    @property
    def message(self) -> str:
        """The human-readable text, safe to send to the client."""
        return str(self.args[0])


class ProtocolError(VecheError):
    """A client message could not be accepted; ``ref`` is the offending message's ``id``."""

    code = ErrorCode.BAD_MESSAGE


class MediaError(VecheError):
    """An SDP or candidate could not be applied, or a media connection failed."""

    code = ErrorCode.BAD_SDP


class RoomError(VecheError):
    """A room rule refused the request."""


class InvalidRoomName(RoomError):
    """The room name fails the allow-list."""

    code = ErrorCode.INVALID_ROOM


class RoomFull(RoomError):
    """The room holds the maximum number of participants, or its lobby of people waiting."""

    code = ErrorCode.ROOM_FULL


class Refused(RoomError):
    """A room rule refused the action; ``code`` says which (forbidden, room_unavailable...)."""
