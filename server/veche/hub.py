"""The hub: routes client messages to rooms and media, and room deliveries to connections.

It knows connections only through the small :class:`Outlet` interface (queue a message, ask for a
close), so it never touches a socket and the signalling edge stays the only writer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol, assert_never

from veche.auth import Identity
from veche.errors import ErrorCode, ProtocolError, Refused, VecheError
from veche.ids import ParticipantId, RoomName, new_resume_token
from veche.logs import PARTICIPANT
from veche.media import MediaRouter, media_config
from veche.media.recorder import Recording, finish_in_worker
from veche.protocol import (
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    UNACKNOWLEDGED,
    Ack,
    ActiveSpeaker,
    Admit,
    Answer,
    Candidate,
    Chat,
    ClientMessage,
    CloseCode,
    Configure,
    Deny,
    EndMeeting,
    Error,
    Goodbye,
    Hand,
    Hello,
    IceServer,
    Leave,
    LeaveReason,
    Moderate,
    Offer,
    ParticipantUpdated,
    Ping,
    Pong,
    React,
    Record,
    ScreenShare,
    ServerMessage,
    Update,
    Waiting,
    Welcome,
    encode,
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
from veche.turn import turn_credentials

__all__ = ["Hub", "Outlet", "Session", "client_ice_servers"]

log = logging.getLogger(__name__)

RESUMABLE: Final[frozenset[LeaveReason]] = frozenset({"timeout", "slow"})
"""Connection losses after which a participant is kept for ``resume_grace`` seconds: nobody said
goodbye (a close frame or ``leave`` means the client chose to go)."""


def client_ice_servers(settings: Settings, user: str, *, now: float) -> list[IceServer]:
    """The ICE servers for one participant: STUN URLs as configured, TURN URLs with
    credentials of its own that expire after ``turn_ttl`` (only with a ``turn_secret``)."""
    stun = [url for url in settings.ice_servers if url.startswith(("stun:", "stuns:"))]
    turn = [url for url in settings.ice_servers if url.startswith(("turn:", "turns:"))]
    servers = [IceServer(urls=stun)] if stun else []
    if turn and settings.turn_secret is not None:
        username, password = turn_credentials(
            settings.turn_secret.get_secret_value(), user, ttl=settings.turn_ttl, now=now
        )
        servers.append(IceServer(urls=turn, username=username, credential=password))
    elif turn:
        servers.append(IceServer(urls=turn))
    return servers


class Outlet(Protocol):
    """What the hub needs of a client connection. Both calls return at once."""

    def send(self, message: ServerMessage) -> None:
        """Queue ``message`` for the client."""

    def send_text(self, text: str) -> None:
        """Queue a message already encoded with :func:`~veche.protocol.encode` (a message for
        many recipients is encoded once)."""

    def close(self, code: CloseCode, reason: str) -> None:
        """Ask the connection to close once queued messages are sent."""


@dataclass(slots=True, eq=False)
class Session:
    """One client connection as the hub sees it. ``participant`` is set by ``hello`` (also while
    waiting in the lobby); ``browser_session`` is the browser's session cookie, if any."""

    outlet: Outlet
    remote: str
    browser_session: str | None = None
    identity: Identity | None = None
    receive_codecs: list[str] | None = None
    """What the client said it can decode (``hello.receive_codecs``)."""
    room: Room | None = None
    participant: Participant | None = None


@dataclass(slots=True)
class HubStats:
    """Totals since start, for ``/metrics``."""

    messages: Counter[str] = field(default_factory=Counter)
    """Client messages handled, by type."""
    errors: Counter[str] = field(default_factory=Counter)
    """``error`` replies sent, by code."""
    turn_credentials: int = 0
    """TURN credentials handed out in ``welcome``."""


class Hub:
    """All sessions of this server, the rooms they are in and their media.

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
        self.media = media or MediaRouter(
            media_config(settings), self._send_to, on_speaker=self._speaker_changed
        )
        self.rooms = RoomRegistry(
            capacity=settings.max_participants, grace=settings.empty_room_grace
        )
        self._clock = clock
        self._sessions: set[Session] = set()
        self._by_participant: dict[ParticipantId, Session] = {}
        self._speakers: dict[RoomName, str | None] = {}
        self._resumable: dict[str, tuple[Room, Participant]] = {}
        self.stats = HubStats()
        self._background: set[asyncio.Task[Any]] = set()
        self._away: dict[ParticipantId, asyncio.TimerHandle] = {}

    @property
    def sessions(self) -> frozenset[Session]:
        """Every open connection, joined or not."""
        return frozenset(self._sessions)

    def connect(
        self,
        outlet: Outlet,
        remote: str,
        browser_session: str | None = None,
        identity: Identity | None = None,
    ) -> Session:
        """Register a new connection."""
        session = Session(
            outlet=outlet, remote=remote, browser_session=browser_session, identity=identity
        )
        self._sessions.add(session)
        return session

    def disconnect(self, session: Session, reason: LeaveReason) -> None:
        """Forget a connection. A participant whose connection was lost (``RESUMABLE``) stays
        for the resume grace and the others see it ``reconnecting``; otherwise they hear
        ``participant_left``."""
        self._sessions.discard(session)
        room, participant = session.room, session.participant
        if (
            reason in RESUMABLE
            and self.settings.resume_grace > 0
            and room is not None
            and participant is not None
            and participant.id in room
        ):
            self._detach(session, room, participant, reason)
        else:
            self._leave(session, reason)

    async def handle(self, session: Session, message: ClientMessage) -> None:
        """Act on one parsed client message; one with an ``id`` that was done gets ``ack``."""
        self.stats.messages[message.type] += 1
        try:
            await self._dispatch(session, message)
        except VecheError as exc:
            exc.ref = exc.ref or message.id
            raise
        if message.id is not None and message.type not in UNACKNOWLEDGED:
            session.outlet.send(Ack(ref=message.id))

    def refuse(self, session: Session, error: VecheError) -> None:
        """Answer a message that was refused (unreadable, or not allowed) with an ``error``."""
        self.stats.errors[error.code] += 1
        session.outlet.send(Error(code=error.code, message=error.message, ref=error.ref))

    async def _dispatch(self, session: Session, message: ClientMessage) -> None:
        now = self._clock()
        match message:
            case Ping():
                session.outlet.send(Pong(ref=message.id))
            case Hello():
                self._hello(session, message)
            case Leave():
                self._present(session)
                self._leave(session, "left")
                session.outlet.close(CloseCode.NORMAL, "left")
            case Update():
                room, me = self._admitted(session)
                self._apply(room.update(me.id, audio=message.audio, video=message.video))
            case Offer() | Answer() | Candidate():
                _, me = self._admitted(session)
                await self.media.handle(me.id, message)
            case Chat():
                room, me = self._admitted(session)
                self._deliver(room.post(me.id, message.text, now=now))
            case Hand():
                room, me = self._admitted(session)
                self._deliver(room.raise_hand(me.id, message.raised, now=now))
            case React():
                room, me = self._admitted(session)
                self._deliver(room.react(me.id, message.emoji, now=now))
            case ScreenShare():
                room, me = self._admitted(session)
                self._apply(room.share_screen(me.id, message.active))
            case Moderate():
                room, me = self._admitted(session)
                target = ParticipantId(message.participant_id)
                deliveries, removed = room.moderate(me.id, message.action, target, now=now)
                if removed is not None:
                    self._dismiss(removed, "removed")
                self._apply(deliveries)
            case Configure():
                room, me = self._admitted(session)
                deliveries, admitted = room.configure(
                    me.id,
                    locked=message.locked,
                    lobby=message.lobby,
                    password=message.password,
                    moderator_must_allow=message.moderator_must_allow,
                )
                self._deliver(deliveries)
                self._welcome_all(room, admitted)
            case Admit():
                room, me = self._admitted(session)
                target_id = _target(message.participant_id)
                deliveries, admitted = room.admit(me.id, target_id, everyone=message.all)
                self._deliver(deliveries)
                self._welcome_all(room, admitted)
            case Deny():
                room, me = self._admitted(session)
                target_id = _target(message.participant_id)
                deliveries, denied = room.deny(me.id, target_id, everyone=message.all)
                for person in denied:
                    self._dismiss(person, "denied")
                self._deliver(deliveries)
            case Record():
                room, me = self._admitted(session)
                self._record(room, me.id, message.active, audio_only=message.audio_only)
            case EndMeeting():
                room, me = self._admitted(session)
                self._end(room, room.end(me.id), by=me.id)
            case _:  # pragma: no cover - the type checker proves this unreachable
                assert_never(message)

    # ------------------------------------------------------------------ administration

    def close_room(self, name: RoomName) -> bool:
        """End a meeting for everyone in it (the admin API); False if there is no such room."""
        room = self.rooms.get(name)
        if room is None:
            return False
        self._end(room, room.close(), by="admin")
        return True

    def remove_participant(self, name: RoomName, participant_id: ParticipantId) -> bool:
        """Remove one participant (the admin API), as a moderator's ``remove`` does; False if
        there is no such participant in that room."""
        room = self.rooms.get(name)
        if room is None:
            return False
        deliveries, removed = room.expel(participant_id, now=self._clock())
        if removed is None:
            return False
        self._dismiss(removed, "removed")
        self._apply(deliveries)
        return True

    def start_recording(self, name: RoomName, *, audio_only: bool = False) -> Path:
        """Start recording a room (the admin API); its folder. Raises
        :class:`~veche.errors.Refused` (``not_found``, ``unsupported``)."""
        room = self.rooms.get(name)
        if room is None:
            raise Refused("no such room", code=ErrorCode.NOT_FOUND)
        directory = self._record(room, None, True, audio_only=audio_only)
        assert directory is not None
        return directory

    def stop_recording(self, name: RoomName) -> bool:
        """Stop recording a room (the admin API); False if it was not recording."""
        room = self.rooms.get(name)
        if room is None or not room.settings.recording:
            return False
        self._record(room, None, False, audio_only=False)
        return True

    async def finish(self) -> None:
        """Wait for background work (recordings being written) to end."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _record(
        self, room: Room, actor: ParticipantId | None, active: bool, *, audio_only: bool
    ) -> Path | None:
        """Start or stop recording (``actor``: the moderator, ``None`` for the admin API); the
        recording's folder while it records."""
        if self.settings.recording_dir is None:
            raise Refused("recording is not set up on this server", code=ErrorCode.UNSUPPORTED)
        before = room.settings.recording
        deliveries = room.set_recording(actor, active)
        if before != active:
            if active:
                self._start_recording(room, audio_only=audio_only)
            else:
                self._stop_recording(room.name)
        self._deliver(deliveries)
        recording = self.media.recording(room.name)
        return recording.directory if recording is not None else None

    def _start_recording(self, room: Room, *, audio_only: bool) -> None:
        assert self.settings.recording_dir is not None
        base = Path(self.settings.recording_dir).resolve()
        base.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        directory = (base / f"{room.name}-{stamp}").resolve()
        suffix = 1
        while directory.exists():
            suffix += 1
            directory = (base / f"{room.name}-{stamp}-{suffix}").resolve()
        if directory.parent != base:  # never outside the configured directory
            raise Refused("this room cannot be recorded", code=ErrorCode.UNSUPPORTED)
        directory.mkdir()

        def name_of(participant_id: str) -> str:
            participant = room.get(ParticipantId(participant_id))
            return participant.name if participant is not None else "?"

        recording = Recording(room.name, directory, audio_only, names=name_of)
        self.media.start_recording(room.name, recording)
        log.info(
            "recording started",
            extra={"room": room.name, "directory": directory.name, "audio_only": audio_only},
        )

    def _stop_recording(self, name: str) -> None:
        recording = self.media.stop_recording(name)
        if recording is None:
            return
        task = asyncio.ensure_future(finish_in_worker(recording.stop()))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        log.info("recording stopped", extra={"room": name, "directory": recording.directory.name})

    def _end(self, room: Room, everyone: list[Participant], *, by: str) -> None:
        self._stop_recording(room.name)
        for person in everyone:
            self._dismiss(person, "ended")
        self.rooms.drop(room.name)
        self._speakers.pop(room.name, None)
        log.info("meeting ended", extra={"room": room.name, "by": by})

    def shutdown(self) -> None:
        """Ask every connection to close with 1001 and stop every recording (its files are
        written in the background: see :meth:`finish`)."""
        for name in self.media.recorded_rooms:
            self._stop_recording(name)
        for handle in self._away.values():
            handle.cancel()
        self._away.clear()
        for session in list(self._sessions):
            session.outlet.close(CloseCode.GOING_AWAY, "server shutting down")

    def sweep(self) -> None:
        """Drop rooms that have stayed empty for the grace period."""
        for name in self.rooms.sweep(now=self._clock()):
            self._speakers.pop(name, None)
            self._stop_recording(name)
            log.info("room dropped", extra={"room": name})

    # ------------------------------------------------------------------ internals

    def _hello(self, session: Session, hello: Hello) -> None:
        if session.participant is not None:
            raise ProtocolError("this connection has joined already", code=ErrorCode.ALREADY_JOINED)
        if hello.version not in SUPPORTED_VERSIONS:
            raise ProtocolError(
                f"protocol version {hello.version} is not supported; this server speaks "
                f"{PROTOCOL_VERSION}",
                code=ErrorCode.UNSUPPORTED_VERSION,
            )
        name = normalize_room_name(hello.room)
        identity = session.identity
        if identity is not None and not identity.allows(name):
            raise Refused("your token is for another room", code=ErrorCode.FORBIDDEN)
        session.receive_codecs = hello.receive_codecs
        if hello.resume is not None and self._resume(session, hello.resume, name):
            return
        if identity is not None:
            self._replace(identity, name)
        new_room = name not in self.rooms
        room, participant, deliveries = self.rooms.join(
            name,
            clean_display_name(identity.name if identity else hello.name),
            now=self._clock(),
            password=hello.password,
            session=session.browser_session,
            address=session.remote,
            subject=identity.subject if identity else None,
            moderator=identity.moderator if identity else False,
        )
        session.room, session.participant = room, participant
        self._by_participant[participant.id] = session
        PARTICIPANT.set(participant.id)
        if new_room:
            log.info("room created", extra={"room": room.name})
        if participant.id in room:
            self._welcome(room, participant)
        else:
            session.outlet.send(Waiting())
            log.info(
                "participant waiting", extra={"room": room.name, "participant": participant.id}
            )
        self._deliver(deliveries)

    def _replace(self, identity: Identity, name: RoomName) -> None:
        """A second connection of one identity replaces the first (also one that is away)."""
        room = self.rooms.get(name)
        if room is None:
            return
        for participant in room.participants:
            if participant.subject == identity.subject:
                self._dismiss(participant, "replaced")
                self._apply(room.leave(participant.id, "replaced", now=self._clock()))

    def _resume(self, session: Session, token: str, name: RoomName) -> bool:
        """Bring back the participant ``token`` names, if it is still in room ``name`` (and of
        the same token identity): its old connection, if the server still holds one, is let go
        and its media starts afresh. False if there is nobody to resume."""
        found = self._resumable.get(token)
        if found is None:
            return False
        room, participant = found
        subject = session.identity.subject if session.identity else None
        if room.name != name or participant.id not in room or participant.subject != subject:
            return False
        old = self._by_participant.get(participant.id)
        if old is not None:
            old.room = old.participant = None
            old.outlet.send(Goodbye(reason="replaced"))
            old.outlet.close(CloseCode.NORMAL, "resumed on another connection")
            self.media.leave(participant.id)
        self._forget(participant)
        participant.resume_token = new_resume_token()
        session.room, session.participant = room, participant
        self._by_participant[participant.id] = session
        PARTICIPANT.set(participant.id)
        deliveries = room.reconnect(participant.id)
        self._welcome(room, participant, resumed=True)
        self._apply(deliveries)
        return True

    def _detach(
        self, session: Session, room: Room, participant: Participant, reason: LeaveReason
    ) -> None:
        """Keep a participant whose connection was lost, without media, for the grace period."""
        session.room = session.participant = None
        self._by_participant.pop(participant.id, None)
        self.media.leave(participant.id)
        self._away[participant.id] = asyncio.get_running_loop().call_later(
            self.settings.resume_grace, self._expire, room, participant, reason
        )
        self._apply(room.disconnect(participant.id))
        log.info(
            "participant reconnecting", extra={"room": room.name, "participant": participant.id}
        )

    def _expire(self, room: Room, participant: Participant, reason: LeaveReason) -> None:
        """The grace period ran out: the participant leaves for good, for the reason its
        connection was lost."""
        self._away.pop(participant.id, None)
        if participant.id in room and participant.reconnecting:
            self._remove(room, participant, reason)

    def _welcome(self, room: Room, participant: Participant, *, resumed: bool = False) -> None:
        session = self._by_participant.get(participant.id)
        if session is None:
            return
        self._resumable[participant.resume_token] = (room, participant)
        ice_servers = client_ice_servers(self.settings, participant.id, now=self._clock())
        self.stats.turn_credentials += sum(1 for server in ice_servers if server.credential)
        session.outlet.send(
            Welcome(
                version=PROTOCOL_VERSION,
                participant_id=participant.id,
                room=room.name,
                participants=[p.info() for p in room.participants],
                ice_servers=ice_servers,
                ice_transport_policy=self.settings.ice_transport_policy,
                resume_token=participant.resume_token,
                resumed=resumed,
                settings=room.settings,
                chat=room.chat_history,
                active_speaker=self._speakers.get(room.name),
            )
        )
        self.media.join(room.name, participant.id, session.receive_codecs)
        self.media.set_forwarding(
            participant.id,
            audio=participant.audio,
            video=participant.video,
            screen=participant.screen,
        )
        log.info(
            "participant resumed" if resumed else "participant joined",
            extra={"room": room.name, "participant": participant.id, "size": len(room)},
        )

    def _welcome_all(self, room: Room, admitted: Iterable[Participant]) -> None:
        for participant in admitted:
            self._welcome(room, participant)

    def _dismiss(
        self, participant: Participant, reason: Literal["removed", "denied", "ended", "replaced"]
    ) -> None:
        """Say goodbye to someone the room let go of, and close its connection."""
        self._forget(participant)
        session = self._by_participant.pop(participant.id, None)
        self.media.leave(participant.id)
        if session is None:
            return
        session.room = session.participant = None
        session.outlet.send(Goodbye(reason=reason))
        session.outlet.close(CloseCode.NORMAL, reason)
        log.info("participant dismissed", extra={"participant": participant.id, "reason": reason})

    def _leave(self, session: Session, reason: LeaveReason) -> None:
        room, participant = session.room, session.participant
        if room is None or participant is None:
            return
        session.room = session.participant = None
        self._by_participant.pop(participant.id, None)
        self._remove(room, participant, reason)

    def _remove(self, room: Room, participant: Participant, reason: LeaveReason) -> None:
        """Take a participant (or a waiting person) out of its room for good."""
        self._forget(participant)
        self.media.leave(participant.id)
        # The last one out leaves nobody to admit those in the lobby: they are turned away.
        stranded = room.waiting if len(room) == 1 and participant.id in room else []
        deliveries = room.leave(participant.id, reason, now=self._clock())
        for waiting in stranded:
            self._dismiss(waiting, "denied")
        self._apply(deliveries)
        log.info(
            "participant left",
            extra={"room": room.name, "participant": participant.id, "reason": reason},
        )
        self.sweep()

    def _forget(self, participant: Participant) -> None:
        """The participant can no longer resume."""
        self._resumable.pop(participant.resume_token, None)
        handle = self._away.pop(participant.id, None)
        if handle is not None:
            handle.cancel()

    def _present(self, session: Session) -> tuple[Room, Participant]:
        if session.room is None or session.participant is None:
            raise ProtocolError("send 'hello' first", code=ErrorCode.NOT_JOINED)
        return session.room, session.participant

    def _admitted(self, session: Session) -> tuple[Room, Participant]:
        room, participant = self._present(session)
        if participant.id not in room:
            raise ProtocolError(
                "you are waiting in the lobby until a moderator admits you",
                code=ErrorCode.NOT_ADMITTED,
            )
        return room, participant

    def _apply(self, deliveries: list[Delivery]) -> None:
        """Deliver, and make media forwarding follow the state of everyone it updates."""
        self._deliver(deliveries)
        for delivery in deliveries:
            if isinstance(delivery.message, ParticipantUpdated):
                info = delivery.message.participant
                self.media.set_forwarding(
                    info.id, audio=info.audio, video=info.video, screen=info.screen
                )

    def _speaker_changed(self, room: str, participant_id: str | None) -> None:
        name = RoomName(room)
        self._speakers[name] = participant_id
        current = self.rooms.get(name)
        if current is not None:
            ids = tuple(p.id for p in current.participants)
            self._deliver([Delivery(ids, ActiveSpeaker(participant_id=participant_id))])

    def _send_to(self, participant_id: str, message: ServerMessage) -> None:
        target = self._by_participant.get(ParticipantId(participant_id))
        if target is not None:
            target.outlet.send(message)

    def _deliver(self, deliveries: Iterable[Delivery]) -> None:
        for delivery in deliveries:
            text: str | None = None  # encoded once for the whole room
            for pid in delivery.to:
                target = self._by_participant.get(pid)
                if target is not None:
                    text = text or encode(delivery.message)
                    target.outlet.send_text(text)


def _target(participant_id: str | None) -> ParticipantId | None:
    """The one person a lobby decision names (``None``: everyone, with ``all``)."""
    return ParticipantId(participant_id) if participant_id else None
