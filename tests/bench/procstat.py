"""CPU time of processes and of the whole machine, from ``/proc`` (Linux)."""

from __future__ import annotations

import os
from typing import Final

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time used so far by every thread of process ``pid``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of all the machine's cores so far, in clock ticks."""
    with open("/proc/stat") as stat:
        user, nice, system, idle, iowait, irq, softirq, steal = map(
            int, stat.readline().split()[1:9]
        )
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return total - idle - iowait, total
