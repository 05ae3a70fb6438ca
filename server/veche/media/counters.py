"""Running totals of the media path, for ``/metrics``: plain integers on the hot path (no lock,
no library), read when Prometheus scrapes."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Final

__all__ = ["DELAY_BUCKETS", "DelayHistogram", "MediaCounters"]

DELAY_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
"""Upper bounds (seconds) of the forwarding delay buckets."""


@dataclass(slots=True)
class DelayHistogram:
    """Counts of observations per bucket of :data:`DELAY_BUCKETS` (the last: above them all)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(DELAY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(DELAY_BUCKETS, seconds)] += 1
        self.total += seconds


@dataclass(slots=True)
class MediaCounters:
    """Totals since the process started."""

    packets_forwarded: int = 0
    """RTP packets written to subscribers."""
    bytes_forwarded: int = 0
    """RTP payload bytes written to subscribers."""
    keyframe_requests: int = 0
    """PLIs sent to publishers."""
    nacks_sent: int = 0
    """NACKs sent to publishers for missing packets."""
    frames_thinned: int = 0
    """Frames of a temporal layer left out for a viewer (the load governor's frame rate
    lever), counted per viewer."""
    forwarding_delay: DelayHistogram = field(default_factory=DelayHistogram)
    """From the packet that completes a frame arriving to the frame written to every
    subscriber."""
