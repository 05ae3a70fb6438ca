"""Temporal layers without sockets: which frames a viewer is sent when it is to get fewer
temporal layers, and what its decoder sees of the numbering (sequence numbers, VP8 picture
ids, TL0PICIDX) and of keyframe requests."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.unit.test_forwarding import SSRC, VP8, FakeTime, _packet
from veche.media.payloads import Vp8Temporal, is_keyframe, vp8_picture_ids, vp8_temporal
from veche.media.rewriter import StreamRewriter
from veche.media.temporal import ALL_LAYERS, TemporalFilter
from veche.media.tracks import Downtrack, SenderFeed, Uptrack

PATTERN = (0, 2, 1, 2)
"""TIDs of a three-layer VP8 stream, repeating from each TL0 frame."""


def _vp8(picture_id: int, tl0: int, tid: int, *, sync: bool, key: bool) -> bytes:
    """A one-packet VP8 frame with picture id, TL0PICIDX and TID/Y in its descriptor."""
    return bytes(
        [
            0x90,  # X, S, partition 0
            0xE0,  # I, L, T
            0x80 | picture_id >> 8,
            picture_id & 0xFF,
            tl0,
            tid << 6 | (0x20 if sync else 0),
            0x00 if key else 0x01,  # P bit clear: keyframe
            *b"vp8 frame data",
        ]
    )


@dataclass
class Stream:
    """A publisher's three-layer stream, one packet per frame: frame ``n`` has picture id
    ``first_picture + n`` and the TID of ``PATTERN``; frame 0 is a keyframe (and those in
    ``keys``), and a frame is a layer sync frame when its number is in ``sync``. Frames in
    ``lose`` are lost on the way to the server; with a ``time``, frames come 1/30 s apart."""

    uptrack: Uptrack
    first_picture: int = 32760
    sync: set[int] = field(default_factory=set)
    sent: int = 0
    lose: set[int] = field(default_factory=set)
    keys: set[int] = field(default_factory=set)
    time: FakeTime | None = None

    def frame(self) -> int:
        """Send the next frame; its TID."""
        n = self.sent
        self.sent += 1
        tid = PATTERN[n % 4]
        payload = _vp8(
            (self.first_picture + n) & 0x7FFF,
            (250 + n // 4) & 0xFF,
            tid,
            sync=n in self.sync,
            key=n == 0 or n in self.keys,
        )
        if self.time is not None:
            self.time.advance(1 / 30)
        if n not in self.lose:
            self.uptrack.on_packet(_packet(100 + n, 1000 + 3000 * n, payload), VP8)
        return tid

    def frames(self, count: int) -> list[int]:
        return [self.frame() for _ in range(count)]


@dataclass
class Received:
    """What a viewer's sender writes: each frame's sequence number, timestamp and payload."""

    frames: list[tuple[int, int, bytes]] = field(default_factory=list)

    def write_frame(
        self, payloads: list[bytes], sequence: int, timestamp: int, audio_level: int | None
    ) -> None:
        assert len(payloads) == 1
        self.frames.append((sequence, timestamp, payloads[0]))

    def forget(self) -> None:
        pass

    def tids(self) -> list[int]:
        found = [vp8_temporal(payload) for _, _, payload in self.frames]
        return [t.tid for t in found if t is not None]

    def check_continuous(self) -> None:
        """Sequence numbers and picture ids rise by one per frame (picture ids wrap at 2**15);
        TL0PICIDX rises by one per TID 0 frame and never otherwise; timestamps never go back."""
        for (seq, stamp, payload), (next_seq, next_stamp, next_payload) in zip(
            self.frames, self.frames[1:], strict=False
        ):
            assert next_seq == (seq + 1) & 0xFFFF
            assert next_stamp > stamp
            picture, tl0 = vp8_picture_ids(payload)
            next_picture, next_tl0 = vp8_picture_ids(next_payload)
            assert picture is not None
            assert tl0 is not None
            assert next_tl0 is not None
            assert next_picture == (picture + 1) & 0x7FFF
            base = vp8_temporal(next_payload)
            assert base is not None
            assert next_tl0 == ((tl0 + 1) & 0xFF if base.tid == 0 else tl0)


def _setup(sync: set[int] | None = None) -> tuple[Stream, Received, Downtrack, list[int]]:
    """A publisher, one viewer whose sender runs, and the keyframe requests (by SSRC)."""
    time, asked = FakeTime(), []
    uptrack = Uptrack("p-pub", "video", VP8, asked.append, clock=time.clock)
    stream = Stream(uptrack, sync=sync or set())
    received = Received()
    feed = SenderFeed("video", StreamRewriter("video", first_sequence=65530, origin=0))
    downtrack = Downtrack(uptrack, "p-viewer", feed)
    feed.ready(received)
    return stream, received, downtrack, asked


def _t(tid: int, *, sync: bool = False) -> Vp8Temporal:
    return Vp8Temporal(tid, sync, None)


def test_the_filter_goes_down_at_once_and_up_one_layer_at_each_sync_frame() -> None:
    """Asked for fewer layers, the next frame above them is left out; asked for more, a layer
    is taken up at its own layer sync frame, one layer at a time (a TID 2 sync frame decodes,
    but later TID 2 frames may refer to the TID 1 frames not sent yet)."""
    gate = TemporalFilter()
    assert gate.admit(_t(0), True, None)
    assert gate.current == ALL_LAYERS
    assert gate.admit(_t(2), False, None)
    assert not gate.admit(_t(2), False, 0)
    assert gate.current == 0
    assert not gate.admit(_t(1), False, 0)
    assert gate.admit(_t(0), False, 0)
    assert not gate.admit(_t(1, sync=True), False, 0)  # a sync frame above the target too
    # Up again: TID 1 and 2 frames wait for their sync frames; TID 0 always passes.
    assert not gate.admit(_t(2), False, None)
    assert not gate.admit(_t(1), False, None)
    assert gate.admit(_t(2, sync=True), False, None)  # decodable on its own...
    assert gate.current == 0  # ...but TID 2 is not taken up before TID 1
    assert not gate.admit(_t(2), False, None)
    assert gate.admit(_t(1, sync=True), False, None)
    assert gate.current == 1
    assert gate.admit(_t(1), False, None)
    assert not gate.admit(_t(2), False, None)
    assert gate.admit(_t(2, sync=True), False, None)
    assert gate.current == 2
    assert gate.admit(_t(2), False, None)
    assert gate.skipped == 7


def test_the_filter_starts_every_layer_at_a_keyframe_and_passes_streams_without_layers() -> None:
    """A keyframe refers to nothing: the target is taken up at once. A frame without temporal
    fields (no T bit) is always sent."""
    gate = TemporalFilter()
    gate.admit(_t(0), False, 0)
    assert gate.current == 0
    assert gate.admit(_t(0), True, 2)
    assert gate.current == 2
    assert gate.admit(_t(2), False, 2)
    assert gate.admit(None, False, 0)
    assert gate.skipped == 0


def test_a_viewer_at_tid_1_gets_every_other_frame_numbered_without_gaps() -> None:
    """At TID <= 1 the viewer is sent half the frames (the TID 2 ones left out); its sequence
    numbers (wrapping at 2**16) and picture ids (wrapping at 2**15) leave no gap and TL0PICIDX
    (wrapping at 256) counts base frames as the publisher's does."""
    stream, received, downtrack, _ = _setup()
    downtrack.uptrack.max_temporal = 1
    sent = stream.frames(16)
    assert received.tids() == [t for t in sent if t <= 1]
    assert len(received.frames) == 8
    received.check_continuous()
    first_picture, first_tl0 = vp8_picture_ids(received.frames[0][2])
    assert (first_picture, first_tl0) == (32760, 250)  # the first source's ids pass as they are
    assert vp8_picture_ids(received.frames[-1][2])[1] == 253
    assert downtrack.temporal.skipped == 8
    assert downtrack.uptrack.stats.frames_thinned == 8


def test_changing_the_temporal_layer_needs_no_keyframe() -> None:
    """Going from every layer to TID 0 and back up to every layer, the viewer is sent no
    keyframe but the first and the publisher is never asked for one; the stream it gets stays
    continuous, at a quarter of the frames while at TID 0, and every frame after the last sync
    frame once back up."""
    stream, received, downtrack, asked = _setup(sync={13, 18, 33, 34})
    stream.frames(8)  # everything
    assert received.tids() == [0, 2, 1, 2, 0, 2, 1, 2]
    downtrack.uptrack.max_temporal = 0
    stream.frames(4)  # frames 8-11: TID 0 only
    assert received.tids()[8:] == [0]
    downtrack.uptrack.max_temporal = None
    stream.frames(8)  # frames 12-19: 13 is a TID 2 sync frame, 18 a TID 1 sync frame
    assert received.tids()[9:] == [0, 2, 0, 1]
    stream.frames(12)  # frames 20-31: TID 0 and 1; no TID 2 sync frame yet
    assert received.tids()[13:] == [0, 1, 0, 1, 0, 1]
    stream.frames(8)  # frames 32-39: 33 is a TID 2 sync frame (34 one of TID 1): all from 33
    assert received.tids()[19:] == [0, 2, 1, 2, 0, 2, 1, 2]
    received.check_continuous()
    assert [is_keyframe("VP8", p) for _, _, p in received.frames].count(True) == 1
    assert asked == []
    assert downtrack.uptrack.stats.keyframe_requests == 0


def test_a_viewer_sent_everything_is_not_renumbered() -> None:
    """Without a temporal limit every frame passes with the publisher's own picture ids."""
    stream, received, downtrack, _ = _setup()
    stream.frames(9)
    assert received.tids() == [0, 2, 1, 2, 0, 2, 1, 2, 0]
    assert [vp8_picture_ids(p)[0] for _, _, p in received.frames] == [
        (32760 + n) & 0x7FFF for n in range(9)
    ]
    assert downtrack.temporal.skipped == 0


def test_a_keyframe_request_from_the_viewer_still_reaches_the_publisher() -> None:
    """Leaving frames out does not stop a viewer's own keyframe request (a real loss) from
    being passed on."""
    stream, _received, downtrack, asked = _setup()
    downtrack.uptrack.max_temporal = 0
    stream.frames(6)
    downtrack.feed.keyframe_requested()
    assert asked == [SSRC]


def _lossy(lose: set[int], **stream: set[int]) -> tuple[Stream, Received, list[int]]:
    """A publisher whose frames ``lose`` do not arrive, and one viewer of every layer."""
    time, asked = FakeTime(), []
    uptrack = Uptrack("p-pub", "video", VP8, asked.append, clock=time.clock)
    received = Received()
    feed = SenderFeed("video", StreamRewriter("video", first_sequence=65530, origin=0))
    Downtrack(uptrack, "p-viewer", feed)
    feed.ready(received)
    return Stream(uptrack, lose=lose, time=time, **stream), received, asked


def test_a_lost_upper_layer_frame_costs_the_upper_layers_until_their_sync_frames() -> None:
    """A TID 2 frame lost on the way in (picture id 5 missing, TL0PICIDX not skipping): the
    viewer keeps the base layer without a keyframe asked for, takes TID 1 and 2 up again at
    their next sync frames, and sees no gap in the numbering."""
    stream, received, asked = _lossy({5}, sync={10, 13})
    stream.frames(20)  # the assembler gives the missing packet up after 0.25 s (8 frames)
    assert received.tids() == [0, 2, 1, 2, 0, 0, 1, 0, 2, 1, 2, 0, 2, 1, 2]
    received.check_continuous()
    assert asked == []
    assert stream.uptrack.stats.frames_dropped == 1


def test_a_lost_base_layer_frame_waits_for_a_keyframe() -> None:
    """A TID 0 frame lost on the way in (TL0PICIDX skips one): every later frame may refer to
    it, so the viewer is sent nothing until a keyframe, asked for at once."""
    stream, received, asked = _lossy({4}, keys={16})
    stream.frames(16)
    assert received.tids() == [0, 2, 1, 2]
    assert asked == [SSRC]
    stream.frames(4)
    assert received.tids() == [0, 2, 1, 2, 0, 2, 1, 2]
