"""How much a media socket may hold unread: about a fifth of a second of what comes in on it.

The kernel gives every UDP socket the same receive buffer (``net.core.rmem_default``, 208 KB
here), most of a second of a light publisher's packets or more. A server short of CPU reads
more slowly than packets come: the buffer fills, and from then on every packet waits the
buffer's whole length before the server sees it, NACKed retransmissions and requested keyframes
included. Measured in the overload test: each publisher's socket held 130-160 KB, 0.75-1.4 s of
its 56-94 packets a second, so no retransmission came within the frame assembler's 250 ms, each
lost base layer frame cost a keyframe that came a second later, and viewers got nothing of that
video for a whole second; and the kernel dropped nothing for seconds after the server fell
behind, so the load governor engaged late, after the deficit had grown.

A :class:`ReceiveBuffer` counts the packets read from its socket and, once a second, sizes the
buffer to :data:`BUDGET` seconds of them (never above the kernel's default, never below
:data:`FLOOR`): a server that falls behind drops the excess at once (the governor sees it) and
what it reads is recent enough for a NACK to repair. A publisher sending more gets a larger
buffer; a server paused for longer than the budget loses packets, which NACKs bring back once it
reads again, instead of being late with every packet afterwards.
"""

from __future__ import annotations

import socket
from typing import Any, Final

from veche.media.udpstats import READS

__all__ = ["BUDGET", "FLOOR", "ReceiveBuffer", "buffer_size", "waiting_seconds"]

BUDGET: Final = 0.2
"""Seconds of a socket's packets its receive buffer holds."""
PACKET_COST: Final = 2304
"""Bytes of buffer the kernel charges for one datagram of a video packet's size (its
``truesize``: the data rounded up to its allocation, and the buffer's bookkeeping)."""
FLOOR: Final = 32768
"""Least bytes of buffer (as the kernel counts them): about fourteen video packets, so that
the CPU quota's pauses (up to a tenth of a second) lose nothing of a light stream."""
INTERVAL: Final = 1.0
"""Seconds over which the rate is counted before the buffer is sized again."""
SLACK: Final = 0.2
"""A size differing from the current one by less than this share is not applied."""


def buffer_size(packets_per_second: float, ceiling: int) -> int:
    """Bytes of receive buffer (as the kernel counts them) for a socket that reads
    ``packets_per_second``: :data:`BUDGET` seconds of them, between :data:`FLOOR` and
    ``ceiling`` (the kernel's default)."""
    wanted = round(packets_per_second * BUDGET * PACKET_COST)
    return max(min(FLOOR, ceiling), min(ceiling, wanted))


RATE_FLOOR: Final = 200.0
"""Packets a second :func:`waiting_seconds` assumes at least: a quiet server's few queued
datagrams are not seconds of backlog."""


def waiting_seconds(queued: int, packets_per_second: float) -> float:
    """How long the server would take to read ``queued`` bytes of waiting datagrams (as the
    kernel counts them) at ``packets_per_second`` (at least :data:`RATE_FLOOR`)."""
    return queued / (max(RATE_FLOOR, packets_per_second) * PACKET_COST)


class ReceiveBuffer:
    """Sizes one UDP socket's receive buffer to the packets read from it (see the module);
    ``sock`` ``None`` (a TCP transport): counts nothing, sizes nothing."""

    def __init__(self, sock: Any, now: float) -> None:
        self._sock = sock
        self.size = 0
        """Bytes of buffer now, as the kernel counts them (twice what ``setsockopt`` asked)."""
        self._ceiling = 0
        if sock is not None:
            self.size = self._ceiling = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self._packets = 0
        self._since = now

    def count(self, now: float) -> None:
        """One packet was read at ``now`` (seconds, monotonic)."""
        self._packets += 1
        READS.total += 1
        elapsed = now - self._since
        if elapsed < INTERVAL or self._sock is None:
            return
        size = buffer_size(self._packets / elapsed, self._ceiling)
        self._packets = 0
        self._since = now
        if abs(size - self.size) > self.size * SLACK:
            # The kernel doubles what it is given (for its bookkeeping), and counts that.
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size // 2)
            self.size = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
