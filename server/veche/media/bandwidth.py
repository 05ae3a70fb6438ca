"""A viewer's bandwidth: how much its link carries, and which simulcast layers fit in it.

The viewer's own browser says what its link carries, on the connection it receives media on:
its receiver-estimated maximum bitrate (REMB, for the ``goog-remb`` feedback the server offers
with the abs-send-time header extension; Chromium sends one at least every second and at once
when its estimate falls) and the loss of its receiver reports. :class:`LinkBudget` turns these
into a budget in bits per second and :func:`share` spends it on the viewer's videos.

A falling link is followed at once: a REMB that falls below what is being sent, or a report
losing a tenth of the packets or more, sets the budget to what the link carries now. A link
that recovers cannot say so: a receiver estimates at most about one and a half times what
it receives, so a viewer held to a small layer never reports room for a large one. The budget
is therefore raised by probing: after :data:`PROBE_HOLD` seconds without congestion it is
raised just enough for one more layer of the most important video held back (:func:`step_up`),
and kept if another such period passes without congestion; a raise the link cannot carry is
undone by the congestion it causes, and the wait before the next raise doubles (up to
:data:`PROBE_HOLD_MAX`). Once the budget allows every layer the viewer wants, it is lifted.

Pure logic on numbers: nothing here imports aiortc or reads a clock.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "LOSS_CONGESTED",
    "NOMINAL_RATES",
    "PROBE_HOLD",
    "PROBE_HOLD_MAX",
    "Demand",
    "LinkBudget",
    "share",
    "step_up",
]

LOSS_CONGESTED: Final = 0.1
"""A receiver report losing at least this fraction of packets means the link is full."""

REMB_FALL: Final = 0.9
"""A REMB below this fraction of the previous one, and below what is being sent, means the
link is full (Chromium's estimate falls to about 0.85 of what it receives when it detects
congestion; it also falls, but stays above what is sent, when less is sent)."""

PROBE_HOLD: Final = 6.0
"""Seconds without congestion before the budget is raised (and before a raise counts as
carried)."""

PROBE_HOLD_MAX: Final = 48.0
"""Most seconds between two raises after raises the link could not carry."""

PROBE_MARGIN: Final = 1.1
"""A raise allows this much more than the next layer up measures (bitrates drift)."""

NOMINAL_RATES: Final = (150_000.0, 500_000.0, 1_500_000.0)
"""Bits per second assumed of a simulcast layer (lowest first) not yet measured: what the
browser client asks its encoder for."""


class LinkBudget:
    """What one viewer's link carries, in bits per second (:attr:`limit`; ``None`` while no
    congestion has been seen or after the link proved to carry everything wanted).

    Feed it every estimate (:meth:`estimate`) and report (:meth:`report`) with what is being
    sent to the viewer then (each returns whether they show congestion, which sets
    :attr:`limit`), and call :meth:`probe` from time to time with what the viewer's videos
    would cost unconstrained (it returns whether it raised or lifted :attr:`limit`).
    """

    def __init__(self) -> None:
        self.limit: float | None = None
        self.remb: float | None = None
        """The viewer's latest estimate."""
        self._quiet_since = 0.0
        """Time of the last congestion or raise."""
        self._hold = PROBE_HOLD
        self._probing = False
        """The last change was a raise not yet proven by a quiet hold."""

    def estimate(self, bitrate: float, sending: float, now: float) -> bool:
        """The viewer estimates its link carries ``bitrate`` while ``sending`` is sent to it."""
        previous, self.remb = self.remb, bitrate
        if previous is None or bitrate >= previous * REMB_FALL or bitrate >= sending:
            return False
        return self._congested(bitrate, now)

    def report(self, loss: float, sending: float, now: float) -> bool:
        """The viewer lost fraction ``loss`` of the packets since its last report."""
        if loss < LOSS_CONGESTED or sending <= 0:
            return False
        carried = sending * (1 - loss)  # what got through
        if self.remb is not None:
            carried = min(carried, self.remb)
        return self._congested(carried, now)

    def _congested(self, carried: float, now: float) -> bool:
        """The link is full at ``carried`` bits per second: hold the budget there; a raise
        that led here makes the next one wait twice as long."""
        self._hold = min(self._hold * 2, PROBE_HOLD_MAX) if self._probing else PROBE_HOLD
        self._probing = False
        self._quiet_since = now
        self.limit = carried
        return True

    def probe_due(self, now: float) -> bool:
        """Whether :meth:`probe` would act now (the budget is limited and has been quiet for
        long enough); what it needs costs the caller some work."""
        return self.limit is not None and now - self._quiet_since >= self._hold

    def probe(self, wanted: float, step: float | None, now: float) -> bool:
        """Raise the budget to ``step`` (bits per second: what the viewer would be sent with
        one video one layer up) if it has been quiet long enough and holds back part of
        ``wanted`` (what the viewer would be sent at the layers its view wants); lift it once
        it covers ``wanted``."""
        if self.limit is None or not self.probe_due(now):
            return False
        if self._probing:
            self._probing = False  # the last raise was carried
            self._hold = PROBE_HOLD
        if step is None or self.limit >= wanted:
            self.limit = None
            return True
        self.limit = max(step * PROBE_MARGIN, self.limit)
        self._probing = True
        self._quiet_since = now
        return True


@dataclass(frozen=True, slots=True)
class Demand:
    """One video a viewer shows: ``rates`` are its layers' bitrates (lowest first, 0 where not
    measured), ``wanted`` the highest layer worth sending it (from the size it is shown at),
    ``priority`` its claim on the budget (higher is served first: a shared screen, then
    bigger tiles)."""

    key: Hashable
    rates: Sequence[float]
    wanted: int
    priority: float


def share(budget: float | None, demands: Iterable[Demand]) -> dict[Hashable, int]:
    """The layer each video gets out of ``budget`` bits per second (``None``: no limit, each
    gets the layer it wants).

    Every video gets at least its lowest layer, whatever the budget (a picture that degrades,
    never one that freezes); what is left raises the videos in order of priority, each to the
    highest layer up to the one it wants whose extra cost still fits.
    """
    demands = list(demands)
    if budget is None:
        return {d.key: d.wanted for d in demands}
    chosen = {d.key: 0 for d in demands}
    left = budget - sum(_rate(d, 0) for d in demands)
    for demand in sorted(demands, key=lambda d: -d.priority):
        for layer in range(demand.wanted, 0, -1):
            extra = _rate(demand, layer) - _rate(demand, 0)
            if extra <= left:
                chosen[demand.key] = layer
                left -= extra
                break
    return chosen


def step_up(budget: float, demands: Iterable[Demand]) -> float | None:
    """The least budget that sends one video (the first in priority that is below the layer it
    wants) one layer higher than ``budget`` does; ``None`` if every video gets what it wants."""
    demands = sorted(demands, key=lambda d: -d.priority)
    chosen = share(budget, demands)
    cost = sum(_rate(d, chosen[d.key]) for d in demands)
    for demand in demands:
        layer = chosen[demand.key]
        if layer < demand.wanted:
            return cost - _rate(demand, layer) + _rate(demand, layer + 1)
    return None


def _rate(demand: Demand, layer: int) -> float:
    rate = demand.rates[layer] if layer < len(demand.rates) else 0.0
    if rate > 0:
        return rate
    return NOMINAL_RATES[min(layer, len(NOMINAL_RATES) - 1)]
