"""Counting attempts over a sliding window (refused joins per room and address, and the like)."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

__all__ = ["AttemptLimiter"]


class AttemptLimiter:
    """At most ``limit`` recorded attempts per key within ``window`` seconds."""

    def __init__(self, *, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._attempts: dict[Hashable, deque[float]] = {}

    def __len__(self) -> int:
        """Keys with attempts still counted."""
        return len(self._attempts)

    def blocked(self, key: Hashable, *, now: float) -> bool:
        """Whether ``key`` has used up its attempts."""
        attempts = self._attempts.get(key)
        if attempts is None:
            return False
        while attempts and now - attempts[0] >= self.window:
            attempts.popleft()
        if not attempts:
            del self._attempts[key]
            return False
        return len(attempts) >= self.limit

    def record(self, key: Hashable, *, now: float) -> None:
        """Count one attempt by ``key``."""
        self._attempts.setdefault(key, deque()).append(now)

    def sweep(self, *, now: float) -> None:
        """Forget every key whose attempts are all older than the window (keys are cheap to
        make: one per room name guessed at, so they must not pile up)."""
        for key in [
            k for k, attempts in self._attempts.items() if now - attempts[-1] >= self.window
        ]:
            del self._attempts[key]
