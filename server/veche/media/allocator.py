"""One subscriber's bandwidth shared out over the videos it is sent (LiveKit calls this a
stream allocator): the subscribe leg's link to :mod:`~veche.media.bandwidth`.

It reads the feedback the subscriber's browser sends on the leg (handed on by every sender of
the leg, so each REMB and receiver report arrives once per stream and is acted on once), keeps
the :class:`~veche.media.bandwidth.LinkBudget` and works out the layer the budget allows each
video, at the bitrates its layers measure (see ``Layer.bitrate``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import Final

from veche.ids import ParticipantId
from veche.media.bandwidth import LOSS_CONGESTED, Demand, LinkBudget, share, step_up
from veche.media.tracks import Downtrack, Uptrack

__all__ = ["SCREEN_PRIORITY", "SPEAKER_PRIORITY", "ViewerBandwidth"]

log = logging.getLogger(__name__)

RESHARE_INTERVAL: Final = 0.5
"""Least seconds between two sharings of a limited budget that feedback did not change (the
layers' measured bitrates drift)."""

REPORT_INTERVAL: Final = 0.2
"""Least seconds between two receiver reports acted on that show no congestion."""

SCREEN_PRIORITY: Final = 1e12
"""Added to a shared screen's claim on a viewer's bandwidth (others claim by shown area)."""

SPEAKER_PRIORITY: Final = 1e9
"""Added to the active speaker's camera's claim: after a shared screen, before bigger tiles."""


class ViewerBandwidth:
    """What one subscriber's link allows of each video it is sent.

    ``sent()`` lists the downtracks sent now, ``wanted(uptrack)`` is the highest layer worth
    sending of a video (its shown size's, under any ceiling), ``area(uptrack)`` the CSS
    pixels it is shown at; ``move(at_once)`` is called when the layers should follow a new
    share (``at_once`` after congestion lowered the budget).
    """

    def __init__(
        self,
        participant_id: ParticipantId,
        *,
        sent: Callable[[], list[Downtrack]],
        wanted: Callable[[Uptrack], int],
        area: Callable[[Uptrack], int],
        move: Callable[[bool], None],
        clock: Callable[[], float],
    ) -> None:
        self.participant_id = participant_id
        self._sent = sent
        self._wanted = wanted
        self._area = area
        self._move = move
        self._clock = clock
        self.budget = LinkBudget()
        """What the link carries, from the subscriber's feedback."""
        self.speaker: str | None = None
        """The room's active speaker, whose camera comes first after a shared screen."""
        self._allowed: dict[Hashable, int] = {}
        self._shared_at = -RESHARE_INTERVAL
        self._reported_at = -REPORT_INTERVAL

    def allowed(self, uptrack: Uptrack) -> int:
        """The highest layer of ``uptrack`` the budget allows (as last shared)."""
        return self._allowed.get(uptrack.id, len(uptrack.layers) - 1)

    def share(self) -> None:
        """Work out the layer the budget allows each video (every video at least its lowest;
        a shared screen first, then the active speaker, then bigger tiles)."""
        limit = self.budget.limit
        self._shared_at = self._clock()
        if limit is None:
            self._allowed = {}
            return
        audio, demands = self._demands()
        self._allowed = share(limit - audio, demands)

    def sending(self) -> float:
        """Bits per second sent to the subscriber now (the layers it is sent, as measured
        where they arrive)."""
        return sum(d.uptrack.layers[d.layer].bitrate for d in self._sent() if d.layer is not None)

    def _wanted_total(self) -> float:
        """Bits per second the subscriber would be sent at the layers its view wants."""
        total = 0.0
        for downtrack in self._sent():
            uptrack = downtrack.uptrack
            total += uptrack.layers[uptrack.best_layer(self._wanted(uptrack))].bitrate
        return total

    def _step_up(self) -> float | None:
        """The budget that would send one more layer of one video (see ``step_up``)."""
        if self.budget.limit is None:
            return None
        audio, demands = self._demands()
        step = step_up(self.budget.limit - audio, demands)
        return None if step is None else step + audio

    def _demands(self) -> tuple[float, list[Demand]]:
        """What the audio sent costs (bits per second), and each video sent's claim."""
        audio = 0.0
        demands: list[Demand] = []
        for downtrack in self._sent():
            uptrack = downtrack.uptrack
            if uptrack.kind != "video":
                audio += uptrack.layers[0].bitrate
                continue
            priority = float(self._area(uptrack))
            if uptrack.source == "screen":
                priority += SCREEN_PRIORITY
            if uptrack.owner == self.speaker:
                priority += SPEAKER_PRIORITY
            demands.append(
                Demand(
                    key=uptrack.id,
                    rates=[layer.bitrate for layer in uptrack.layers],
                    wanted=self._wanted(uptrack),
                    priority=priority,
                )
            )
        return audio, demands

    # ---------------------------------------------------------------- feedback

    def on_estimate(self, bitrate: int) -> None:
        """The subscriber estimates its link carries ``bitrate`` bits per second (REMB)."""
        if bitrate == self.budget.remb:
            return  # one REMB names every video stream: each of their senders hands it on
        now = self._clock()
        before = self.budget.limit
        self._after(self.budget.estimate(bitrate, self.sending(), now), before, now)

    def on_report(self, loss: float, rtt: float | None) -> None:
        """A receiver report: fraction ``loss`` lost since the last (``rtt`` is not used)."""
        now = self._clock()
        if loss < LOSS_CONGESTED and now - self._reported_at < REPORT_INTERVAL:
            return  # one receiver report covers every stream: each sender hands its part on
        self._reported_at = now
        before = self.budget.limit
        self._after(self.budget.report(loss, self.sending(), now), before, now)

    def _after(self, congested: bool, before: float | None, now: float) -> None:
        """Move videos down at once when congestion lowered the budget; up after a raise of
        the budget, or as the layers' bitrates drift, at their next keyframes."""
        raised = self.budget.probe_due(now) and self.budget.probe(
            self._wanted_total(), self._step_up(), now
        )
        limit = self.budget.limit
        if congested or raised:
            log.info(
                "viewer bandwidth",
                extra={
                    "participant": self.participant_id,
                    "limit": round(limit) if limit is not None else None,
                    "estimate": self.budget.remb,
                    "sending": round(self.sending()),
                },
            )
        lowered = limit is not None and (before is None or limit < before)
        if congested or raised or (limit is not None and now - self._shared_at >= RESHARE_INTERVAL):
            self._move(congested and lowered)
