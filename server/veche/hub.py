"""The hub: routes client messages to rooms and media, and room outcomes to connections.

It knows connections only through the small :class:`Outlet` interface (queue a message, ask for a
close), so it never touches a socket and the signalling edge stays the only writer. Every change
to a room comes back as an :class:`~veche.rooms.Outcome` that :meth:`Hub._apply` carries out, and
every end of a participant's presence goes through :meth:`Hub._release`
(``docs/lifecycle.md`` writes the cascade down).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, Literal, assert_never

from veche.auth import Identity
from veche.errors import ErrorCode, ProtocolError, Refused, VecheError
from veche.ice import client_ice_servers
from veche.ids import ParticipantId, RoomName, new_resume_token
from veche.links import LinkSigner, node_key
from veche.logs import PARTICIPANT
from veche.media import MediaConfig, MediaRooms
from veche.outlet import Outlet
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
    ChatPosted,
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
    IceServers,
    Leave,
    LeaveReason,
    Moderate,
    ModerateAll,
    Offer,
    ParticipantUpdated,
    Ping,
    Pong,
    React,
    Record,
    RecordingFile,
    RecordingReady,
    ScreenShare,
    ServerMessage,
    Update,
    View,
    Waiting,
    Welcome,
    encode,
)
from veche.recordings import RecordingLimits, Recordings
from veche.resumption import Resumption
from veche.rooms import (
    Delivery,
    GoodbyeReason,
    Guests,
    Outcome,
    Participant,
    PasswordHash,
    Room,
    RoomRecord,
    RoomRegistry,
    clean_display_name,
    hash_password,
    member_keys,
    normalize_room_name,
)
from veche.roomstore import NoStore, RoomKeeper, RoomStore
from veche.session import HubStats, Session
from veche.settings import Settings
from veche.workpool import PoolFull, WorkPool

__all__ = ["Hub"]

log = logging.getLogger(__name__)

RESUMABLE: Final[frozenset[LeaveReason]] = frozenset({"timeout", "slow"})
"""Connection losses after which a participant is kept for ``resume_grace`` seconds: nobody said
goodbye (a close frame or ``leave`` means the client chose to go)."""

FAREWELL_MIN: Final = 60.0
"""Seconds at least that a client ended by the server (removed, the meeting ended) is told so if
it comes back with its resume token (see :meth:`Resumption.farewell`)."""
RECORDING_LINK_TTL: Final = 86400.0
"""Seconds a recording's download links work."""

HASH_THREADS: Final = 2
"""Threads that hash passwords, off the event loop (scrypt releases the GIL)."""
HASH_QUEUE: Final = 8
"""Password hashes running or waiting at once, server-wide; one more is refused with
``rate_limited`` rather than queued behind a flood."""

Why = LeaveReason | Literal["denied"]
"""Why a presence ends: a :data:`~veche.protocol.LeaveReason`, or ``denied`` for someone turned
away from the lobby (who never joined, so nobody hears it leave)."""


class Hub:
    """All sessions of this server, the rooms they are in and their media.

    Raises :class:`~veche.errors.VecheError` from :meth:`handle` for any refused request; the
    caller turns it into an ``error`` reply.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        media: MediaConfig,
        store: RoomStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.media = MediaRooms(media, self._send_to, on_speaker=self._speaker_changed)
        self.rooms = RoomRegistry(
            capacity=settings.max_participants,
            grace=settings.empty_room_grace,
            max_waiting=settings.max_waiting,
            hosted=_hosted(settings),
        )
        self._clock = clock
        self._sessions: set[Session] = set()
        self._by_participant: dict[ParticipantId, Session] = {}
        self._present: set[ParticipantId] = set()
        """Everyone joined, waiting or away: whom :meth:`_release` may still release."""
        self._resumption = Resumption()
        self.keeper = RoomKeeper(store or NoStore(), self._record_of, chat=settings.room_state_chat)
        self._loading: dict[RoomName, asyncio.Event] = {}
        """Rooms being read from the store (a second ``hello`` waits for the first read)."""
        self._hashing = WorkPool(threads=HASH_THREADS, limit=HASH_QUEUE)
        self.links = LinkSigner(node_key(Path(settings.data_dir)))
        self.stats = HubStats()
        recording_dir = settings.recording_dir
        self.recordings = Recordings(
            Path(recording_dir) if recording_dir is not None else None,
            self.media,
            clock,
            limits=RecordingLimits(
                seconds=settings.recording_max_seconds,
                size=settings.recording_max_bytes,
                concurrent=settings.recording_max_concurrent,
            ),
            on_limit=self._recording_limit,
            on_written=self._recording_written,
        )

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
        if room is None or participant is None:
            return
        keep = reason in RESUMABLE and self.settings.resume_grace > 0 and participant.id in room
        self._release(room, participant, reason, keep=keep)

    async def handle(self, session: Session, message: ClientMessage) -> None:
        """Act on one parsed client message; one with an ``id`` that was done gets ``ack``."""
        self.stats.messages[message.type] += 1
        try:
            await self._dispatch(session, message)
        except VecheError as exc:
            exc.ref = exc.ref or message.id
            raise
        if isinstance(message, Configure | Moderate | ModerateAll | Chat):
            await self.keeper.flush()  # acknowledged means kept: a restart keeps it
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
                await self._hello(session, message)
            case Leave():
                room, me = self._present_in(session)
                self._release(room, me, "left")
                session.outlet.close(CloseCode.NORMAL, "left")
            case Update():
                room, me = self._admitted(session)
                self._apply(room, room.update(me.id, audio=message.audio, video=message.video))
            case Offer() | Answer() | Candidate():
                _, me = self._admitted(session)
                await self.media.handle(me.id, message)
            case Chat():
                room, me = self._admitted(session)
                self._apply(room, room.post(me.id, message.text, now=now, to=message.to))
            case Hand():
                room, me = self._admitted(session)
                self._apply(room, room.raise_hand(me.id, message.raised, now=now))
            case React():
                room, me = self._admitted(session)
                self._apply(room, room.react(me.id, message.emoji, now=now))
            case ScreenShare():
                room, me = self._admitted(session)
                self._apply(room, room.share_screen(me.id, message.active))
            case Moderate():
                room, me = self._admitted(session)
                target = ParticipantId(message.participant_id)
                self._apply(room, room.moderate(me.id, message.action, target, now=now))
            case Configure():
                room, me = self._admitted(session)
                room.allow_configure(me.id, now=now)
                password: PasswordHash | Literal[""] | None = None
                if message.password == "":
                    password = ""
                elif message.password is not None:
                    password = await self._hash(message.password)
                    room, me = self._admitted(session)  # still there after the wait?
                outcome = room.configure(
                    me.id,
                    locked=message.locked,
                    lobby=message.lobby,
                    password=password,
                    moderator_must_allow=message.moderator_must_allow,
                )
                self._apply(room, outcome)
            case Admit():
                room, me = self._admitted(session)
                target_id = _target(message.participant_id)
                self._apply(room, room.admit(me.id, target_id, everyone=message.all))
            case Deny():
                room, me = self._admitted(session)
                target_id = _target(message.participant_id)
                self._apply(room, room.deny(me.id, target_id, everyone=message.all))
            case Record():
                room, me = self._admitted(session)
                self._record(room, me.id, message.active, audio_only=message.audio_only)
            case EndMeeting():
                room, me = self._admitted(session)
                self._end(room, room.end(me.id), by=me.id)
            case ModerateAll():
                room, me = self._admitted(session)
                self._apply(room, room.moderate_all(me.id, message.action))
            case View():
                _, me = self._admitted(session)
                shown: dict[tuple[str, str], tuple[int, int]] = {
                    (t.participant_id, t.source): (t.width, t.height) for t in message.tiles
                }
                self.media.set_view(me.id, shown)
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
        if room is None or participant_id not in room:
            return False
        self._apply(room, room.expel(participant_id, now=self._clock()))
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
        """Wait for background work (recordings and room state being written) to end."""
        self._hashing.close()
        await self.recordings.finish()
        await self.keeper.close()

    async def restore_all(self) -> None:
        """Bring back every room the store keeps from before a restart (a store that brings
        rooms back only when asked keeps none here): each waits, empty, for its people for
        ``empty_room_grace``."""
        for name in await self.keeper.names():
            await self._restore(name)

    async def _restore(self, name: RoomName) -> None:
        """Bring ``name`` back from the store unless it is here already (or does not exist)."""
        if name in self.rooms:
            return
        loading = self._loading.get(name)
        if loading is not None:
            await loading.wait()
            return
        self._loading[name] = loading = asyncio.Event()
        try:
            stored = await self.keeper.load(name)
            if stored is not None and name not in self.rooms:
                room = self.rooms.restore(name, stored.record, stored.chat, now=self._clock())
                log.info("room restored", extra={"room": name})
                if room.expecting_moderator:
                    asyncio.get_running_loop().call_later(
                        self.settings.resume_grace, self._stop_expecting, room
                    )
        finally:
            del self._loading[name]
            loading.set()

    def _stop_expecting(self, room: Room) -> None:
        """The moderators from before the restart had the resume grace to come back."""
        if self.rooms.get(room.name) is room and room.expecting_moderator:
            self._apply(room, room.stop_expecting())

    def _record_of(self, name: RoomName) -> RoomRecord | None:
        room = self.rooms.get(name)
        return room.record() if room is not None and not room.ended else None

    def _record(
        self, room: Room, actor: ParticipantId | None, active: bool, *, audio_only: bool
    ) -> Path | None:
        """Start or stop recording (``actor``: the moderator, ``None`` for the admin API); the
        recording's folder while it records."""
        self.recordings.check()
        person = room.get(actor) if actor is not None else None
        anonymous = person is not None and person.subject is None
        if active and anonymous and not self.settings.recording_anonymous:
            raise Refused(
                "on this server only a moderator who joined with a token may record",
                code=ErrorCode.FORBIDDEN,
            )
        before = room.settings.recording
        outcome = room.set_recording(actor, active)
        if before != active and active:

            def name_of(participant_id: str) -> str:
                participant = room.get(ParticipantId(participant_id))
                return participant.name if participant is not None else "?"

            try:
                self.recordings.start(room.name, audio_only=audio_only, names=name_of)
            except Refused:
                room.set_recording(None, False)  # nothing is recorded: say so to nobody
                raise
        elif before != active:
            self.recordings.stop(room.name)
        self._apply(room, outcome)
        return self.recordings.directory(room.name)

    def _may_record(self, participant: Participant) -> bool:
        """Whether ``participant`` (as a moderator) could start a recording on this server."""
        settings = self.settings
        anonymous_ok = settings.recording_anonymous or participant.subject is not None
        return settings.recording_dir is not None and anonymous_ok

    def _recording_limit(self, name: RoomName, reason: str) -> None:
        """A recording reached a limit: it stops as if a moderator stopped it, and the
        moderators are told why."""
        room = self.rooms.get(name)
        if room is None or not room.settings.recording:
            self.recordings.stop(name)
            return
        self._record(room, None, False, audio_only=False)
        moderators = tuple(p.id for p in room.participants if p.moderator)
        error = Error(
            code=ErrorCode.RECORDING_LIMIT, message=f"the recording was stopped: {reason}"
        )
        self._deliver([Delivery(moderators, error)])

    def _recording_written(self, name: RoomName, directory: Path) -> None:
        """A recording of ``name`` is written: the moderators present get its files, each with
        a download link of its own."""
        room = self.rooms.get(name)
        if room is None:
            return
        now = self._clock()
        files = [
            RecordingFile(
                name=path.name,
                url=self.links.link(
                    f"/recordings/{directory.name}/{path.name}", now=now, ttl=RECORDING_LINK_TTL
                ),
                bytes=path.stat().st_size,
            )
            for path in sorted(directory.iterdir())
            if path.is_file() and not path.name.startswith(".")
        ]
        moderators = tuple(p.id for p in room.participants if p.moderator)
        ready = RecordingReady(recording=directory.name, files=files)
        self._deliver([Delivery(moderators, ready)])

    def _end(self, room: Room, outcome: Outcome, *, by: str) -> None:
        self.recordings.stop(room.name)
        self._apply(room, outcome)
        self.rooms.drop(room.name)
        self.keeper.dropped(room.name)
        log.info("meeting ended", extra={"room": room.name, "by": by})

    def shutdown(self) -> None:
        """Ask every connection to close with 1001 and stop every recording (its files are
        written in the background: see :meth:`finish`)."""
        self.keeper.freeze()
        self.recordings.stop_all()
        self._resumption.clear()
        for session in list(self._sessions):
            session.outlet.close(CloseCode.GOING_AWAY, "server shutting down")

    def sweep(self) -> None:
        """Drop rooms that have stayed empty for the grace period."""
        for name in self.rooms.sweep(now=self._clock()):
            self.recordings.stop(name)
            self.keeper.dropped(name)
            log.info("room dropped", extra={"room": name})

    # ------------------------------------------------------------------ joining

    async def _hello(self, session: Session, hello: Hello) -> None:
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
        if identity is None and self.settings.oidc and self.settings.oidc_guests == "deny":
            raise Refused(
                "on this server only signed-in people may join; sign in first",
                code=ErrorCode.SIGN_IN_REQUIRED,
            )
        session.receive_codecs = hello.receive_codecs
        if hello.resume is not None:
            goodbye = self._resumption.goodbye_for(hello.resume, now=self._clock())
            if goodbye is not None:
                _let_go(session, goodbye, "came back after it was ended")
                return
            if self._resume(session, hello.resume, name):
                return
        await self._restore(name)
        if session not in self._sessions or session.participant is not None:
            return  # the connection went (or joined) while the room was read
        if self._return(session, hello, name):
            return
        self.rooms.check_attempts(name, address=session.remote, now=self._clock())
        attempt = None
        guarded = self.rooms.get(name)
        salt = guarded.policy.salt if guarded is not None else None
        if hello.password is not None:
            # Hashed even for a room without a password, or none at all, so that the time of the
            # answer does not tell a wrong password from a room that does not exist.
            attempt = await self._hash(hello.password, salt)
            if session not in self._sessions or session.participant is not None:
                return  # the connection went (or joined) while the password was hashed
        if identity is not None:
            self._replace(identity, name)
        new_room = name not in self.rooms
        room, participant, outcome = self.rooms.join(
            name,
            clean_display_name(_display_name(identity, hello)),
            now=self._clock(),
            password=attempt,
            password_given=hello.password is not None,
            session=session.browser_session,
            address=session.remote,
            subject=identity.subject if identity else None,
            moderator=identity.moderator if identity else False,
            signed_in=identity is not None,
        )
        self._attach(session, room, participant)
        if new_room:
            log.info("room created", extra={"room": room.name})
        if participant.id not in room:
            session.outlet.send(Waiting(for_host=room.awaits_host(participant.id)))
            log.info(
                "participant waiting", extra={"room": room.name, "participant": participant.id}
            )
        self._apply(room, outcome)
        self._apply(room, room.host_arrived())

    async def _hash(self, password: str, salt: bytes | None = None) -> PasswordHash:
        """``password`` hashed (with ``salt``, else a fresh one) in a worker thread, so the
        event loop keeps serving every other meeting meanwhile. Raises
        :class:`~veche.errors.Refused` with ``rate_limited`` when the hashing threads have
        ``HASH_QUEUE`` hashes to do already."""
        try:
            return await self._hashing.run(lambda: hash_password(password, salt))
        except PoolFull:
            raise Refused(
                "the server is busy checking passwords; try again in a moment",
                code=ErrorCode.RATE_LIMITED,
            ) from None

    def _attach(self, session: Session, room: Room, participant: Participant) -> None:
        session.room, session.participant = room, participant
        self._by_participant[participant.id] = session
        self._present.add(participant.id)
        PARTICIPANT.set(participant.id)

    def _replace(self, identity: Identity, name: RoomName) -> None:
        """A second connection of one identity replaces the first (also one that is away)."""
        room = self.rooms.get(name)
        if room is None:
            return
        for participant in room.participants:
            if participant.subject == identity.subject:
                self._release(room, participant, "replaced")

    def _resume(self, session: Session, token: str, name: RoomName) -> bool:
        """Bring back the participant ``token`` names, if it is still in room ``name`` (and of
        the same token identity): its old connection, if the server still holds one, is let go
        and its media starts afresh. False if there is nobody to resume."""
        found = self._resumption.find(token)
        if found is None:
            return False
        room, participant = found
        subject = session.identity.subject if session.identity else None
        if room.name != name or participant.id not in room or participant.subject != subject:
            return False
        old = self._by_participant.get(participant.id)
        if old is not None:
            _let_go(old, "replaced", "resumed on another connection")
            self.media.leave(participant.id)
        self._resumption.forget(participant)
        participant.resume_token = new_resume_token()
        self._attach(session, room, participant)
        outcome = room.reconnect(participant.id)
        self._welcome(room, participant, resumed=True)
        self._apply(room, outcome)
        return True

    def _return(self, session: Session, hello: Hello, name: RoomName) -> bool:
        """Bring back someone the room remembers from before a restart (by its token's
        subject or its last resume token): as itself, without password or lobby; a
        moderator is a moderator again. False if the room does not remember it."""
        room = self.rooms.get(name)
        identity = session.identity
        if room is None:
            return False
        keys = member_keys(
            subject=identity.subject if identity else None, resume_token=hello.resume
        )
        key = room.remembered_key(keys, session.browser_session)
        if key is None:
            return False
        participant, outcome = room.rejoin(
            key,
            clean_display_name(_display_name(identity, hello)),
            now=self._clock(),
            session=session.browser_session,
            subject=identity.subject if identity else None,
            moderator=identity.moderator if identity else False,
            signed_in=identity is not None,
        )
        self._attach(session, room, participant)
        log.info("participant returned", extra={"room": room.name, "participant": participant.id})
        self._apply(room, outcome)
        self._apply(room, room.host_arrived())
        return True

    def _welcome(self, room: Room, participant: Participant, *, resumed: bool = False) -> None:
        session = self._by_participant.get(participant.id)
        if session is None:
            return
        self._resumption.offer(room, participant)
        ice_servers = self._credentials(session, participant)
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
                chat=room.chat_history_for(participant),
                can_record=self._may_record(participant),
                active_speaker=self.media.speaker(room.name),
            )
        )
        if participant.moderator and room.waiting:
            # The lobby as it stands, after the welcome (a moderator let in, or back).
            for delivery in room.lobby_update():
                session.outlet.send(delivery.message)
        self.media.join(room.name, participant.id, session.receive_codecs, address=session.remote)
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

    def _credentials(self, session: Session, participant: Participant) -> list[IceServer]:
        """The ICE servers for ``participant``, with TURN credentials that last ``turn_ttl``."""
        now = self._clock()
        servers = client_ice_servers(self.settings, participant.id, now=now)
        given = sum(1 for server in servers if server.credential)
        self.stats.turn_credentials += given
        session.credentials_until = now + self.settings.turn_ttl if given else None
        return servers

    def refresh_credentials(self) -> None:
        """Everyone in a room whose TURN credentials are past half their life gets fresh ones
        (``ice_servers``): credentials last as long as the participant stays (and ``turn_ttl``
        after it leaves), not a fixed long time."""
        half = self.settings.turn_ttl / 2
        now = self._clock()
        for session in list(self._sessions):
            until, participant = session.credentials_until, session.participant
            if until is None or participant is None or until - now > half:
                continue
            session.outlet.send(IceServers(ice_servers=self._credentials(session, participant)))

    # ------------------------------------------------------------------ leaving

    def _release(
        self, room: Room, participant: Participant, why: Why, *, keep: bool = False
    ) -> None:
        """The one way a presence ends: its connection (told ``goodbye`` if the server ends
        it), its media, its resume token, its place in the room (the others hear it). With
        ``keep`` (a lost connection), the participant stays in the room, ``reconnecting``, for
        the resume grace instead, and is released when that runs out. Does nothing for someone
        already released."""
        if participant.id not in self._present:
            return
        session = self._by_participant.pop(participant.id, None)
        goodbye = _goodbye(why)
        if session is not None:
            _let_go(session, goodbye, why)
        if goodbye is not None and participant.resume_token:
            now = self._clock()
            until = now + max(self.settings.resume_grace, FAREWELL_MIN)
            self._resumption.farewell(participant.resume_token, goodbye, until=until, now=now)
        self.media.leave(participant.id)
        if keep:
            self._resumption.hold(
                participant,
                self.settings.resume_grace,
                lambda: self._expire(room, participant, why),
            )
            self._apply(room, room.disconnect(participant.id))
            log.info(
                "participant reconnecting",
                extra={"room": room.name, "participant": participant.id},
            )
            return
        self._present.discard(participant.id)
        self._resumption.forget(participant)
        # Someone turned away from the lobby never joined: nobody hears a reason.
        reason: LeaveReason = "left" if why == "denied" else why
        self._apply(room, room.leave(participant.id, reason, now=self._clock()))
        log.info(
            "participant left",
            extra={"room": room.name, "participant": participant.id, "reason": why},
        )
        self.sweep()

    def _expire(self, room: Room, participant: Participant, why: Why) -> None:
        """The resume grace ran out: the participant leaves for good, for the reason its
        connection was lost."""
        if participant.id in room and participant.reconnecting:
            self._release(room, participant, why)

    # ------------------------------------------------------------------ internals

    def _present_in(self, session: Session) -> tuple[Room, Participant]:
        if session.room is None or session.participant is None:
            raise ProtocolError("send 'hello' first", code=ErrorCode.NOT_JOINED)
        return session.room, session.participant

    def _admitted(self, session: Session) -> tuple[Room, Participant]:
        room, participant = self._present_in(session)
        if participant.id not in room:
            raise ProtocolError(
                "you are waiting in the lobby until a moderator admits you",
                code=ErrorCode.NOT_ADMITTED,
            )
        return room, participant

    def _apply(self, room: Room, outcome: Outcome) -> None:
        """Carry out a room change: let go of the dismissed, deliver the messages (media
        forwarding follows every participant state they carry), welcome the admitted."""
        for person, goodbye in outcome.dismissed:
            self._release(room, person, goodbye)
        self._deliver(outcome.deliveries)
        for delivery in outcome.deliveries:
            if isinstance(delivery.message, ParticipantUpdated):
                info = delivery.message.participant
                self.media.set_forwarding(
                    ParticipantId(info.id), audio=info.audio, video=info.video, screen=info.screen
                )
        for person in outcome.admitted:
            self._welcome(room, person)
        for delivery in outcome.deliveries:
            if isinstance(delivery.message, ChatPosted):
                self.keeper.posted(room.name, delivery.message.entry)
        if not room.ended:
            self.keeper.changed(room.name)

    def _speaker_changed(self, room: RoomName, participant_id: str | None) -> None:
        current = self.rooms.get(room)
        if current is not None:
            ids = tuple(p.id for p in current.participants)
            self._deliver([Delivery(ids, ActiveSpeaker(participant_id=participant_id))])

    def session_of(self, participant_id: ParticipantId) -> Session | None:
        """The connection a participant of this node's rooms is on now, if any."""
        return self._by_participant.get(participant_id)

    def _send_to(self, participant_id: ParticipantId, message: ServerMessage) -> None:
        target = self._by_participant.get(participant_id)
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


def _let_go(session: Session, goodbye: GoodbyeReason | None, why: str) -> None:
    """Detach a connection from its participant; with ``goodbye``, tell it why and close it."""
    participant = session.participant
    session.room = session.participant = None
    if goodbye is not None:
        session.outlet.send(Goodbye(reason=goodbye))
        session.outlet.close(CloseCode.NORMAL, goodbye)
        if participant is not None:
            log.info("participant dismissed", extra={"participant": participant.id, "reason": why})


def _goodbye(why: Why) -> GoodbyeReason | None:
    """The ``goodbye`` that ends a presence the server ends (none when the client went)."""
    match why:
        case "removed" | "denied" | "ended" | "replaced":
            return why
        case _:
            return None


def _hosted(settings: Settings) -> Guests | None:
    """What rooms give those who may not host, when hosts sign in (``deny`` is the hub's: it
    turns away those not signed in before they reach a room)."""
    if not settings.oidc:
        return None
    return "allow" if settings.oidc_guests == "deny" else settings.oidc_guests


def _display_name(identity: Identity | None, hello: Hello) -> str:
    """The token's or provider's name, or the one the client chose where that may change."""
    if identity is None or (identity.name_editable and hello.name.strip()):
        return hello.name
    return identity.name


def _target(participant_id: str | None) -> ParticipantId | None:
    """The one person a lobby decision names (``None``: everyone, with ``all``)."""
    return ParticipantId(participant_id) if participant_id else None
