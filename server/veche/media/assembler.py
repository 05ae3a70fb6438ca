"""Packets to whole frames, in order, for forwarding.

A video frame is the run of packets with one timestamp from the packet after the previous
frame's marker up to its own marker. The assembler releases frames only whole and in order; a
missing packet is waited for (the publisher is sent a NACK and retransmits) for at most
``max_wait`` seconds, after which the incomplete frames are dropped and the caller is told, so it
can ask for a keyframe: a forwarded stream never carries a frame with a hole.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from veche.media.payloads import is_keyframe, starts_frame

__all__ = ["MAX_WAIT", "AssembledFrame", "FrameAssembler", "Packet"]

MAX_WAIT: Final = 0.25
"""Seconds a frame waits for a missing packet by default (its NACKed retransmission)."""
_SEQ_MOD: Final = 1 << 16


@dataclass(slots=True)
class Packet:
    """The parts of an RTP packet the assembler needs."""

    seq: int
    timestamp: int
    marker: bool
    payload: bytes
    audio_level: int | None = None


@dataclass(slots=True)
class AssembledFrame:
    """A whole frame: the RTP payloads in order, its RTP timestamp, whether it is a keyframe."""

    payloads: list[bytes]
    timestamp: int
    keyframe: bool
    audio_level: int | None = None
    first_seq: int = field(default=0, repr=False)


class FrameAssembler:
    """Turns the RTP packets of one stream into whole frames, in order.

    ``codec`` is the SDP codec name; audio codecs pass every packet through as a frame of its
    own (dropping duplicates and late packets). ``clock`` returns seconds.
    """

    def __init__(
        self, codec: str, *, video: bool, clock: Callable[[], float], max_wait: float = MAX_WAIT
    ):
        self.codec = codec
        self.video = video
        self.max_wait = max_wait
        self._clock = clock
        self._highest: int | None = None  # extended sequence number
        self._next: int | None = None  # extended seq of the next frame's first packet
        self._buffer: dict[int, tuple[Packet, float]] = {}
        self._arrivals: deque[tuple[float, int]] = deque()
        """``(arrival, ext)`` of every buffered packet in arrival order (so oldest first), with
        entries of packets since released left behind and dropped when met: the oldest
        buffered packet without a scan of the buffer for each packet."""
        self._blocked: tuple[int, int] | None = None
        """``(next, missing)``: the frame at ``next`` waits for packet ``missing`` (the first
        one absent), so a packet anywhere else cannot complete it and no walk is needed."""
        self.dropped_frames = 0

    def _extend(self, seq: int) -> int:
        if self._highest is None:
            self._highest = seq
            return seq
        base = self._highest & ~0xFFFF
        candidates = (base + seq - _SEQ_MOD, base + seq, base + seq + _SEQ_MOD)
        ext = min(candidates, key=lambda value: abs(value - self._highest))  # type: ignore[operator]
        if ext > self._highest:
            self._highest = ext
        return ext

    def push(self, packet: Packet) -> tuple[list[AssembledFrame], bool]:
        """Add a packet; return the frames it completes and whether frames were lost."""
        ext = self._extend(packet.seq)
        if not self.video:
            if self._next is not None and ext < self._next:
                return [], False  # duplicate or too late to play
            lost = self._next is not None and ext > self._next
            self._next = ext + 1
            frame = AssembledFrame(
                [packet.payload], packet.timestamp, True, packet.audio_level, ext
            )
            return ([frame] if packet.payload else []), lost
        if self._next is None:
            if not packet.payload or not starts_frame(self.codec, packet.payload):
                return [], False  # join the stream at a frame boundary
            self._next = ext
            self._blocked = None
        if ext < self._next or ext in self._buffer:
            return [], False
        now = self._clock()
        self._buffer[ext] = (packet, now)
        self._arrivals.append((now, ext))
        blocked = self._blocked
        waiting = blocked is not None and blocked[0] == self._next and blocked[1] != ext
        frames = [] if waiting else self._release()
        lost = False
        if not self._buffer:
            self._arrivals.clear()  # every entry is of a released packet
        elif self._stalled():
            lost = self._skip_gap()
            frames += self._release()
        return frames, lost

    def _release(self) -> list[AssembledFrame]:
        frames = []
        while self._next is not None:
            frame = self._complete_frame_at(self._next)
            if frame is None:
                break
            frames.append(frame)
        return frames

    def _complete_frame_at(self, start: int) -> AssembledFrame | None:
        # Padding-only packets (bandwidth probes) between frames are skipped.
        while start in self._buffer and not self._buffer[start][0].payload:
            del self._buffer[start]
            start += 1
            self._next = start
        first = self._buffer.get(start)
        if first is None:
            self._blocked = (start, start)
            return None
        end = start
        while True:
            entry = self._buffer.get(end)
            if entry is None:
                self._blocked = (start, end)
                return None
            if entry[0].marker or entry[0].timestamp != first[0].timestamp:
                break
            end += 1
        if not entry[0].marker:
            end -= 1  # next frame began without a marker on this one: close it before
        packets = [self._buffer.pop(seq)[0] for seq in range(start, end + 1)]
        self._next = end + 1
        payloads = [p.payload for p in packets if p.payload]
        return AssembledFrame(
            payloads,
            first[0].timestamp,
            is_keyframe(self.codec, payloads[0]) if payloads else False,
            None,
            start,
        )

    def _stalled(self) -> bool:
        arrivals, buffer = self._arrivals, self._buffer
        while arrivals:
            arrival, ext = arrivals[0]
            entry = buffer.get(ext)
            if entry is not None and entry[1] == arrival:
                return self._clock() - arrival >= self.max_wait
            arrivals.popleft()  # released, skipped, or buffered again since
        return False

    def _skip_gap(self) -> bool:
        """Give up on the missing packets: resume at the first buffered frame start after the
        incomplete frame at ``_next`` (resuming at that frame itself would change nothing, and
        every later packet would report the loss again: a keyframe request per packet)."""
        later = sorted(self._buffer)
        for seq in later:
            if self._next is not None and seq <= self._next:
                continue
            packet = self._buffer[seq][0]
            previous = self._buffer.get(seq - 1)
            boundary = previous is None or previous[0].marker
            if boundary and packet.payload and starts_frame(self.codec, packet.payload):
                for stale in [s for s in later if s < seq]:
                    del self._buffer[stale]
                self._next = seq
                self.dropped_frames += 1
                return True
        self._buffer.clear()
        self._arrivals.clear()
        self._next = None
        self._blocked = None
        self.dropped_frames += 1
        return True
