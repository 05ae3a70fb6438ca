"""Publish connections that have not connected yet, counted per client address.

Each holds UDP ports of the media range until it connects or times out, so a few addresses
that offer and never connect could take the whole range. :class:`PendingConnections` counts
them so :class:`~veche.media.peer.MediaPeer` can refuse an offer beyond the per-address limit
before anything is bound.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

__all__ = ["PendingConnections"]


class PendingConnections:
    """How many not yet connected publish connections each client address holds."""

    def __init__(self) -> None:
        self._held: Counter[str] = Counter()

    def count(self, address: str) -> int:
        """The pending connections of ``address``."""
        return self._held[address]

    def hold(self, address: str) -> Callable[[], None]:
        """Count one more for ``address``; the returned function releases it (once, however
        often it is called)."""
        self._held[address] += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._held[address] -= 1
            if self._held[address] <= 0:
                del self._held[address]

        return release
