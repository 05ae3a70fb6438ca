"""Room and display names: validation, normalisation and generation.

Room names appear in URLs (``/r/<room>``), logs and later in Redis keys, so they pass an
allow-list rather than a block-list: after NFKC normalisation and lower-casing, only letters,
combining marks, digits and ``-`` ``_`` ``.`` are allowed, 1 to 64 characters, not made of dots
alone. That rejects path separators, percent-encoding, spaces, control, format (zero-width, bidi)
and markup characters in one rule.
"""

from __future__ import annotations

import secrets
import unicodedata
from typing import Final

from veche.errors import InvalidRoomName
from veche.ids import RoomName

__all__ = ["clean_display_name", "generate_room_name", "normalize_room_name"]

MAX_ROOM_NAME: Final = 64
MAX_DISPLAY_NAME: Final = 64
DEFAULT_DISPLAY_NAME: Final = "Guest"

_ALLOWED_CATEGORIES: Final = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Nd"})
_ALLOWED_PUNCTUATION: Final = frozenset("-_.")
# No 0/o, 1/l/i or u: 30 symbols, so 20 of them carry 98 bits.
_ALPHABET: Final = "23456789abcdefghjkmnpqrstvwxyz"
_GROUPS: Final = 5
_GROUP_LEN: Final = 4


def normalize_room_name(raw: str) -> RoomName:
    """Return the canonical form of ``raw`` or raise :class:`~veche.errors.InvalidRoomName`.

    Canonical means NFKC-normalised and lower-cased, so ``Team``, ``TEAM`` and full-width
    ``TEAM`` are one room.
    """
    name = unicodedata.normalize("NFKC", raw).lower()
    name = unicodedata.normalize("NFKC", name)
    if not name:
        raise InvalidRoomName("the room name is empty")
    if len(name) > MAX_ROOM_NAME:
        raise InvalidRoomName(f"the room name is longer than {MAX_ROOM_NAME} characters")
    for char in name:
        if char in _ALLOWED_PUNCTUATION:
            continue
        if unicodedata.category(char) not in _ALLOWED_CATEGORIES:
            raise InvalidRoomName(
                f"the room name may hold only letters, digits, '-', '_' and '.' "
                f"(found U+{ord(char):04X})"
            )
    if set(name) == {"."}:
        raise InvalidRoomName("the room name cannot be made of dots only")
    return RoomName(name)


def generate_room_name() -> RoomName:
    """Return a fresh meeting name such as ``k7dm-q2xa-9fzt-bw4e-h3pn`` (98 random bits)."""
    groups = ("".join(secrets.choice(_ALPHABET) for _ in range(_GROUP_LEN)) for _ in range(_GROUPS))
    return RoomName("-".join(groups))


def clean_display_name(raw: str) -> str:
    """Return ``raw`` fit to show others: NFKC, control and format characters removed, white
    space collapsed, at most 64 characters; ``Guest`` when nothing is left."""
    text = unicodedata.normalize("NFKC", raw)
    kept = (
        " " if char.isspace() else char
        for char in text
        if char.isspace() or unicodedata.category(char)[0] != "C"
    )
    name = " ".join("".join(kept).split())[:MAX_DISPLAY_NAME].strip()
    return name or DEFAULT_DISPLAY_NAME
