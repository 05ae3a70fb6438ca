"""What of a room outlives the process: its record (settings, who moderates, who may return)
and its chat, as stored between restarts (``veche.roomstore``).

People are remembered by a *member key* that they present again after a restart, never by their
participant id (a new one is drawn on every join): ``sub:<subject>`` for someone who joined
with a token (or signed in), else ``tok:<sha256 of its current resume token>``. The resume token
itself is never stored, nor the browser session (removed sessions are kept as hashes too).
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from veche.protocol import Role

__all__ = ["RoomRecord", "member_keys", "session_key"]


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def member_keys(*, subject: str | None, resume_token: str | None) -> list[str]:
    """The keys someone presenting ``subject`` (a token's identity) and ``resume_token`` may be
    remembered by, the subject's first."""
    keys = [f"sub:{subject}"] if subject else []
    if resume_token:
        keys.append(f"tok:{_digest(resume_token)}")
    return keys


def session_key(session: str) -> str:
    """How a removed browser session is kept."""
    return _digest(session)


class RoomRecord(BaseModel):
    """One room's lasting state. ``members`` are the member keys of everyone admitted and not
    gone for good, with their role; ``host`` the host's key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    locked: bool = False
    lobby: bool = False
    moderator_must_allow: bool = False
    password_salt: str | None = Field(None, description="hex")
    password_digest: str | None = Field(None, description="hex")
    host: str | None = None
    members: dict[str, Role] = Field(default_factory=dict)
    banned: list[str] = Field(default_factory=list)
