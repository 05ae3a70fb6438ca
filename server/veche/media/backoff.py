"""When a member's media may be started afresh again after failures.

A connection that fails is released and its participant starts again (a *reset*); if it fails
again and again (a link that never carries ICE, an answer the server refuses), resetting at
once each time would be a loop, and every reset takes the participant's tracks away from
everyone who watches them. So the first reset comes at once and each further one waits longer
after the previous one: 1, 2, 4 … up to 30 s. Media that stays up for a minute after a reset
starts the count again.
"""

from __future__ import annotations

from typing import Final

__all__ = ["FIRST_WAIT", "LONGEST_WAIT", "STABLE_AFTER", "ResetBackoff"]

FIRST_WAIT: Final = 1.0
"""Seconds between a participant's first reset and its second."""
LONGEST_WAIT: Final = 30.0
"""The longest wait between two resets of one participant's media."""
STABLE_AFTER: Final = 60.0
"""Seconds after a reset without another one that make the next failure count as the first."""


class ResetBackoff:
    """The resets of one participant's media, and how long the next one has to wait.

    Times are seconds on any monotonic clock the caller reads (no clock is read here).
    """

    def __init__(
        self,
        first: float = FIRST_WAIT,
        longest: float = LONGEST_WAIT,
        stable_after: float = STABLE_AFTER,
    ) -> None:
        self.first = first
        self.longest = longest
        self.stable_after = stable_after
        self.resets = 0
        """Resets since the media was last stable."""
        self.last: float | None = None
        """When the latest reset happened."""

    def gap(self) -> float:
        """The seconds the next reset must come after the previous one (0 for the first)."""
        if self.resets == 0:
            return 0.0
        return min(self.longest, self.first * 2.0 ** (self.resets - 1))

    def wait(self, now: float) -> float:
        """Seconds from ``now`` until the participant's media may be reset (0: at once)."""
        if self.last is None or now - self.last >= self.stable_after:
            self.resets = 0
        if self.last is None:
            return 0.0
        return max(0.0, self.last + self.gap() - now)

    def reset_at(self, now: float) -> int:
        """Count a reset made at ``now``; the how-many-th since the media was stable (from 1)."""
        if self.last is not None and now - self.last >= self.stable_after:
            self.resets = 0
        self.resets += 1
        self.last = now
        return self.resets
