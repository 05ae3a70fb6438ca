"""Pure room logic: names, participants, who receives what. No sockets, no media, no clock reads.

Callers pass ``now`` (seconds) explicitly, so tests drive time by hand.
"""

from veche.rooms.names import clean_display_name, generate_room_name, normalize_room_name
from veche.rooms.registry import RoomRegistry
from veche.rooms.room import Delivery, Participant, Room

__all__ = [
    "Delivery",
    "Participant",
    "Room",
    "RoomRegistry",
    "clean_display_name",
    "generate_room_name",
    "normalize_room_name",
]
