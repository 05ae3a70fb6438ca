"""Resume tokens and the participants kept while their connection is lost.

Every ``welcome`` hands its participant a new resume token. A participant whose connection was
lost (no goodbye) is *held* for the resume grace: a ``hello`` with its token within that time
brings it back as itself; when the time runs out, the hub releases it. Releasing or resuming a
participant forgets its token, so each token works at most once.

A participant the server ends (removed, the meeting ended, replaced) leaves a *farewell* under
its token for the resume grace: its goodbye may have been lost with a connection that was
already failing, and a client that comes back with that token hears the goodbye then, rather
than joining the room afresh (or a new room of the same name) as somebody else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from veche.ids import ParticipantId
from veche.protocol import GoodbyeReason
from veche.rooms import Participant, Room

__all__ = ["Resumption"]


class Resumption:
    """Which token names which participant, and the timers of those away."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[Room, Participant]] = {}
        self._away: dict[ParticipantId, asyncio.TimerHandle] = {}
        self._farewells: dict[str, tuple[GoodbyeReason, float]] = {}

    def offer(self, room: Room, participant: Participant) -> None:
        """``participant.resume_token`` (just sent in a ``welcome``) resumes it from now on."""
        self._tokens[participant.resume_token] = (room, participant)

    def find(self, token: str) -> tuple[Room, Participant] | None:
        """The room and participant ``token`` names, if any."""
        return self._tokens.get(token)

    def hold(self, participant: Participant, grace: float, on_expiry: Callable[[], None]) -> None:
        """Keep ``participant`` (its connection was lost) for ``grace`` seconds; then call
        ``on_expiry`` unless it resumed or was released first."""
        self._cancel(participant.id)
        loop = asyncio.get_running_loop()

        def expire() -> None:
            self._away.pop(participant.id, None)
            on_expiry()

        self._away[participant.id] = loop.call_later(grace, expire)

    def forget(self, participant: Participant) -> None:
        """``participant`` can no longer resume with its token; a hold on it ends."""
        self._tokens.pop(participant.resume_token, None)
        self._cancel(participant.id)

    def farewell(self, token: str, reason: GoodbyeReason, *, until: float, now: float) -> None:
        """The participant that ``token`` named was ended for ``reason``: say so to a client
        that comes back with it before ``until``. Farewells past their time are dropped."""
        for old in [t for t, (_, end) in self._farewells.items() if end <= now]:
            del self._farewells[old]
        self._farewells[token] = (reason, until)

    def goodbye_for(self, token: str, *, now: float) -> GoodbyeReason | None:
        """The goodbye owed to a client that comes back with ``token``, if any (said once)."""
        found = self._farewells.pop(token, None)
        return found[0] if found is not None and found[1] > now else None

    def _cancel(self, participant_id: ParticipantId) -> None:
        handle = self._away.pop(participant_id, None)
        if handle is not None:
            handle.cancel()

    def clear(self) -> None:
        """Drop every hold (the server shuts down)."""
        for handle in self._away.values():
            handle.cancel()
        self._away.clear()
