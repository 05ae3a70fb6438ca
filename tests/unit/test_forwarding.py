"""Forwarding without sockets: an uptrack, its downtracks and the senders' feeds, driven with
RTP packets, a fake clock, a fake scheduler and a writer that records what would be sent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from veche.media.rewriter import StreamRewriter
from veche.media.tracks import KEYFRAME_INTERVAL, Downtrack, SenderFeed, Uptrack

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
KEY = b"\x10\x00" + b"k" * 20
"""A VP8 payload that starts a key frame (descriptor S bit set, partition 0, P bit clear)."""
DELTA = b"\x10\x01" + b"d" * 20
"""A VP8 payload that starts a delta frame (P bit set)."""
SSRC = 1234


@dataclass
class FakeWriter:
    """Records each frame a sender would write: (first sequence number, timestamp, payloads)."""

    frames: list[tuple[int, int, int]] = field(default_factory=list)
    forgotten: int | None = None
    """How many frames had been written when the writer was told to forget them."""

    def write_frame(
        self, payloads: list[bytes], sequence: int, timestamp: int, audio_level: int | None
    ) -> None:
        self.frames.append((sequence, timestamp, len(payloads)))

    def forget(self) -> None:
        self.forgotten = len(self.frames)


class FakeTime:
    """A clock and a ``call_later`` that runs callbacks only when the test advances time."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def clock(self) -> float:
        return self.now

    def schedule(self, delay: float, callback: Callable[[], None]) -> object:
        self.timers.append((self.now + delay, callback))
        return _Handle()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [timer for timer in self.timers if timer[0] <= self.now]
        self.timers = [timer for timer in self.timers if timer[0] > self.now]
        for _, callback in due:
            callback()


class _Handle:
    def cancel(self) -> None:
        pass


def _uptrack(time: FakeTime, asked: list[int]) -> Uptrack:
    return Uptrack(
        "p-pub",
        "video",
        VP8,
        asked.append,
        clock=time.clock,
        schedule=time.schedule,  # type: ignore[arg-type]
    )


def _packet(seq: int, timestamp: int, payload: bytes, *, marker: bool = True) -> RtpPacket:
    return RtpPacket(
        payload_type=96,
        marker=int(marker),
        sequence_number=seq,
        timestamp=timestamp,
        ssrc=SSRC,
        payload=payload,
    )


def _viewer(uptrack: Uptrack, *, first_sequence: int = 500, origin: int = 0) -> FakeWriter:
    """A subscriber whose sender runs: a feed with a fixed numbering and a fake writer."""
    writer = FakeWriter()
    feed = SenderFeed(
        "video", StreamRewriter("video", first_sequence=first_sequence, origin=origin)
    )
    Downtrack(uptrack, "p-viewer", feed)
    feed.ready(writer)
    return writer


def test_the_rewriters_worked_example() -> None:
    """The numbers of the example in veche.media.rewriter's docstring."""
    rewriter = StreamRewriter("video", first_sequence=500, origin=0)
    assert rewriter.frame(1000, 2) == (500, 0)
    assert rewriter.frame(4000, 2) == (502, 3000)
    rewriter.switch()
    assert rewriter.frame(777000, 1) == (504, 6000)
    assert rewriter.frame(780000, 3) == (505, 9000)


def test_the_rewriter_wraps_sequence_numbers_and_timestamps() -> None:
    """Sequence numbers wrap at 2**16 and timestamps at 2**32, without a gap."""
    rewriter = StreamRewriter("audio", first_sequence=0xFFFE, origin=0xFFFFFC00)
    assert rewriter.frame(0, 1) == (0xFFFE, 0xFFFFFC00)
    assert rewriter.frame(960, 3) == (0xFFFF, (0xFFFFFC00 + 960) & 0xFFFFFFFF)
    assert rewriter.frame(1920, 1) == (2, 0xFFFFFC00 + 1920 - (1 << 32))


def test_a_new_viewer_gets_nothing_before_a_keyframe_and_asks_for_one() -> None:
    """Delta frames are held back from a viewer that has not seen a keyframe yet; the
    keyframe it asked for starts its stream, numbered from the viewer's own first number."""
    time, asked = FakeTime(), []
    uptrack = _uptrack(time, asked)
    uptrack.on_packet(_packet(10, 3000, DELTA), VP8)  # the publisher's stream is known now
    writer = _viewer(uptrack)
    assert asked == [SSRC]
    uptrack.on_packet(_packet(11, 6000, DELTA), VP8)
    assert writer.frames == []
    uptrack.on_packet(_packet(12, 9000, KEY, marker=False), VP8)
    uptrack.on_packet(_packet(13, 9000, b"k" * 20), VP8)
    uptrack.on_packet(_packet(14, 12000, DELTA), VP8)
    assert writer.frames == [(500, 0, 2), (502, 3000, 1)]


def test_keyframe_requests_are_rate_limited_but_never_lost() -> None:
    """Within KEYFRAME_INTERVAL of a request, another is put off until the interval ends (and
    several become one); none is dropped."""
    time, asked = FakeTime(), []
    uptrack = _uptrack(time, asked)
    uptrack.on_packet(_packet(1, 0, KEY), VP8)
    uptrack.request_keyframe()
    assert asked == [SSRC]
    time.advance(KEYFRAME_INTERVAL / 3)
    uptrack.request_keyframe()
    uptrack.request_keyframe()
    assert asked == [SSRC]
    assert len(time.timers) == 1
    time.advance(KEYFRAME_INTERVAL)
    assert asked == [SSRC, SSRC]
    assert uptrack.stats.keyframe_requests == 2


def test_a_lost_frame_holds_every_viewer_until_the_next_keyframe() -> None:
    """A frame that never completes (its packet lost for good) stops every viewer at the next
    frame boundary and asks for a keyframe; the keyframe resumes them."""
    time, asked = FakeTime(), []
    uptrack = _uptrack(time, asked)
    uptrack.on_packet(_packet(1, 0, KEY), VP8)
    viewers = [_viewer(uptrack, first_sequence=100), _viewer(uptrack, first_sequence=900)]
    uptrack.on_packet(_packet(2, 3000, KEY), VP8)  # both start here
    time.advance(1.0)  # past the keyframe requests of their start
    asked.clear()
    # Packet 3 (a whole frame) is lost; 4 waits for it until the assembler gives up.
    uptrack.on_packet(_packet(4, 9000, DELTA), VP8)
    time.advance(0.31)
    uptrack.on_packet(_packet(5, 12000, DELTA), VP8)
    assert asked == [SSRC]
    assert uptrack.stats.frames_dropped == 1
    uptrack.on_packet(_packet(6, 15000, KEY), VP8)
    for viewer, first in zip(viewers, (100, 900), strict=True):
        assert [frame[0] for frame in viewer.frames] == [first, first + 1]
        assert [frame[1] for frame in viewer.frames] == [0, 15000 - 3000]


def test_a_reused_sender_continues_its_numbering_across_a_switch_of_source() -> None:
    """When a transceiver carries another publisher's track, sequence numbers go on by one and
    the timestamp one frame step after the last, whatever the new source's own numbers."""
    time = FakeTime()
    first, second = _uptrack(time, []), _uptrack(time, [])
    writer = FakeWriter()
    feed = SenderFeed("video", StreamRewriter("video", first_sequence=7, origin=50))
    feed.ready(writer)
    old = Downtrack(first, "p-viewer", feed)
    first.on_packet(_packet(1, 1000, KEY), VP8)
    first.on_packet(_packet(2, 4000, DELTA), VP8)
    old.detach()
    Downtrack(second, "p-viewer", feed)
    second.on_packet(_packet(40000, 3_000_000, KEY), VP8)
    assert writer.frames == [(7, 50, 1), (8, 3050, 1), (9, 6050, 1)]


@pytest.mark.parametrize("enabled", [True, False])
def test_a_track_held_back_sends_nothing(enabled: bool) -> None:
    """A track turned off (a muted microphone, a camera off) forwards nothing until it is on
    again, and then starts from a keyframe."""
    time, asked = FakeTime(), []
    uptrack = _uptrack(time, asked)
    uptrack.on_packet(_packet(1, 0, KEY), VP8)
    writer = _viewer(uptrack)
    uptrack.on_packet(_packet(2, 3000, KEY), VP8)
    uptrack.set_enabled(False)
    uptrack.on_packet(_packet(3, 6000, DELTA), VP8)
    assert len(writer.frames) == 1
    uptrack.set_enabled(enabled)
    uptrack.on_packet(_packet(4, 9000, DELTA), VP8)
    uptrack.on_packet(_packet(5, 12000, KEY), VP8)
    assert len(writer.frames) == (2 if enabled else 1)
