"""All rooms of one server: created on first join, dropped once empty for a grace period."""

from __future__ import annotations

from veche.ids import RoomName
from veche.rooms.room import Delivery, Participant, Room

__all__ = ["RoomRegistry"]


class RoomRegistry:
    """Rooms by normalised name.

    ``capacity`` bounds each room; ``grace`` is how many seconds an empty room (and, later, its
    chat history and settings) survives so that a participant who drops out and returns finds it.
    """

    def __init__(self, *, capacity: int, grace: float) -> None:
        self.capacity = capacity
        self.grace = grace
        self._rooms: dict[RoomName, Room] = {}

    def __len__(self) -> int:
        return len(self._rooms)

    def __contains__(self, name: object) -> bool:
        return name in self._rooms

    def get(self, name: RoomName) -> Room | None:
        """The room called ``name``, if it exists."""
        return self._rooms.get(name)

    @property
    def participant_count(self) -> int:
        """Participants across all rooms."""
        return sum(len(room) for room in self._rooms.values())

    def join(
        self, name: RoomName, display_name: str, *, now: float
    ) -> tuple[Room, Participant, list[Delivery]]:
        """Join ``name``, creating the room if needed. Raises :class:`~veche.errors.RoomFull`."""
        room = self._rooms.get(name)
        if room is None:
            room = Room(name, capacity=self.capacity, now=now)
            self._rooms[name] = room
        participant, deliveries = room.join(display_name, now=now)
        return room, participant, deliveries

    def sweep(self, *, now: float) -> list[RoomName]:
        """Drop rooms that have been empty for at least the grace period; return their names."""
        expired = [
            name
            for name, room in self._rooms.items()
            if room.empty_since is not None and now - room.empty_since >= self.grace
        ]
        for name in expired:
            del self._rooms[name]
        return expired
