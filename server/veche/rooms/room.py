"""One meeting room: its participants and who hears about what.

Every mutating method returns the :class:`Delivery` list that the caller must send; the room never
touches a socket, so the rules of who receives what are tested without one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from veche.errors import RoomFull
from veche.ids import (
    ParticipantId,
    ResumeToken,
    RoomName,
    new_participant_id,
    new_resume_token,
)
from veche.protocol import (
    LeaveReason,
    ParticipantInfo,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    ServerMessage,
)

__all__ = ["Delivery", "Participant", "Room"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """Send ``message`` to each participant in ``to``."""

    to: tuple[ParticipantId, ...]
    message: ServerMessage


@dataclass(slots=True)
class Participant:
    """A person in a room. ``id`` and ``resume_token`` are server-chosen secrets-grade values."""

    name: str
    joined_at: float
    id: ParticipantId = field(default_factory=new_participant_id)
    resume_token: ResumeToken = field(default_factory=new_resume_token)
    audio: bool = True
    video: bool = True

    def info(self) -> ParticipantInfo:
        """The public view of this participant."""
        return ParticipantInfo(
            id=self.id,
            name=self.name,
            audio=self.audio,
            video=self.video,
            joined_at=self.joined_at,
        )


class Room:
    """Participants of one meeting, in order of joining.

    ``empty_since`` is the time the last participant left, or ``None`` while anyone is present;
    the registry drops the room once it has been empty for the grace period.
    """

    def __init__(self, name: RoomName, *, capacity: int, now: float) -> None:
        self.name = name
        self.capacity = capacity
        self.created_at = now
        self.empty_since: float | None = now
        self._participants: dict[ParticipantId, Participant] = {}

    def __len__(self) -> int:
        return len(self._participants)

    def __contains__(self, participant_id: object) -> bool:
        return participant_id in self._participants

    @property
    def participants(self) -> list[Participant]:
        """Everyone present, oldest first."""
        return list(self._participants.values())

    def get(self, participant_id: ParticipantId) -> Participant | None:
        """The participant with that id, if present."""
        return self._participants.get(participant_id)

    def join(self, name: str, *, now: float) -> tuple[Participant, list[Delivery]]:
        """Add a participant called ``name`` (already cleaned). Raises
        :class:`~veche.errors.RoomFull`. Tells everyone else ``participant_joined``."""
        if len(self._participants) >= self.capacity:
            raise RoomFull(f"the room is full ({self.capacity} participants)")
        participant = Participant(name=name, joined_at=now)
        while participant.id in self._participants:  # pragma: no cover - 72 random bits
            participant = Participant(name=name, joined_at=now)
        others = self._ids_except(None)
        self._participants[participant.id] = participant
        self.empty_since = None
        joined = ParticipantJoined(participant=participant.info())
        return participant, _deliver(others, joined)

    def leave(
        self, participant_id: ParticipantId, reason: LeaveReason, *, now: float
    ) -> list[Delivery]:
        """Remove a participant (no-op if absent). Tells everyone left ``participant_left``."""
        if self._participants.pop(participant_id, None) is None:
            return []
        if not self._participants:
            self.empty_since = now
        left = ParticipantLeft(participant_id=participant_id, reason=reason)
        return _deliver(self._ids_except(None), left)

    def update(
        self, participant_id: ParticipantId, *, audio: bool | None, video: bool | None
    ) -> list[Delivery]:
        """Change a participant's microphone/camera state. Tells everyone, the participant
        included, ``participant_updated``; nothing if nothing changed."""
        participant = self._participants.get(participant_id)
        if participant is None:
            return []
        changed = False
        if audio is not None and audio != participant.audio:
            participant.audio, changed = audio, True
        if video is not None and video != participant.video:
            participant.video, changed = video, True
        if not changed:
            return []
        updated = ParticipantUpdated(participant=participant.info())
        return _deliver(self._ids_except(None), updated)

    def _ids_except(self, excluded: ParticipantId | None) -> tuple[ParticipantId, ...]:
        return tuple(pid for pid in self._participants if pid != excluded)


def _deliver(to: tuple[ParticipantId, ...], message: ServerMessage) -> list[Delivery]:
    return [Delivery(to, message)] if to else []
