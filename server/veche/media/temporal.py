"""Temporal layers: a frame rate a viewer can be sent less of without breaking its picture.

A VP8 encoder asked for three temporal layers (``scalabilityMode: "L1T3"``) numbers each frame
with a temporal layer index, TID, in a repeating pattern of four at 30 fps::

    frame   0  1  2  3  4  5  6  7  8 ...
    TID     0  2  1  2  0  2  1  2  0 ...

A frame refers only to frames of its own layer or lower ones, so the frames above a TID can be
left out and every frame sent still decodes: TID 0 alone is 7.5 fps, TID 0-1 15 fps, all of
them 30 fps. Unlike a simulcast layer switch this needs no keyframe, and it takes one frame to
go down. Going up needs a frame the decoder can start the higher layer at: a *layer sync* frame
(Y in the payload descriptor, RFC 7741), which refers to the base layer only. A TID 0 frame is
not enough: the next TID 1 frame may refer to the TID 1 frame before it, which the viewer was
not sent. Layers are taken up one at a time (TID 1 at its sync frame, then TID 2 at its own),
since a TID 2 frame may refer to the TID 1 frame before it. A keyframe refers to nothing and
starts every layer.

The frames left out must not look lost: the subscriber's sequence numbers leave no gap (the
:class:`~veche.media.rewriter.StreamRewriter` numbers only frames sent) and its VP8 picture ids
run on without a gap (:meth:`~veche.media.rewriter.PictureIdRewriter.skip`); TL0PICIDX, which
counts base layer frames, needs nothing, as base layer frames are never left out.

A stream without temporal layers (Firefox, aiortc, a screen, H.264) carries no TID and is
passed whole. Pure: nothing here imports aiortc.
"""

from __future__ import annotations

from typing import Final

from veche.media.payloads import Vp8Temporal

__all__ = ["ALL_LAYERS", "TemporalFilter"]

ALL_LAYERS: Final = 3
"""The highest TID the descriptor can carry (two bits): no temporal limit."""


class TemporalFilter:
    """Which frames of a stream in temporal layers one viewer is sent.

    :attr:`current` is the highest TID the viewer can decode now; :meth:`admit` is asked for
    every frame with the highest TID wanted (``None``: all) and moves :attr:`current` towards
    it: down at once, up at a keyframe or a layer sync frame.
    """

    __slots__ = ("current", "skipped")

    def __init__(self) -> None:
        self.current = ALL_LAYERS
        self.skipped = 0
        """Frames left out, in all."""

    def lost_above(self, tid: int) -> None:
        """Frames above ``tid`` were lost on the way in (the base layer's were not): the
        frames after them that may refer to them are left out until each layer's next sync
        frame, while the layers up to ``tid`` go on; no keyframe is needed."""
        self.current = min(self.current, tid)

    def admit(self, temporal: Vp8Temporal | None, keyframe: bool, target: int | None) -> bool:
        """Whether to send a frame with these temporal fields (``None``: no temporal layers)
        and keyframe flag, when the viewer should get TIDs up to ``target``."""
        if temporal is None:
            return True
        wanted = ALL_LAYERS if target is None else target
        if keyframe:
            self.current = wanted
            return True
        if wanted < self.current:
            self.current = wanted
        tid = temporal.tid
        if tid <= self.current:
            return True
        if temporal.sync and tid <= wanted:
            # It refers to the base layer only, so it decodes; the frames of its layer after
            # it may refer to the layers between, so the layer is taken up only from the next.
            if tid == self.current + 1:
                self.current = tid
            return True
        self.skipped += 1
        return False
