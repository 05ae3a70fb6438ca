"""All rooms of one server: created on first join, dropped once empty for a grace period."""

from __future__ import annotations

from typing import Final

from veche.errors import ErrorCode, Refused
from veche.ids import RoomName
from veche.protocol import ChatEntry
from veche.rooms.limits import AttemptLimiter
from veche.rooms.participant import Participant
from veche.rooms.policy import PasswordHash
from veche.rooms.record import RoomRecord
from veche.rooms.room import Guests, Outcome, Room

JOIN_ATTEMPTS: Final = 5
"""Refused joins (wrong password, locked...) one address may have at one room name per
``JOIN_WINDOW``: what is guessed is that room's password, so other rooms stay open to the
address (many people may share it behind one NAT)."""
JOIN_WINDOW: Final = 60.0

__all__ = ["RoomRegistry"]


class RoomRegistry:
    """Rooms by normalised name.

    ``capacity`` bounds each room's participants and ``max_waiting`` its lobby; ``grace`` is how
    many seconds an empty room (and, later, its chat history and settings) survives so that a
    participant who drops out and returns finds it.
    """

    def __init__(
        self,
        *,
        capacity: int,
        grace: float,
        max_waiting: int = 50,
        hosted: Guests | None = None,
    ) -> None:
        self.capacity = capacity
        self.hosted: Guests | None = hosted
        """Every room's :attr:`Room.hosted` (a server whose hosts sign in)."""
        self.max_waiting = max_waiting
        self.grace = grace
        self._rooms: dict[RoomName, Room] = {}
        self._attempts = AttemptLimiter(limit=JOIN_ATTEMPTS, window=JOIN_WINDOW)

    def __len__(self) -> int:
        return len(self._rooms)

    def __contains__(self, name: object) -> bool:
        return name in self._rooms

    def get(self, name: RoomName) -> Room | None:
        """The room called ``name``, if it exists."""
        return self._rooms.get(name)

    @property
    def names(self) -> list[RoomName]:
        """Every room's name."""
        return list(self._rooms)

    @property
    def participant_count(self) -> int:
        """Participants across all rooms."""
        return sum(len(room) for room in self._rooms.values())

    def check_attempts(self, name: RoomName, *, address: str, now: float) -> None:
        """Raise :class:`~veche.errors.Refused` with ``rate_limited`` if ``address`` has had
        ``JOIN_ATTEMPTS`` refused joins at ``name`` within ``JOIN_WINDOW`` (so a password
        need not be hashed for an attempt that would be refused anyway)."""
        if self._attempts.blocked((name, address), now=now):
            raise Refused(
                "too many refused attempts to join this meeting from your address; wait a minute",
                code=ErrorCode.RATE_LIMITED,
            )

    def join(
        self,
        name: RoomName,
        display_name: str,
        *,
        now: float,
        password: PasswordHash | None = None,
        password_given: bool = False,
        session: str | None = None,
        address: str = "?",
        subject: str | None = None,
        moderator: bool = False,
        signed_in: bool = False,
    ) -> tuple[Room, Participant, Outcome]:
        """Join ``name``, creating the room if needed (unless a password is given: a password
        names an existing room). ``password`` is the given password hashed with the room's
        ``policy.salt`` (by the caller, off the event loop); ``password_given`` says one was
        given when the room needs none. Raises :class:`~veche.errors.RoomFull`, and
        :class:`~veche.errors.Refused` with ``room_unavailable`` (locked, wrong password,
        removed, or no such room: one answer for all) or ``rate_limited`` after too many
        refusals at this room from one address."""
        self.check_attempts(name, address=address, now=now)
        room = self._rooms.get(name)
        if room is None and password is None and not password_given:
            room = Room(
                name,
                capacity=self.capacity,
                now=now,
                max_waiting=self.max_waiting,
                hosted=self.hosted,
            )
            self._rooms[name] = room
        if room is None or not room.admits(password, session):
            self._attempts.record((name, address), now=now)
            raise Refused(
                "this meeting cannot be joined: it may be locked, need another password, or "
                "not exist",
                code=ErrorCode.ROOM_UNAVAILABLE,
            )
        participant, outcome = room.join(
            display_name,
            now=now,
            session=session,
            subject=subject,
            moderator=moderator,
            signed_in=signed_in,
        )
        return room, participant, outcome

    def restore(
        self, name: RoomName, record: RoomRecord, chat: list[ChatEntry], *, now: float
    ) -> Room:
        """Bring back a room kept from before a restart (see :meth:`Room.restored`), empty
        since ``now``: it is dropped after the grace period unless someone comes back."""
        room = Room.restored(
            name,
            record,
            chat,
            capacity=self.capacity,
            now=now,
            max_waiting=self.max_waiting,
            hosted=self.hosted,
        )
        self._rooms[name] = room
        return room

    def drop(self, name: RoomName) -> None:
        """Forget a room at once (its meeting was ended)."""
        self._rooms.pop(name, None)

    def sweep(self, *, now: float) -> list[RoomName]:
        """Drop rooms that have been empty for at least the grace period, and refused-join
        counts past their window; return the rooms' names."""
        expired = [
            name
            for name, room in self._rooms.items()
            if room.empty_since is not None and now - room.empty_since >= self.grace
        ]
        for name in expired:
            del self._rooms[name]
        self._attempts.sweep(now=now)
        return expired
