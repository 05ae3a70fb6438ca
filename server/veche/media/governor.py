"""The load governor: when the server runs late, send less of what matters least.

A server past its capacity does not slow down evenly: packets wait in socket buffers, viewers
lose some, ask for keyframes, the keyframes are large and the load grows (the issue's "cliff").
The governor watches two signs of it, sampled four times a second: how late the event loop runs
a periodic timer (everything the server does runs on that loop, so a late timer is a late
packet), and datagrams the kernel dropped from the server's UDP sockets because they were not
read in time (:mod:`veche.media.udpstats`; a CPU-starved server can keep its timers on time
while its sockets overflow). It answers with a *level*:

====== ================================= ==================================================
level  simulcast video (layer ceiling)   single-layer video
====== ================================= ==================================================
0      as the viewer's tile size says    as the publisher's link allows
1      at most the middle layer, 15 fps  REMB to its publisher: at most 600 kbps, 15 fps
2      the lowest layer, 15 fps          REMB: at most 300 kbps, 15 fps
3      the lowest layer, 7.5 fps         REMB 300 kbps, 7.5 fps; without temporal layers
                                         only keyframes forwarded
====== ================================= ==================================================

The frame rates apply where the publisher encodes in temporal layers (Chromium's camera, in
simulcast or not): the frames of the higher temporal layers are left out
(:mod:`veche.media.temporal`), which needs no keyframe, takes effect at the next frame going
down, and at the next layer sync frame going up.

Only *unimportant* video is governed (:func:`governed`): never audio, never the room's active
speaker, never a shared screen. A single-layer publisher (aiortc, Firefox) is first asked for a
lower bitrate: every frame kept, in fewer packets. Without temporal layers its frames cannot
simply be thinned: VP8 cannot skip a delta frame without breaking every later one until a
keyframe. For such a video alone the last step forwards only keyframes, asked for a few times
a second (coalesced per publisher and layer, at most one per 0.3 s): each one decodes on its
own. That step has a cliff (a keyframe that loses a packet costs a third of a second), so a
video in temporal layers never takes it: it keeps its base layer's delta frames.

The level rises one step when at least three quarters of the samples of the last
:attr:`GovernorPolicy.rise` seconds, the latest among them, were overloaded: lag above
``threshold``, :attr:`GovernorPolicy.drops` datagrams dropped, or more than
:attr:`GovernorPolicy.backlog` seconds of packets waiting in the sockets after the loop's last
read of them while the loop runs late by half the threshold (a server a little short of CPU
keeps a standing queue for as long as the deficit lasts, its lag pinned near the threshold,
long before the kernel drops anything: measured with a capped server, 60-136 KB waiting for
eight seconds, the lag at 38-60 ms, nothing dropped, and 10% less CPU later a collapse). It
falls one step when every sample for the fall hold was calm (lag below half the threshold,
nothing dropped, less than half the standing queue): hysteresis, so a load near the limit
does not make the picture flap. The fall hold starts at :attr:`GovernorPolicy.fall` and
doubles (up to :data:`MAX_FALL`) each time the load comes back soon after a step down, so a
server that only copes at a level stays there. Pure: it is fed samples and the time; nothing
here imports aiortc or asyncio.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

__all__ = [
    "BITRATES",
    "CEILINGS",
    "KEYFRAMES_ONLY",
    "MAX_LEVEL",
    "TEMPORAL",
    "GovernorPolicy",
    "LoadGovernor",
    "governed",
]

CEILINGS: Final = (None, 1, 0, 0)
"""The highest simulcast layer (0 the lowest) an unimportant video gets at each level."""

TEMPORAL: Final = (None, 1, 1, 0)
"""The highest temporal layer (TID) an unimportant video in temporal layers gets at each level,
simulcast or not: 1 is 15 fps of 30, 0 is 7.5 fps (see :mod:`veche.media.temporal`)."""

BITRATES: Final = (None, 600_000, 300_000, 300_000)
"""Bits per second an unimportant single-layer publisher is told it may send (REMB), per level
(aiortc's encoder does not go below 250 kbps; browsers do)."""

KEYFRAMES_ONLY: Final = (False, False, False, True)
"""Whether an unimportant single-layer video without temporal layers is forwarded as keyframes
only, per level."""

MAX_LEVEL: Final = len(CEILINGS) - 1

MAX_FALL: Final = 60.0
"""Longest calm, in seconds, the governor waits for before stepping down."""


def governed(kind: str, source: str, owner: str, speaker: str | None) -> bool:
    """Whether a track may be degraded: video that is neither a shared screen nor the active
    speaker's."""
    return kind == "video" and source != "screen" and owner != speaker


@dataclass(frozen=True, slots=True)
class GovernorPolicy:
    """``threshold``: seconds of event-loop lag above which the server counts as overloaded
    (0: never govern). ``rise``/``fall``: how long the server must be overloaded (calm) before
    the level goes up (down) one step (see the module)."""

    threshold: float = 0.05
    rise: float = 1.0
    fall: float = 5.0
    drops: int = 8
    """Datagrams dropped in one sample (a quarter of a second) that count as overload: a few
    lost in a burst are not."""
    backlog: float = 0.025
    """Seconds of packets (at the rate they are read) still waiting in the sockets when the
    governor samples, just after the loop read them, that count as overload while the loop
    also runs late by half the threshold or more: a server that keeps up has read nearly
    everything by then. (A busy uncapped server has such a queue now and then, between two
    long turns of its loop, but not most of a second: measured at 32 people and 0.9 of a
    core, 5 samples of 70.)"""
    share: float = 0.75
    """Least share of the samples of the last ``rise`` seconds that must be overloaded for the
    level to rise (a lag pinned at the threshold is above it every other sample)."""


class LoadGovernor:
    """The governor's state, shared by every room of a server.

    Feed it with :meth:`observe`; read :attr:`level`, :meth:`ceiling` and :meth:`bitrate`.
    """

    def __init__(self, policy: GovernorPolicy | None = None) -> None:
        self.policy = policy or GovernorPolicy()
        self.level = 0
        self.lag = 0.0
        """The last lag observed (seconds)."""
        self.dropped = 0
        """Datagrams dropped in all, as observed."""
        self.queued = 0
        """Bytes waiting in the receive buffers at the last sample."""
        self.fall_hold = self.policy.fall
        """Seconds of calm needed now before a step down."""
        self._fell_at = float("-inf")
        self.engagements = 0
        """Times the level rose from 0."""
        self.changes = 0
        """Times the level changed."""
        self._recent: deque[tuple[float, bool]] = deque()
        """(time, overloaded) of the samples since the last change, the oldest the last one
        at least ``rise`` seconds old."""
        self._below_since: float | None = None
        self.pinned: int | None = None
        """A level an operator holds the governor at (the admin API), whatever the load;
        ``None``: the load decides."""

    @property
    def enabled(self) -> bool:
        return self.policy.threshold > 0

    def observe(
        self, lag: float, now: float, *, dropped: int = 0, queued: int = 0, waiting: float = 0.0
    ) -> bool:
        """Take one sample at ``now``: the timer ran ``lag`` seconds late, ``dropped``
        datagrams were lost since the last sample, ``queued`` bytes wait to be read, which is
        ``waiting`` seconds of packets. Whether the level changed."""
        self.lag = lag
        self.dropped += dropped
        self.queued = queued
        policy = self.policy
        if self.pinned is not None:
            self._recent.clear()
            self._below_since = None
            return self.pinned != self.level and self._set(self.pinned)
        if not self.enabled:
            return False
        overloaded = (
            lag > policy.threshold
            or dropped >= policy.drops
            or (waiting > policy.backlog and lag >= policy.threshold / 2)
        )
        recent = self._recent
        recent.append((now, overloaded))
        while len(recent) > 1 and recent[1][0] <= now - policy.rise:
            recent.popleft()
        if overloaded:
            self._below_since = None
            if (
                now - recent[0][0] >= policy.rise
                and sum(over for _, over in recent) >= policy.share * len(recent)
                and self.level < MAX_LEVEL
            ):
                if now - self._fell_at < 2 * self.fall_hold:
                    self.fall_hold = min(2 * self.fall_hold, MAX_FALL)
                self._restart(now, overloaded)
                return self._set(self.level + 1)
            return False
        if lag >= policy.threshold / 2 or dropped > 0 or waiting > policy.backlog / 2:
            self._below_since = None
            return False
        if self.level == 0:
            self._below_since = None
            return False
        if self._below_since is None:
            self._below_since = now
        if now - self._below_since >= self.fall_hold:
            self._below_since = now
            self._fell_at = now
            if self.level == 1:
                self.fall_hold = policy.fall
            self._restart(now, overloaded)
            return self._set(self.level - 1)
        return False

    def pin(self, level: int | None) -> None:
        """Hold the governor at ``level`` from the next sample on (``None``: let the load
        decide again, from the level it is at); for an operator who knows the machine is
        short, and for tests of what each level does."""
        if level is not None and not 0 <= level <= MAX_LEVEL:
            raise ValueError(f"the governor's level is 0 to {MAX_LEVEL}, not {level}")
        self.pinned = level

    def _restart(self, now: float, overloaded: bool) -> None:
        """The level changes at ``now``: the next step waits for this one to take effect, so
        the samples before it are no evidence for it either way."""
        self._recent.clear()
        self._recent.append((now, overloaded))

    def _set(self, level: int) -> bool:
        if self.level == 0:
            self.engagements += 1
        self.level = level
        self.changes += 1
        return True

    def ceiling(self, important: bool) -> int | None:
        """The highest simulcast layer a video gets now (``None``: no ceiling)."""
        return None if important else CEILINGS[self.level]

    def bitrate(self, important: bool) -> int | None:
        """Bits per second a single-layer video's publisher may send now (``None``: no cap)."""
        return None if important else BITRATES[self.level]

    def temporal(self, important: bool) -> int | None:
        """The highest temporal layer a video in temporal layers is sent now (``None``: all)."""
        return None if important else TEMPORAL[self.level]

    def keyframes_only(self, important: bool) -> bool:
        """Whether a single-layer video is forwarded as keyframes only now, if it has no
        temporal layers (one that has is thinned by :meth:`temporal` instead)."""
        return not important and KEYFRAMES_ONLY[self.level]
