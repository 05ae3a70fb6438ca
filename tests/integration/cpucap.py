"""A CPU cap for a server process: a cgroup v1 ``cpu`` group with a CFS quota.

On these 2-core machines a test can push a server past its capacity only if the server gets
less than the test's clients: :func:`cpu_cap` makes a group allowed ``share`` of one core and
gives a launcher for :func:`~tests.integration.serverproc.run_server` that enters it before
starting the server. The group is removed afterwards (its processes must have exited).
:func:`cpu_priority` weighs the test's own process as many ordinary tasks, with no cap, so that
what is measured is the capped server, not clients starved by other work on the machine.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

CPU_ROOT: Final = Path("/sys/fs/cgroup/cpu")
PERIOD_US: Final = 100_000
"""CFS period (the default): a shorter one let the server overrun small quotas by a quarter
(the kernel hands out run time in 5 ms slices per CPU)."""


SHARES: Final = 16384
"""The group's weight against other tasks (1024 is one ordinary task's)."""


def cpu_cap_available() -> bool:
    """Whether this machine has a writable cgroup v1 ``cpu`` hierarchy."""
    return (CPU_ROOT / "cpu.cfs_quota_us").exists() and os.access(CPU_ROOT, os.W_OK)


@dataclass(frozen=True)
class CpuCap:
    """A cgroup allowed a share of one core (see :func:`cpu_cap`)."""

    group: Path

    @property
    def launcher(self) -> list[str]:
        """For ``run_server``: ``sh -c`` that enters the group and runs ``python -m veche``."""
        script = f'echo $$ > {self.group / "cgroup.procs"} && exec "$0" -m veche "$@"'
        return ["sh", "-c", script, sys.executable]

    def set_share(self, share: float) -> None:
        """Allow the group's processes ``share`` of one core from now on."""
        (self.group / "cpu.cfs_quota_us").write_text(str(round(share * PERIOD_US)))

    def periods(self) -> tuple[int, int]:
        """CFS periods so far in which the group ran, and those in which it used up its
        quota (and was held back until the next)."""
        stat = dict(
            line.split(" ", 1) for line in (self.group / "cpu.stat").read_text().splitlines()
        )
        return int(stat.get("nr_periods", 0)), int(stat.get("nr_throttled", 0))

    def throttled(self) -> float:
        """Seconds the group was held back by its quota so far."""
        for line in (self.group / "cpu.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "throttled_time":
                return int(value) / 1e9
        return 0.0


@contextlib.contextmanager
def cpu_cap(share: float) -> Iterator[CpuCap]:
    """A cgroup allowed ``share`` of one core, removed afterwards (once its processes have
    exited)."""
    group = CPU_ROOT / f"veche-test-{os.getpid()}-{time.monotonic_ns()}"
    group.mkdir()
    try:
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        # A group competes with every other task of the root group as one: with other work
        # on the machine it got a fraction of its quota. The quota caps it; this makes sure
        # it gets that much.
        (group / "cpu.shares").write_text(str(SHARES))
        cap = CpuCap(group)
        cap.set_share(share)
        yield cap
    finally:
        deadline = time.monotonic() + 10
        while (group / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        group.rmdir()


def _cpu_group_of(pid: int) -> Path:
    """The cgroup v1 ``cpu`` group process ``pid`` is in."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return CPU_ROOT / path.lstrip("/")
    return CPU_ROOT


@contextlib.contextmanager
def cpu_priority(pid: int) -> Iterator[None]:
    """Weigh process ``pid`` (every thread of it) as :data:`SHARES` ordinary tasks while in
    the block, without a quota; then put it back in its own group. On a machine other work
    keeps busy, a test's clients were seen to get a fraction of the CPU they need, and what
    they measured was their own lateness."""
    home = _cpu_group_of(pid)
    group = CPU_ROOT / f"veche-test-rig-{pid}-{time.monotonic_ns()}"
    group.mkdir()
    try:
        (group / "cpu.shares").write_text(str(SHARES))
        (group / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        (home / "cgroup.procs").write_text(str(pid))
        group.rmdir()
