"""One meeting room: its participants, lobby, chat and settings, and who hears about what.

Every mutating method returns an :class:`Outcome`: the messages the caller must deliver, the
people let in from the lobby (to welcome) and the people let go of (to say goodbye to); it raises
:class:`~veche.errors.Refused` or :class:`~veche.errors.RoomFull` when a rule says no. The room
never touches a socket, so the rules of who may do and receive what are tested without one.
A person waiting in the lobby is not a participant: it receives nothing about the room, and it
does not take a place (``capacity``) until let in; the lobby has a bound of its own
(``max_waiting``), so people waiting can neither fill a room nor grow without end.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, Self

from veche.errors import ErrorCode, Refused, RoomFull
from veche.ids import ParticipantId, RoomName
from veche.protocol import (
    Asked,
    ChatAudience,
    ChatEntry,
    ChatPosted,
    LeaveReason,
    LobbyUpdated,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    Reacted,
    Reaction,
    Role,
    RoomState,
    RoomUpdated,
    ServerMessage,
    Waiting,
)
from veche.ratelimit import TokenBucket
from veche.rooms.chat import ChatLog
from veche.rooms.participant import Participant
from veche.rooms.policy import PasswordHash, RoomPolicy
from veche.rooms.record import RoomRecord, session_key

__all__ = ["Delivery", "GoodbyeReason", "Outcome", "Participant", "Room"]

REACTION_RATE: Final = 1.0
"""Reactions per second one participant may send on average."""
REACTION_BURST: Final = 5
"""Reactions one participant may send at once: a few quick ones are how people react (four in
two seconds is ordinary), a steady stream is spam."""
CONFIGURE_RATE: Final = 1.0
"""Setting changes per second one room may make on average (each may hash a password)."""
CONFIGURE_BURST: Final = 5
"""Setting changes one room may make at once."""

ModeratorAction = Literal[
    "mute", "camera_off", "allow_unmute", "ask_unmute", "lower_hand", "remove", "make_moderator"
]

GoodbyeReason = Literal["removed", "denied", "ended", "replaced"]
"""Why the room lets someone go (the ``goodbye`` they hear)."""

Guests = Literal["allow", "lobby", "host-first"]
"""What a room whose hosts sign in gives everyone else: ``allow`` (enter as usual), ``lobby``
(wait until a moderator admits them), ``host-first`` (wait until a moderator is present, then
enter)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """Send ``message`` to each participant in ``to``."""

    to: tuple[ParticipantId, ...]
    message: ServerMessage


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a change to a room asks of the caller, in this order: let go of ``dismissed``
    (each told ``goodbye`` with its reason and disconnected), deliver ``deliveries``, and
    welcome ``admitted`` (let in from the lobby, or entered on joining)."""

    deliveries: tuple[Delivery, ...] = ()
    admitted: tuple[Participant, ...] = ()
    dismissed: tuple[tuple[Participant, GoodbyeReason], ...] = ()

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome(
            self.deliveries + other.deliveries,
            self.admitted + other.admitted,
            self.dismissed + other.dismissed,
        )


def _sent(deliveries: list[Delivery]) -> Outcome:
    return Outcome(tuple(deliveries))


class Room:
    """Participants of one meeting, in order of joining, and the people in its lobby.

    ``empty_since`` is the time the last participant left, or ``None`` while anyone is present;
    the registry drops the room once it has been empty for the grace period.

    ``hosted`` (``None``: nobody signs in) makes it a room whose hosts sign in: only those who
    join as moderators (the hosts) moderate, nobody is ever made moderator for being first or
    left, and the others get what ``hosted`` says (:data:`Guests`). People waiting for a host
    keep such a room from being dropped, even with nobody present.
    """

    def __init__(
        self,
        name: RoomName,
        *,
        capacity: int,
        now: float,
        max_waiting: int = 50,
        hosted: Guests | None = None,
    ) -> None:
        self.name = name
        self.hosted: Guests | None = hosted
        self.capacity = capacity
        self.max_waiting = max_waiting
        self.created_at = now
        self.empty_since: float | None = now
        self.policy = RoomPolicy()
        self._configure_bucket = TokenBucket(rate=CONFIGURE_RATE, burst=CONFIGURE_BURST, now=now)
        self.chat = ChatLog()
        self.ended = False
        self._participants: dict[ParticipantId, Participant] = {}
        self._waiting: dict[ParticipantId, Participant] = {}
        self._awaiting_host: set[ParticipantId] = set()
        """Those waiting (``host-first``) for a moderator to be present, not for admission."""
        self._banned_sessions: set[str] = set()
        """Removed browser sessions, as :func:`~veche.rooms.record.session_key` hashes."""
        self.host_id: ParticipantId | None = None
        """The room's first moderator while present (then the longest-present moderator): the
        moderators it promotes cannot remove it."""
        self._remembered: dict[str, Role] = {}
        """Member keys (and roles) of people present before a restart and not back yet."""
        self._remembered_host: str | None = None
        """The host's member key while the host is remembered but not back."""

    @classmethod
    def restored(
        cls,
        name: RoomName,
        record: RoomRecord,
        chat: list[ChatEntry],
        *,
        capacity: int,
        now: float,
        max_waiting: int = 50,
        hosted: Guests | None = None,
    ) -> Self:
        """The room as it was before a restart, empty: its settings, password, removed
        sessions and chat are back, and its members may return (:meth:`rejoin`). While a
        remembered moderator may still come back, nobody else is made moderator in its place
        (see :meth:`stop_expecting`)."""
        room = cls(name, capacity=capacity, now=now, max_waiting=max_waiting, hosted=hosted)
        policy = room.policy
        policy.locked, policy.lobby = record.locked, record.lobby
        policy.moderator_must_allow = record.moderator_must_allow
        if record.password_salt is not None and record.password_digest is not None:
            policy.password = PasswordHash(
                bytes.fromhex(record.password_salt), bytes.fromhex(record.password_digest)
            )
        room._remembered = dict(record.members)
        room._remembered_host = record.host
        room._banned_sessions = set(record.banned)
        room.chat = ChatLog(chat)
        return room

    def record(self) -> RoomRecord:
        """What of this room must outlive the process (the chat aside)."""
        members = dict(self._remembered)
        members.update((p.key, p.role) for p in self._participants.values())
        host = self._participants.get(self.host_id) if self.host_id is not None else None
        password = self.policy.password
        return RoomRecord(
            locked=self.policy.locked,
            lobby=self.policy.lobby,
            moderator_must_allow=self.policy.moderator_must_allow,
            password_salt=password.salt.hex() if password else None,
            password_digest=password.digest.hex() if password else None,
            host=host.key if host is not None else self._remembered_host,
            members=members,
            banned=sorted(self._banned_sessions),
        )

    @property
    def expecting_moderator(self) -> bool:
        """Whether a moderator from before a restart may still come back."""
        return "moderator" in self._remembered.values()

    def __len__(self) -> int:
        return len(self._participants)

    def __contains__(self, participant_id: object) -> bool:
        return participant_id in self._participants

    @property
    def participants(self) -> list[Participant]:
        """Everyone present, oldest first."""
        return list(self._participants.values())

    @property
    def waiting(self) -> list[Participant]:
        """Everyone in the lobby, oldest first."""
        return list(self._waiting.values())

    @property
    def settings(self) -> RoomState:
        """The settings as participants see them."""
        return self.policy.state()

    @property
    def chat_history(self) -> list[ChatEntry]:
        """The chat messages a newcomer receives."""
        return self.chat.entries

    def get(self, participant_id: ParticipantId) -> Participant | None:
        """The participant with that id, if present (not waiting)."""
        return self._participants.get(participant_id)

    # ------------------------------------------------------------------ entering and leaving

    def admits(self, password: PasswordHash | None, session: str | None) -> bool:
        """Whether someone outside may enter (or wait): not locked, not removed, the right
        password (``password``: the one given, hashed with ``policy.salt``). The caller
        answers every refusal the same way."""
        if self.ended or self.policy.locked:
            return False
        if session is not None and session_key(session) in self._banned_sessions:
            return False
        return self.policy.password_matches(password)

    def remembered_key(self, keys: list[str], session: str | None) -> str | None:
        """The first of ``keys`` (see :func:`~veche.rooms.record.member_keys`) that names
        someone remembered from before a restart, unless its browser session was removed."""
        if self.ended or (session is not None and session_key(session) in self._banned_sessions):
            return None
        return next((key for key in keys if key in self._remembered), None)

    def rejoin(
        self,
        key: str,
        name: str,
        *,
        now: float,
        session: str | None = None,
        subject: str | None = None,
        moderator: bool = False,
        signed_in: bool = False,
    ) -> tuple[Participant, Outcome]:
        """Bring back someone remembered by ``key`` (found by :meth:`remembered_key`): it was
        admitted before the restart, so it enters without password, lock or lobby, with the
        role it had (``moderator``, from a token, makes it one anyway); the host is the host
        again. Raises :class:`~veche.errors.RoomFull`."""
        if len(self._participants) >= self.capacity:
            raise RoomFull(f"the room is full ({self.capacity} participants)")
        role = self._remembered.pop(key)
        participant = Participant(
            name=name, joined_at=now, session=session, subject=subject, signed_in=signed_in
        )
        participant.role = "moderator" if moderator else role
        deliveries = self._enter(participant)
        if key == self._remembered_host:
            self._remembered_host, self.host_id = None, participant.id
        return participant, Outcome(tuple(deliveries), (participant,))

    def stop_expecting(self) -> Outcome:
        """The moderators remembered from before a restart had their time to come back: from
        now on they are remembered as participants, and a room without a moderator makes its
        longest-present participant one (and its host). An empty room lets its first waiting
        person in, who becomes moderator and admits the others."""
        self._remembered = dict.fromkeys(self._remembered, "participant")
        self._remembered_host = None
        if self.hosted is not None:
            return Outcome()  # only hosts moderate: nobody inherits the role
        if not self._participants:
            return self._admit(list(self._waiting)[:1])
        if any(p.moderator for p in self._participants.values()):
            if self.host_id is None:
                self.host_id = next(p.id for p in self._participants.values() if p.moderator)
            return Outcome()
        heir = next(iter(self._participants.values()))
        heir.role = "moderator"
        if self.host_id is None:
            self.host_id = heir.id
        return _sent(self._updated(heir) + self._lobby_update())

    def join(
        self,
        name: str,
        *,
        now: float,
        session: str | None = None,
        subject: str | None = None,
        moderator: bool = False,
        signed_in: bool = False,
    ) -> tuple[Participant, Outcome]:
        """Add someone called ``name`` (already cleaned and let in by :meth:`admits`).

        With the lobby on and someone present, the newcomer waits (``participant.id`` not in
        the room) and the moderators hear ``lobby_updated``; otherwise it enters (it is in the
        outcome's ``admitted``): the others hear ``participant_joined``, and a room without a
        moderator makes it one (``moderator``, from a token, makes it one and skips the lobby).
        Raises :class:`~veche.errors.RoomFull` when the room holds ``capacity`` participants
        (entering) or the lobby ``max_waiting`` people (waiting).
        """
        # Nobody present could admit a waiting person, unless a moderator is expected back.
        present = bool(self._participants) or self.expecting_moderator
        waits = not moderator and self.policy.lobby and present
        for_host = False
        if self.hosted is not None and not moderator:
            host_here = any(p.moderator for p in self._participants.values())
            for_host = self.hosted == "host-first" and not host_here
            waits = self.hosted == "lobby" or for_host or self.policy.lobby
        if waits and len(self._waiting) >= self.max_waiting:
            raise RoomFull(f"the lobby is full ({self.max_waiting} people waiting)")
        if not waits and len(self._participants) >= self.capacity:
            raise RoomFull(f"the room is full ({self.capacity} participants)")
        participant = Participant(
            name=name, joined_at=now, session=session, subject=subject, signed_in=signed_in
        )
        if moderator:
            participant.role = "moderator"  # granted by a token: no lobby either
        elif waits:
            self._waiting[participant.id] = participant
            if for_host:
                self._awaiting_host.add(participant.id)
            self.empty_since = None if self.hosted is not None else self.empty_since
            return participant, _sent(self._lobby_update())
        return participant, Outcome(tuple(self._enter(participant)), (participant,))

    def awaits_host(self, participant_id: ParticipantId) -> bool:
        """Whether this waiting person waits for a host to be present (``host-first``), not
        for a moderator's admission."""
        return participant_id in self._awaiting_host

    def host_arrived(self) -> Outcome:
        """Call after someone entered (once its welcome is out): if a moderator is present,
        those waiting for a host enter (as long as there is room), unless the room's lobby is
        on, where they wait for the moderator's admission now."""
        if not self._awaiting_host or not any(p.moderator for p in self._participants.values()):
            return Outcome()
        waiting = [pid for pid in self._waiting if pid in self._awaiting_host]
        self._awaiting_host.clear()
        if self.policy.lobby:
            # They wait for admission now, and are told so.
            return _sent(_deliver(tuple(waiting), Waiting()) + self._lobby_update())
        return self._admit(waiting[: self.capacity - len(self._participants)])

    def _enter(self, participant: Participant) -> list[Delivery]:
        others = self._ids()
        if (
            self.hosted is None
            and not self.expecting_moderator
            and not any(p.moderator for p in self._participants.values())
        ):
            participant.role = "moderator"
        self._participants[participant.id] = participant
        if self.host_id is None and participant.moderator and self._remembered_host is None:
            self.host_id = participant.id
        self.empty_since = None
        return _deliver(others, ParticipantJoined(participant=participant.info()))

    def leave(self, participant_id: ParticipantId, reason: LeaveReason, *, now: float) -> Outcome:
        """Remove a participant or a waiting person (no-op if absent). Those remaining hear
        ``participant_left``; if no moderator is left, the longest-present participant becomes
        one; if nobody is left, those waiting are turned away (nobody could admit them)."""
        if self._waiting.pop(participant_id, None) is not None:
            self._awaiting_host.discard(participant_id)
            if self.hosted is not None and not self._participants and not self._waiting:
                self.empty_since = now
            return _sent(self._lobby_update())
        participant = self._participants.pop(participant_id, None)
        if participant is None:
            return Outcome()
        deliveries = _deliver(
            self._ids(), ParticipantLeft(participant_id=participant_id, reason=reason)
        )
        if not self._participants and self.hosted is not None:
            # Those waiting wait for a host, who may come: the room stays while they do.
            self.host_id = None
            self.empty_since = None if self._waiting else now
            return Outcome(tuple(deliveries))
        if not self._participants:
            self.empty_since = now
            self.host_id = None
            stranded = tuple((person, "denied") for person in self._waiting.values())
            self._waiting.clear()
            return Outcome(tuple(deliveries), dismissed=stranded)  # type: ignore[arg-type]
        orphaned = not any(p.moderator for p in self._participants.values())
        if participant.moderator and orphaned and not self.expecting_moderator and not self.hosted:
            heir = next(iter(self._participants.values()))
            heir.role = "moderator"
            deliveries += self._updated(heir)
            deliveries += self._lobby_update()
        if participant_id == self.host_id:
            self.host_id = next((p.id for p in self._participants.values() if p.moderator), None)
        return _sent(deliveries)

    def disconnect(self, participant_id: ParticipantId) -> Outcome:
        """A participant's connection was lost: it stays, marked ``reconnecting`` (and no longer
        sharing a screen, whose track went with the connection), until it resumes or leaves."""
        participant = self._require(participant_id)
        participant.reconnecting, participant.screen = True, False
        return _sent(self._updated(participant))

    def reconnect(self, participant_id: ParticipantId) -> Outcome:
        """A participant resumed after a lost connection."""
        participant = self._require(participant_id)
        participant.reconnecting = False
        return _sent(self._updated(participant))

    # ------------------------------------------------------------------ own state

    def update(
        self, participant_id: ParticipantId, *, audio: bool | None, video: bool | None
    ) -> Outcome:
        """Change one's own microphone/camera state. Everyone, the participant included, hears
        ``participant_updated``; nothing if nothing changed. Unmuting while blocked by a
        moderator is ``forbidden``."""
        participant = self._require(participant_id)
        if audio and participant.audio_blocked:
            raise Refused(
                "a moderator muted you; ask a moderator to allow you to unmute",
                code=ErrorCode.FORBIDDEN,
            )
        changed = False
        if audio is not None and audio != participant.audio:
            participant.audio, changed = audio, True
        if video is not None and video != participant.video:
            participant.video, changed = video, True
        return _sent(self._updated(participant) if changed else [])

    def raise_hand(self, participant_id: ParticipantId, raised: bool, *, now: float) -> Outcome:
        """Raise or lower one's hand; hands are ordered by ``hand_raised_at``."""
        participant = self._require(participant_id)
        if raised == (participant.hand_raised_at is not None):
            return Outcome()
        participant.hand_raised_at = now if raised else None
        return _sent(self._updated(participant))

    def react(self, participant_id: ParticipantId, emoji: Reaction, *, now: float) -> Outcome:
        """Show a reaction to everyone; ``REACTION_BURST`` at once, then ``REACTION_RATE`` a
        second per participant."""
        participant = self._require(participant_id)
        if participant.reactions is None:
            participant.reactions = TokenBucket(rate=REACTION_RATE, burst=REACTION_BURST, now=now)
        if not participant.reactions.take(now=now):
            raise Refused("too many reactions; slow down", code=ErrorCode.RATE_LIMITED)
        return _sent(_deliver(self._ids(), Reacted(participant_id=participant_id, emoji=emoji)))

    def post(
        self,
        participant_id: ParticipantId,
        text: str,
        *,
        now: float,
        to: ChatAudience = "everyone",
    ) -> Outcome:
        """Post a chat message to everyone, or (``to="moderators"``) to the moderators only;
        the sender gets it too."""
        participant = self._require(participant_id)
        entry = self.chat.post(participant_id, participant.name, text, now=now, to=to)
        readers = self._ids() if to == "everyone" else self._readers_of(entry)
        return _sent(_deliver(readers, ChatPosted(entry=entry)))

    def chat_history_for(self, participant: Participant) -> list[ChatEntry]:
        """The kept chat messages ``participant`` may read: those to everyone, and those to the
        moderators if it is one (or wrote them)."""
        return [e for e in self.chat.entries if participant.id in self._readers_of(e)]

    def _readers_of(self, entry: ChatEntry) -> tuple[ParticipantId, ...]:
        if entry.to == "everyone":
            return self._ids()
        return tuple(
            p.id for p in self._participants.values() if p.moderator or p.id == entry.participant_id
        )

    def share_screen(self, participant_id: ParticipantId, active: bool) -> Outcome:
        """Start or stop sharing a screen; one sharer at a time (``screen_busy``)."""
        participant = self._require(participant_id)
        if active and any(p.screen for p in self._participants.values() if p is not participant):
            raise Refused("someone else is sharing a screen", code=ErrorCode.SCREEN_BUSY)
        if participant.screen == active:
            return Outcome()
        participant.screen = active
        return _sent(self._updated(participant))

    # ------------------------------------------------------------------ moderation

    def moderate(
        self,
        actor_id: ParticipantId,
        action: ModeratorAction,
        target_id: ParticipantId,
        *,
        now: float,
    ) -> Outcome:
        """A moderator's action on a participant (``remove`` lets it go: see :meth:`expel`)."""
        actor = self._require_moderator(actor_id)
        target = self._participants.get(target_id)
        if target is None:
            raise Refused("no such participant in this room", code=ErrorCode.NOT_FOUND)
        if action == "remove" and target_id == self.host_id and actor_id != self.host_id:
            raise Refused(
                "the host cannot be removed by another moderator", code=ErrorCode.FORBIDDEN
            )
        if action == "remove":
            return self.expel(target_id, now=now)
        if action == "mute":
            target.audio = False
            target.audio_blocked = self.policy.moderator_must_allow
        elif action == "camera_off":
            target.video = False
        elif action in ("allow_unmute", "ask_unmute"):
            target.audio_blocked = False
        elif action == "lower_hand":
            target.hand_raised_at = None
        elif action == "make_moderator":
            target.role = "moderator"
        deliveries = self._updated(target)
        if action == "ask_unmute":
            deliveries.append(Delivery((target.id,), Asked(request="unmute", by=actor.name)))
        if action == "make_moderator":
            deliveries += self._lobby_update()
        return _sent(deliveries)

    def moderate_all(
        self, actor_id: ParticipantId, action: Literal["mute", "lower_hand"]
    ) -> Outcome:
        """A moderator mutes every participant who is not a moderator (as ``mute`` one by one),
        or lowers every raised hand; everyone hears each change."""
        self._require_moderator(actor_id)
        deliveries: list[Delivery] = []
        for person in self._participants.values():
            if action == "mute" and not person.moderator:
                blocked = self.policy.moderator_must_allow
                if not person.audio and person.audio_blocked == blocked:
                    continue
                person.audio, person.audio_blocked = False, blocked
            elif action == "lower_hand" and person.hand_raised_at is not None:
                person.hand_raised_at = None
            else:
                continue
            deliveries += self._updated(person)
        return _sent(deliveries)

    def allow_configure(self, actor_id: ParticipantId, *, now: float) -> None:
        """Spend one of the room's setting changes (``CONFIGURE_BURST`` at once, then
        ``CONFIGURE_RATE`` a second), before a new password is hashed and :meth:`configure`
        is called. Raises :class:`~veche.errors.Refused` (``forbidden``: not a moderator, and
        ``rate_limited`` when the room changes its settings too often)."""
        self._require_moderator(actor_id)
        if not self._configure_bucket.take(now=now):
            raise Refused(
                f"this room's settings may change at most {CONFIGURE_RATE:g} times a second; "
                "wait a moment",
                code=ErrorCode.RATE_LIMITED,
            )

    def configure(
        self,
        actor_id: ParticipantId,
        *,
        locked: bool | None = None,
        lobby: bool | None = None,
        password: PasswordHash | Literal[""] | None = None,
        moderator_must_allow: bool | None = None,
    ) -> Outcome:
        """A moderator changes settings (after :meth:`allow_configure`); everyone hears
        ``room_updated``. ``password`` is the new password's hash, ``""`` to remove it, or
        ``None`` to keep it. Turning the lobby off lets everyone waiting in (``admitted``),
        oldest first as long as there is room; the others keep waiting for a moderator."""
        self._require_moderator(actor_id)
        policy = self.policy
        if locked is not None:
            policy.locked = locked
        if moderator_must_allow is not None:
            policy.moderator_must_allow = moderator_must_allow
        if password is not None:
            policy.password = password or None
        if lobby is not None:
            policy.lobby = lobby
        outcome = _sent(_deliver(self._ids(), RoomUpdated(settings=policy.state())))
        if not policy.lobby and self._waiting:
            outcome += self._admit(list(self._waiting)[: self.capacity - len(self._participants)])
        return outcome

    def set_recording(self, actor_id: ParticipantId | None, active: bool) -> Outcome:
        """Mark the room as recorded or not (a moderator, or ``None``: an administrator or the
        server); everyone hears ``room_updated``, nothing if nothing changed."""
        if actor_id is not None:
            self._require_moderator(actor_id)
        if self.policy.recording == active:
            return Outcome()
        self.policy.recording = active
        return _sent(_deliver(self._ids(), RoomUpdated(settings=self.policy.state())))

    def admit(
        self, actor_id: ParticipantId, target_id: ParticipantId | None, *, everyone: bool
    ) -> Outcome:
        """A moderator lets waiting people in (``admitted``), oldest first as long as there is
        room; raises :class:`~veche.errors.RoomFull` when there is none."""
        self._require_moderator(actor_id)
        targets = self._lobby_targets(target_id, everyone)
        places = self.capacity - len(self._participants)
        if places <= 0:
            raise RoomFull(f"the room is full ({self.capacity} participants)")
        return self._admit(targets[:places])

    def deny(
        self, actor_id: ParticipantId, target_id: ParticipantId | None, *, everyone: bool
    ) -> Outcome:
        """A moderator turns waiting people away (``dismissed``, ``denied``)."""
        self._require_moderator(actor_id)
        denied = [self._waiting.pop(pid) for pid in self._lobby_targets(target_id, everyone)]
        self._awaiting_host.difference_update(p.id for p in denied)
        return Outcome(tuple(self._lobby_update()), dismissed=tuple((p, "denied") for p in denied))

    def expel(self, target_id: ParticipantId, *, now: float) -> Outcome:
        """Remove a participant (a moderator's or an administrator's decision): it is let go
        (``removed``), the others hear ``participant_left``, and its browser session cannot
        come back. Nothing if it is not present."""
        target = self._participants.get(target_id)
        if target is None:
            return Outcome()
        if target.session is not None:
            self._banned_sessions.add(session_key(target.session))
        return Outcome(dismissed=((target, "removed"),)) + self.leave(target_id, "removed", now=now)

    def end(self, actor_id: ParticipantId) -> Outcome:
        """A moderator ends the meeting: see :meth:`close`."""
        self._require_moderator(actor_id)
        return self.close()

    def close(self) -> Outcome:
        """End the meeting: everyone, present and waiting, is let go (``ended``). The room
        admits nobody afterwards."""
        self.ended = True
        everyone = self.participants + self.waiting
        self._participants.clear()
        self._waiting.clear()
        self._awaiting_host.clear()
        return Outcome(dismissed=tuple((person, "ended") for person in everyone))

    # ------------------------------------------------------------------ helpers

    def _admit(self, ids: Iterable[ParticipantId]) -> Outcome:
        # Those already present hear of each newcomer; the newcomers learn of each other from
        # their welcome, so nothing reaches them before it.
        present = self._ids()
        admitted = []
        for pid in ids:
            participant = self._waiting.pop(pid)
            self._awaiting_host.discard(pid)
            self._enter(participant)
            admitted.append(participant)
        deliveries = [
            delivery
            for participant in admitted
            for delivery in _deliver(present, ParticipantJoined(participant=participant.info()))
        ]
        return Outcome(tuple(deliveries + self._lobby_update()), tuple(admitted))

    def _lobby_targets(
        self, target_id: ParticipantId | None, everyone: bool
    ) -> list[ParticipantId]:
        if everyone:
            return list(self._waiting)
        if target_id is None or target_id not in self._waiting:
            raise Refused("nobody with that id is waiting", code=ErrorCode.NOT_FOUND)
        return [target_id]

    def _require(self, participant_id: ParticipantId) -> Participant:
        participant = self._participants.get(participant_id)
        if participant is None:
            raise Refused("you are not in the room", code=ErrorCode.NOT_ADMITTED)
        return participant

    def _require_moderator(self, participant_id: ParticipantId) -> Participant:
        participant = self._require(participant_id)
        if not participant.moderator:
            raise Refused("only a moderator may do that", code=ErrorCode.FORBIDDEN)
        return participant

    def _updated(self, participant: Participant) -> list[Delivery]:
        return _deliver(self._ids(), ParticipantUpdated(participant=participant.info()))

    def lobby_update(self) -> list[Delivery]:
        """``lobby_updated`` (who is waiting) for every moderator present."""
        return self._lobby_update()

    def _lobby_update(self) -> list[Delivery]:
        moderators = tuple(p.id for p in self._participants.values() if p.moderator)
        waiting = [p.waiting_info() for p in self._waiting.values()]
        return _deliver(moderators, LobbyUpdated(waiting=waiting))

    def _ids(self) -> tuple[ParticipantId, ...]:
        return tuple(self._participants)


def _deliver(to: tuple[ParticipantId, ...], message: ServerMessage) -> list[Delivery]:
    return [Delivery(to, message)] if to else []
