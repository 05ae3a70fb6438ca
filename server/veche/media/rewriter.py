"""One subscriber stream's RTP numbering, continuous while its source changes.

A subscriber's sender outlives the tracks it carries: its transceiver is reused for the next
participant's track when one leaves, and a codec switch or (later) a simulcast layer switch hands
it frames from another source. The subscriber's decoder must still see one stream: sequence
numbers rising by one per packet and a timestamp clock that never jumps back. A
:class:`StreamRewriter` gives each frame its first sequence number and its timestamp.

Worked example: a video stream (90 kHz clock; a frame's step is 3000 ticks at 30 fps) that
starts at sequence number 500 and timestamp origin 0::

    frame in                    packets   sequence numbers out   timestamp out
    A, timestamp 1000           2         500, 501               0       first frame: offset -1000
    A, timestamp 4000           2         502, 503               3000    same offset
    -- switch() to source B --
    B, timestamp 777000         1         504                    6000    rebased: last + one step
    B, timestamp 780000         3         505, 506, 507          9000    B's offset kept

Sequence numbers wrap at 2**16 and timestamps at 2**32. Missing frames of a source (a frame
dropped while waiting for a keyframe) leave no gap in sequence numbers: the subscriber sees
a stream that was never lost, and only the timestamps show the pause.
"""

from __future__ import annotations

import random
from typing import Final

from veche.media.payloads import vp8_picture_ids, with_vp8_picture_ids

__all__ = ["FRAME_STEP", "PictureIdRewriter", "StreamRewriter"]

FRAME_STEP: Final = {"video": 3000, "audio": 960}
"""Timestamp ticks of one frame: 30 fps at 90 kHz, 20 ms at 48 kHz."""


class StreamRewriter:
    """Sequence numbers and timestamps for the frames one sender sends (``kind`` is ``audio``
    or ``video``). ``first_sequence`` and ``origin`` default to random values, as RTP asks."""

    def __init__(
        self, kind: str, *, first_sequence: int | None = None, origin: int | None = None
    ) -> None:
        self._step = FRAME_STEP[kind]
        self._sequence = random.randrange(1 << 16) if first_sequence is None else first_sequence
        self._origin = random.randrange(1 << 32) if origin is None else origin
        self._offset = 0
        self._rebase = True
        self._last: int | None = None

    def switch(self) -> None:
        """The next frame comes from another source: its timestamp is rebased to follow on."""
        self._rebase = True

    def frame(self, timestamp: int, packets: int) -> tuple[int, int]:
        """Number a frame of ``packets`` packets with source ``timestamp``: the first packet's
        sequence number (the others follow it) and the frame's timestamp."""
        if self._rebase:
            target = self._origin if self._last is None else self._last + self._step
            self._offset = (target - timestamp) & 0xFFFFFFFF
            self._rebase = False
        out = (timestamp + self._offset) & 0xFFFFFFFF
        self._last = out
        first = self._sequence
        self._sequence = (self._sequence + packets) & 0xFFFF
        return first, out


class PictureIdRewriter:
    """VP8 picture ids and TL0PICIDX for one subscriber stream, continuous across a switch of
    source (another track, another simulcast layer): a decoder that sees the picture id jump
    takes frames for lost. The first source's ids pass unchanged; each later source's are
    offset to follow the last one sent, and a frame's packets are rewritten only while an
    offset is not zero."""

    def __init__(self) -> None:
        self._picture_offset = 0
        self._tl0_offset = 0
        self._rebase = True
        self._skipped = False
        self._last_picture: int | None = None
        self._last_tl0: int | None = None

    def switch(self) -> None:
        """The next frame comes from another source."""
        self._rebase = True

    def skip(self) -> None:
        """A frame of the same source is left out (a temporal layer above what the viewer is
        sent): the next frame's picture id follows the last one sent, as a decoder that sees
        a gap waits for the missing frame. TL0PICIDX keeps its offset: it counts base layer
        frames, which are never left out, so it runs on by itself."""
        self._skipped = True

    def frame(self, payloads: list[bytes]) -> list[bytes]:
        """One frame's payloads, renumbered."""
        if not payloads:
            return payloads
        picture_id, tl0 = vp8_picture_ids(payloads[0])
        if self._rebase:
            self._rebase = False
            if picture_id is not None and self._last_picture is not None:
                self._picture_offset = (self._last_picture + 1 - picture_id) & 0x7FFF
            if tl0 is not None and self._last_tl0 is not None:
                self._tl0_offset = (self._last_tl0 + 1 - tl0) & 0xFF
        elif self._skipped and picture_id is not None and self._last_picture is not None:
            self._picture_offset = (self._last_picture + 1 - picture_id) & 0x7FFF
        self._skipped = False
        out_picture = None if picture_id is None else (picture_id + self._picture_offset) & 0x7FFF
        out_tl0 = None if tl0 is None else (tl0 + self._tl0_offset) & 0xFF
        if out_picture is not None:
            self._last_picture = out_picture
        if out_tl0 is not None:
            self._last_tl0 = out_tl0
        if not self._picture_offset and not self._tl0_offset:
            return payloads
        return [with_vp8_picture_ids(p, out_picture, out_tl0) for p in payloads]
