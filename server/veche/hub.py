"""The hub: routes client messages to rooms and room deliveries to connections.

It knows connections only through the small :class:`Outlet` interface (queue a message, ask for a
close), so it never touches a socket and the signalling edge stays the only writer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, assert_never

from veche.errors import ErrorCode, ProtocolError, VecheError
from veche.ids import ParticipantId
from veche.media import MediaRouter, media_config
from veche.protocol import (
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Answer,
    Candidate,
    ClientMessage,
    CloseCode,
    Hello,
    IceServer,
    Leave,
    LeaveReason,
    Offer,
    Ping,
    Pong,
    ServerMessage,
    Update,
    Welcome,
)
from veche.rooms import (
    Delivery,
    Participant,
    Room,
    RoomRegistry,
    clean_display_name,
    normalize_room_name,
)
from veche.settings import Settings

__all__ = ["Hub", "Outlet", "Session"]

log = logging.getLogger(__name__)


class Outlet(Protocol):
    """What the hub needs of a client connection. Both calls return at once."""

    def send(self, message: ServerMessage) -> None:
        """Queue ``message`` for the client."""

    def close(self, code: CloseCode, reason: str) -> None:
        """Ask the connection to close once queued messages are sent."""


@dataclass(slots=True, eq=False)
class Session:
    """One client connection as the hub sees it; ``room``/``participant`` are set by ``hello``."""

    outlet: Outlet
    remote: str
    room: Room | None = None
    participant: Participant | None = None


class Hub:
    """All sessions of this server and the rooms they are in.

    Raises :class:`~veche.errors.VecheError` from :meth:`handle` for any refused request; the
    caller turns it into an ``error`` reply.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        media: MediaRouter | None = None,
    ) -> None:
        self.settings = settings
        self.media = media or MediaRouter(media_config(settings), self._send_to)
        self.rooms = RoomRegistry(
            capacity=settings.max_participants, grace=settings.empty_room_grace
        )
        self._clock = clock
        self._sessions: set[Session] = set()
        self._by_participant: dict[ParticipantId, Session] = {}
        self._ice_servers = (
            [IceServer(urls=list(settings.ice_servers))] if settings.ice_servers else []
        )

    @property
    def sessions(self) -> frozenset[Session]:
        """Every open connection, joined or not."""
        return frozenset(self._sessions)

    def connect(self, outlet: Outlet, remote: str) -> Session:
        """Register a new connection."""
        session = Session(outlet=outlet, remote=remote)
        self._sessions.add(session)
        return session

    def disconnect(self, session: Session, reason: LeaveReason) -> None:
        """Forget a connection; if it had joined, the others hear ``participant_left``."""
        self._sessions.discard(session)
        self._leave(session, reason)

    async def handle(self, session: Session, message: ClientMessage) -> None:
        """Act on one parsed client message."""
        match message:
            case Ping():
                session.outlet.send(Pong(ref=message.id))
            case Hello():
                self._hello(session, message)
            case Leave():
                self._joined(session, message.id)
                self._leave(session, "left")
                session.outlet.close(CloseCode.NORMAL, "left")
            case Update():
                room, participant = self._joined(session, message.id)
                self._deliver(room.update(participant.id, audio=message.audio, video=message.video))
            case Offer() | Answer() | Candidate():
                _, participant = self._joined(session, message.id)
                try:
                    await self.media.handle(participant.id, message)
                except VecheError as exc:
                    exc.ref = exc.ref or message.id
                    raise
            case _:  # pragma: no cover - the type checker proves this unreachable
                assert_never(message)

    def shutdown(self) -> None:
        """Ask every connection to close with 1001."""
        for session in list(self._sessions):
            session.outlet.close(CloseCode.GOING_AWAY, "server shutting down")

    def sweep(self) -> None:
        """Drop rooms that have stayed empty for the grace period."""
        for name in self.rooms.sweep(now=self._clock()):
            log.info("room dropped", extra={"room": name})

    # ------------------------------------------------------------------ internals

    def _hello(self, session: Session, hello: Hello) -> None:
        if session.participant is not None:
            raise ProtocolError(
                "this connection has joined already", code=ErrorCode.ALREADY_JOINED, ref=hello.id
            )
        if hello.version not in SUPPORTED_VERSIONS:
            raise ProtocolError(
                f"protocol version {hello.version} is not supported; this server speaks "
                f"{PROTOCOL_VERSION}",
                code=ErrorCode.UNSUPPORTED_VERSION,
                ref=hello.id,
            )
        try:
            name = normalize_room_name(hello.room)
            room, participant, deliveries = self.rooms.join(
                name, clean_display_name(hello.name), now=self._clock()
            )
        except VecheError as exc:
            exc.ref = hello.id
            raise
        session.room, session.participant = room, participant
        self._by_participant[participant.id] = session
        self.media.join(room.name, participant.id)
        session.outlet.send(
            Welcome(
                version=PROTOCOL_VERSION,
                participant_id=participant.id,
                room=room.name,
                participants=[p.info() for p in room.participants],
                ice_servers=self._ice_servers,
                resume_token=participant.resume_token,
            )
        )
        self._deliver(deliveries)
        log.info(
            "participant joined",
            extra={"room": room.name, "participant": participant.id, "size": len(room)},
        )

    def _leave(self, session: Session, reason: LeaveReason) -> None:
        room, participant = session.room, session.participant
        if room is None or participant is None:
            return
        session.room = session.participant = None
        self._by_participant.pop(participant.id, None)
        self.media.leave(participant.id)
        self._deliver(room.leave(participant.id, reason, now=self._clock()))
        log.info(
            "participant left",
            extra={"room": room.name, "participant": participant.id, "reason": reason},
        )
        self.sweep()

    def _joined(self, session: Session, ref: str | None) -> tuple[Room, Participant]:
        if session.room is None or session.participant is None:
            raise ProtocolError("send 'hello' first", code=ErrorCode.NOT_JOINED, ref=ref)
        return session.room, session.participant

    def _send_to(self, participant_id: str, message: ServerMessage) -> None:
        target = self._by_participant.get(ParticipantId(participant_id))
        if target is not None:
            target.outlet.send(message)

    def _deliver(self, deliveries: Iterable[Delivery]) -> None:
        for delivery in deliveries:
            for pid in delivery.to:
                target = self._by_participant.get(pid)
                if target is not None:
                    target.outlet.send(delivery.message)
