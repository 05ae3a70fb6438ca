"""One client connection as the hub sees it, and the hub's counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from veche.auth import Identity
from veche.outlet import Outlet
from veche.rooms import Participant, Room

__all__ = ["HubStats", "Session"]


@dataclass(slots=True, eq=False)
class Session:
    """One client connection as the hub sees it. ``participant`` is set by ``hello`` (also while
    waiting in the lobby); ``browser_session`` is the browser's session cookie, if any."""

    outlet: Outlet
    remote: str
    browser_session: str | None = None
    identity: Identity | None = None
    receive_codecs: list[str] | None = None
    """What the client said it can decode (``hello.receive_codecs``)."""
    room: Room | None = None
    participant: Participant | None = None
    credentials_until: float | None = None
    """When the TURN credentials it was last given expire (``None``: it has none)."""


@dataclass(slots=True)
class HubStats:
    """Totals since start, for ``/metrics``."""

    messages: Counter[str] = field(default_factory=Counter)
    """Client messages handled, by type."""
    errors: Counter[str] = field(default_factory=Counter)
    """``error`` replies sent, by code."""
    turn_credentials: int = 0
    """TURN credentials handed out (in ``welcome`` and ``ice_servers``)."""
