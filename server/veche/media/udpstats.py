"""How far this process's UDP sockets are behind: bytes waiting to be read and datagrams the
kernel dropped because nobody read them in time (Linux ``/proc/net/udp``, ``/proc/net/udp6``).

This is the forwarding backlog the load governor needs. A server short of CPU does not always
run its timers late: asyncio reads one datagram per socket per loop turn, so the loop keeps
turning quickly while datagrams pile up in the sockets' receive buffers and the kernel drops
what does not fit (seen with a CPU-capped server: event-loop lag under 50 ms, a third of all
packets lost, every video at a few frames a second). The kernel's own counters say it plainly.
Elsewhere than Linux nothing is read and both figures stay 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["READS", "ReadCounter", "UdpBacklog", "UdpStats", "parse_udp_table"]

TABLES: Final = (Path("/proc/net/udp"), Path("/proc/net/udp6"))
REFRESH: Final = 2.0
"""Seconds between two looks for this process's sockets (they come and go with peers)."""


class ReadCounter:
    """Media datagrams this process has read so far (publishers' RTP, pipe frames): what the
    load governor measures the backlog against, as seconds of packets rather than bytes."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0


READS: Final = ReadCounter()


@dataclass(frozen=True, slots=True)
class UdpBacklog:
    """``queued``: bytes waiting in the receive buffers now; ``drops``: datagrams dropped
    since each socket was opened."""

    queued: int = 0
    drops: int = 0


def parse_udp_table(text: str, inodes: set[int]) -> UdpBacklog:
    """Sum the receive queue and drops of the sockets ``inodes`` in one ``/proc/net/udp``
    table (``tx_queue:rx_queue`` in hexadecimal, the inode tenth, the drops last)."""
    queued = drops = 0
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 13:
            continue
        try:
            if int(fields[9]) not in inodes:
                continue
            queued += int(fields[4].partition(":")[2], 16)
            drops += int(fields[-1])
        except ValueError:
            continue
    return UdpBacklog(queued, drops)


class UdpStats:
    """Reads this process's UDP backlog; :meth:`read` is cheap enough for every 0.25 s."""

    def __init__(self) -> None:
        self._inodes: set[int] = set()
        self._found_at = float("-inf")
        self.available = all(table.exists() for table in TABLES[:1])

    def read(self, now: float) -> UdpBacklog:
        """The backlog now (``now`` on a monotonic clock, for refreshing the socket list)."""
        if not self.available:
            return UdpBacklog()
        if now - self._found_at >= REFRESH:
            self._found_at = now
            self._inodes = _socket_inodes()
        queued = drops = 0
        for table in TABLES:
            try:
                found = parse_udp_table(table.read_text(), self._inodes)
            except OSError:
                continue
            queued += found.queued
            drops += found.drops
        return UdpBacklog(queued, drops)


def _socket_inodes() -> set[int]:
    """The inodes of this process's open sockets."""
    inodes: set[int] = set()
    try:
        entries = list(os.scandir("/proc/self/fd"))
    except OSError:
        return inodes
    for entry in entries:
        try:
            target = os.readlink(entry.path)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes
