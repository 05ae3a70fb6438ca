"""Counting attempts over a sliding window (failed joins per address, and the like)."""

from __future__ import annotations

from collections import deque

__all__ = ["AttemptLimiter"]


class AttemptLimiter:
    """At most ``limit`` recorded attempts per key within ``window`` seconds."""

    def __init__(self, *, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._attempts: dict[str, deque[float]] = {}

    def blocked(self, key: str, *, now: float) -> bool:
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

    def record(self, key: str, *, now: float) -> None:
        """Count one attempt by ``key``."""
        self._attempts.setdefault(key, deque()).append(now)
