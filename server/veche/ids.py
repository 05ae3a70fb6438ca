"""Typed identifiers and the generators that make them.

Every identifier a client sees is chosen by the server. Participant ids and resume tokens come from
``secrets``, so guessing one is as hard as guessing a random 72- or 192-bit number.
"""

from __future__ import annotations

import secrets
from typing import NewType

__all__ = [
    "ParticipantId",
    "ResumeToken",
    "RoomName",
    "new_participant_id",
    "new_resume_token",
]

ParticipantId = NewType("ParticipantId", str)
"""Server-assigned id of one participant in one room, e.g. ``p-Xb3k9QmTzA1w``."""

RoomName = NewType("RoomName", str)
"""A validated, normalised room name (see :func:`veche.rooms.names.normalize_room_name`)."""

ResumeToken = NewType("ResumeToken", str)
"""A secret that lets a participant resume its identity after a dropped connection."""


def new_participant_id() -> ParticipantId:
    """Return a fresh participant id with 72 random bits."""
    return ParticipantId("p-" + secrets.token_urlsafe(9))


def new_resume_token() -> ResumeToken:
    """Return a fresh resume token with 192 random bits."""
    return ResumeToken(secrets.token_urlsafe(24))
