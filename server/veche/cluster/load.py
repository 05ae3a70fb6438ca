"""Load: how busy this process is, as the other processes of the cluster see it.

A room's owner places each participant's media on the least-loaded process of a host (see
:mod:`veche.cluster.placement`); for that every process publishes its load with its heartbeat
(:mod:`veche.cluster.membership`). *Load* here is the share of the CPU this process may use
that it did use lately: CPU seconds of the process (``time.process_time``, every thread) per
wall second, smoothed over the last few seconds, divided by the cores it may use (one, or less
under a cgroup CPU quota: a Python process forwards on one core). 0 is idle, 1 is saturated;
a process past its quota reads about 1. Next to it goes the number of participants whose media
it runs, so that an owner can estimate what one more costs there.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

__all__ = ["LoadMeter", "cpu_capacity"]

SMOOTHING: Final = 0.5
"""Weight of the newest sample in the average: with samples every 2 s, the load follows a
change within about 4 s and a single busy moment moves it only halfway."""


class LoadMeter:
    """This process's load (see the module docstring); :meth:`sample` once per heartbeat."""

    def __init__(
        self,
        *,
        cpu: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
        capacity: Callable[[], float] | None = None,
    ) -> None:
        self._cpu = cpu
        self._clock = clock
        self._capacity = capacity or cpu_capacity
        self._last: tuple[float, float] | None = None
        """When the last sample was taken, and the CPU time then (none yet: the first sample
        only starts the count, so that the work of starting up is not taken for load)."""
        self.load = 0.0
        """The smoothed share of this process's CPU used lately (0..about 1)."""
        self.cores = 0.0
        """The same, in cores (not divided by the capacity)."""

    def sample(self) -> float:
        """Measure the CPU used since the last sample; the smoothed load."""
        now, used = self._clock(), self._cpu()
        last, self._last = self._last, (now, used)
        if last is None:
            return self.load
        before, used_before = last
        if now - before <= 0:
            return self.load
        cores = max(0.0, (used - used_before) / (now - before))
        self.cores = SMOOTHING * cores + (1 - SMOOTHING) * self.cores
        self.load = self.cores / max(0.05, self._capacity())
        return self.load


def cpu_capacity(
    proc: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
) -> float:
    """The cores this process may use: one, or the CFS quota of its cgroup if that is less
    (cgroup v1 ``cpu`` or v2). Read each time: a process may be moved into a group later."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return 1.0
    capacity = 1.0
    for line in lines:
        with contextlib.suppress(OSError, ValueError):
            capacity = min(capacity, _quota(line, root))
    return capacity


def _quota(line: str, root: Path) -> float:
    """The cores one ``/proc/self/cgroup`` line's group allows (1.0: no quota)."""
    _, controllers, path = line.split(":", 2)
    if controllers == "":  # cgroup v2
        text = (root / path.lstrip("/") / "cpu.max").read_text().split()
        return 1.0 if text[0] == "max" else int(text[0]) / int(text[1])
    if "cpu" not in controllers.split(","):
        return 1.0
    group = root / controllers / path.lstrip("/")
    quota = int((group / "cpu.cfs_quota_us").read_text())
    period = int((group / "cpu.cfs_period_us").read_text())
    return quota / period if quota > 0 and period > 0 else 1.0
