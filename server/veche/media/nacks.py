"""Which missing packets a NACK asks a publisher for: only those a retransmission can still
repair.

aiortc's receiver notes every packet missing among the last 128 of a stream, and a NACK is sent
for each new gap with that whole list. The frame assembler waits for a missing packet only
:data:`~veche.media.assembler.MAX_WAIT` seconds, then gives its frame up (and, for a base layer
frame, asks for a keyframe); a packet asked for after that is of no use, yet the publisher sends
it again and the server must read, decrypt and drop it. Under overload, when the kernel drops
datagrams because the server cannot read what it receives, the lists grew long and the same
stale packets came back with every NACK (in the overload test: 1,013 retransmissions for 37
NACKs in 10 s), more datagrams for a server already short of the CPU to read them.
"""

from __future__ import annotations

from veche.media.assembler import MAX_WAIT

__all__ = ["NackWindow"]


class NackWindow:
    """The packets of one stream worth asking for: those missing for less than ``window``
    seconds (by default the assembler's wait), each asked for again with every NACK until it
    comes or its time is up."""

    def __init__(self, window: float = MAX_WAIT) -> None:
        self.window = window
        self._since: dict[int, float] = {}
        """When each missing sequence number was first seen missing."""

    def due(self, missing: set[int], now: float) -> list[int]:
        """The sequence numbers of ``missing`` (aiortc's ``NackGenerator.missing``) to ask for
        at ``now`` (seconds, monotonic), in order; those missing for ``window`` or longer are
        removed from ``missing``, so that no later NACK names them again."""
        since = self._since
        for sequence in [s for s in since if s not in missing]:
            del since[sequence]  # it came, or aiortc stopped tracking it
        due = []
        for sequence in sorted(missing):
            if now - since.setdefault(sequence, now) < self.window:
                due.append(sequence)
            else:
                missing.discard(sequence)
                del since[sequence]
        return due
