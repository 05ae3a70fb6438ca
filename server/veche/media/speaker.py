"""Who is speaking, from the audio levels (RFC 6464) publishers put in their RTP headers.

Nothing is decoded: each audio packet carries the level of the sound it encodes, in -dBov
(0 loudest, 127 silence). Levels are smoothed per participant; the speaker changes when someone
else is clearly louder, or the current speaker has been quiet for a while.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["SpeakerDetector"]

SPEECH_LEVEL: Final = 55.0
"""Smoothed level (-dBov) below which someone counts as speaking (about -55 dBov)."""
SMOOTHING: Final = 0.2
"""Weight of each new packet's level in the moving average (packets come every 20 ms)."""
STALE: Final = 1.0
"""Seconds after the last packet that a participant no longer counts."""
MARGIN: Final = 6.0
"""dB by which a newcomer must be louder than the current speaker to take over."""
HOLD: Final = 2.0
"""Seconds someone stays among the loudest after last being loud enough (no cut words)."""
SILENCE_LEVEL: Final = 100.0
"""Smoothed level (-dBov) from which a microphone is silent (a muted or unplugged one sends
127; a quiet room's background is 60-80): never among the loudest, however few speak."""


@dataclass(slots=True)
class _Level:
    smoothed: float = 127.0
    last_seen: float = 0.0
    last_loud: float = float("-inf")


class SpeakerDetector:
    """The current speaker of one room. Feed :meth:`add`; ask :meth:`speaker`."""

    def __init__(self) -> None:
        self._levels: dict[str, _Level] = {}
        self.current: str | None = None

    def add(self, participant_id: str, level: int, *, now: float) -> None:
        """One packet's level (0..127, -dBov) from ``participant_id``."""
        entry = self._levels.setdefault(participant_id, _Level())
        entry.smoothed += SMOOTHING * (min(max(level, 0), 127) - entry.smoothed)
        entry.last_seen = now

    def forget(self, participant_id: str) -> None:
        """Drop a participant that left."""
        self._levels.pop(participant_id, None)
        if self.current == participant_id:
            self.current = None

    def loudest(self, count: int, *, now: float) -> set[str]:
        """The ``count`` participants heard loudest of late: those speaking now, loudest
        first, then those who spoke within ``HOLD`` seconds (so a pause does not cut them
        off), then the rest by level, leaving out silent ones (:data:`SILENCE_LEVEL`): in a
        50-person meeting with three voices, forwarding 5 silent microphones more to everyone
        would cost the server more than all the small videos."""
        heard = {pid: e for pid, e in self._levels.items() if now - e.last_seen < STALE}
        for entry in heard.values():
            if entry.smoothed < SPEECH_LEVEL:
                entry.last_loud = now

        def rank(pid: str) -> tuple[bool, float]:
            entry = heard[pid]
            return (now - entry.last_loud >= HOLD, entry.smoothed)

        audible = [
            pid
            for pid, entry in heard.items()
            if entry.smoothed < SILENCE_LEVEL or now - entry.last_loud < HOLD
        ]
        return set(sorted(audible, key=rank)[:count])

    def speaker(self, *, now: float) -> str | None:
        """The current speaker after taking the latest levels into account (the last one stays
        the speaker while nobody else speaks)."""
        speaking = {
            pid: entry.smoothed
            for pid, entry in self._levels.items()
            if now - entry.last_seen < STALE and entry.smoothed < SPEECH_LEVEL
        }
        if not speaking:
            return self.current
        loudest = min(speaking, key=speaking.__getitem__)
        current_level = speaking.get(self.current) if self.current is not None else None
        if current_level is None or speaking[loudest] + MARGIN < current_level:
            self.current = loudest
        return self.current
