"""A person in a room (or waiting in its lobby)."""

from __future__ import annotations

from dataclasses import dataclass, field

from veche.ids import ParticipantId, ResumeToken, new_participant_id, new_resume_token
from veche.protocol import ParticipantInfo, Role, WaitingInfo
from veche.ratelimit import TokenBucket
from veche.rooms.record import member_keys

__all__ = ["Participant"]


@dataclass(slots=True, eq=False)
class Participant:
    """A person in a room. ``id`` and ``resume_token`` are server-chosen random values;
    ``session`` is the browser session it came from (to refuse a removed person's return);
    ``subject`` the identity of its join token, if any. ``reconnecting`` while its connection is
    lost and it may still resume."""

    name: str
    joined_at: float
    id: ParticipantId = field(default_factory=new_participant_id)
    resume_token: ResumeToken = field(default_factory=new_resume_token)
    session: str | None = None
    subject: str | None = None
    signed_in: bool = False
    """Whether it signed in (with the identity provider, or a join token)."""
    role: Role = "participant"
    audio: bool = True
    video: bool = True
    screen: bool = False
    audio_blocked: bool = False
    hand_raised_at: float | None = None
    reactions: TokenBucket | None = None
    """Its reactions' rate limit, from its first reaction on."""
    reconnecting: bool = False

    @property
    def moderator(self) -> bool:
        """Whether this participant moderates the room."""
        return self.role == "moderator"

    @property
    def key(self) -> str:
        """The member key it is remembered by across a restart (see ``veche.rooms.record``):
        its token's subject, else its current resume token's hash."""
        return member_keys(subject=self.subject, resume_token=self.resume_token)[0]

    def info(self) -> ParticipantInfo:
        """The public view of this participant."""
        return ParticipantInfo(
            id=self.id,
            name=self.name,
            role=self.role,
            audio=self.audio,
            video=self.video,
            screen=self.screen,
            hand_raised_at=self.hand_raised_at,
            audio_blocked=self.audio_blocked,
            joined_at=self.joined_at,
            reconnecting=self.reconnecting,
            signed_in=self.signed_in,
        )

    def waiting_info(self) -> WaitingInfo:
        """The view moderators get of this participant while it waits in the lobby."""
        return WaitingInfo(id=self.id, name=self.name, since=self.joined_at)
