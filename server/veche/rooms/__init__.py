"""Pure room logic: names, participants, lobby, chat, moderation, who receives what. No sockets,
no media, no clock reads.

Callers pass ``now`` (seconds) explicitly, so tests drive time by hand.
"""

from veche.rooms.chat import MAX_CHAT_LENGTH, ChatLog
from veche.rooms.limits import AttemptLimiter
from veche.rooms.names import clean_display_name, generate_room_name, normalize_room_name
from veche.rooms.participant import Participant
from veche.rooms.policy import PasswordHash, RoomPolicy, hash_password
from veche.rooms.record import RoomRecord, member_keys
from veche.rooms.registry import RoomRegistry
from veche.rooms.room import Delivery, GoodbyeReason, Guests, Outcome, Room

__all__ = [
    "MAX_CHAT_LENGTH",
    "AttemptLimiter",
    "ChatLog",
    "Delivery",
    "GoodbyeReason",
    "Guests",
    "Outcome",
    "Participant",
    "PasswordHash",
    "Room",
    "RoomPolicy",
    "RoomRecord",
    "RoomRegistry",
    "clean_display_name",
    "generate_room_name",
    "hash_password",
    "member_keys",
    "normalize_room_name",
]
