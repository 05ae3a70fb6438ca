"""Packets to whole, ordered frames: reordering, loss, padding, sequence wrap."""

from __future__ import annotations

from veche.media.assembler import FrameAssembler, Packet

KEY = bytes([0x10, 0x00])  # VP8: S=1 PID=0, P=0 (keyframe)
DELTA = bytes([0x10, 0x01])
MORE = bytes([0x00, 0xAA])  # S=0: continuation


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def video(clock: Clock | None = None) -> FrameAssembler:
    return FrameAssembler("VP8", video=True, clock=clock or Clock(), max_wait=0.2)


def test_frames_come_out_whole_and_in_order() -> None:
    """A frame is released when its marker packet and everything before it arrived."""
    asm = video()
    assert asm.push(Packet(10, 900, False, KEY)) == ([], False)
    frames, lost = asm.push(Packet(11, 900, True, MORE))
    assert not lost
    assert [(f.payloads, f.timestamp, f.keyframe) for f in frames] == [([KEY, MORE], 900, True)]
    frames, _ = asm.push(Packet(12, 3900, True, DELTA))
    assert [(f.timestamp, f.keyframe) for f in frames] == [(3900, False)]


def test_reordered_packets_wait_for_the_gap() -> None:
    """A later frame waits behind an incomplete earlier one, then both come out in order."""
    asm = video()
    asm.push(Packet(1, 100, True, KEY))
    assert asm.push(Packet(3, 200, True, MORE)) == ([], False)
    assert asm.push(Packet(4, 300, True, DELTA)) == ([], False)
    frames, lost = asm.push(Packet(2, 200, False, DELTA))
    assert not lost
    assert [f.timestamp for f in frames] == [200, 300]


def test_loss_is_given_up_after_max_wait_and_reported() -> None:
    """A packet that never comes: after max_wait the assembler resumes at the next frame start
    and reports the loss (so the caller asks for a keyframe)."""
    clock = Clock()
    asm = video(clock)
    asm.push(Packet(1, 100, True, KEY))
    asm.push(Packet(3, 200, True, MORE))  # 2 is lost
    asm.push(Packet(4, 300, True, DELTA))
    clock.now = 0.25
    frames, lost = asm.push(Packet(5, 400, True, DELTA))
    assert lost
    assert [f.timestamp for f in frames] == [300, 400]
    assert asm.dropped_frames == 1


def test_stream_is_joined_at_a_frame_start() -> None:
    """Packets before the first frame start are ignored."""
    asm = video()
    assert asm.push(Packet(7, 100, True, MORE)) == ([], False)
    frames, _ = asm.push(Packet(8, 200, True, KEY))
    assert [f.timestamp for f in frames] == [200]


def test_padding_between_frames_is_skipped() -> None:
    """Empty (padding-only) packets do not block or enter frames."""
    asm = video()
    asm.push(Packet(1, 100, True, KEY))
    assert asm.push(Packet(2, 100, False, b"")) == ([], False)
    frames, _ = asm.push(Packet(3, 200, True, DELTA))
    assert [(f.timestamp, f.payloads) for f in frames] == [(200, [DELTA])]


def test_sequence_numbers_wrap() -> None:
    """Sequence numbers roll over from 65535 to 0 without a hiccup."""
    asm = video()
    asm.push(Packet(65534, 100, True, KEY))
    asm.push(Packet(65535, 200, False, DELTA))
    frames, lost = asm.push(Packet(0, 200, True, MORE))
    assert not lost
    assert [f.timestamp for f in frames] == [200]
    frames, _ = asm.push(Packet(1, 300, True, DELTA))
    assert [f.timestamp for f in frames] == [300]


def test_duplicates_are_dropped() -> None:
    """A retransmission of a packet already released is ignored."""
    asm = video()
    asm.push(Packet(1, 100, True, KEY))
    assert asm.push(Packet(1, 100, True, KEY)) == ([], False)


def test_audio_passes_through_and_reports_gaps() -> None:
    """Audio packets are frames of their own; late ones are dropped, gaps reported."""
    asm = FrameAssembler("opus", video=False, clock=Clock())
    frames, lost = asm.push(Packet(5, 960, True, b"a", audio_level=30))
    assert [(f.payloads, f.audio_level) for f in frames] == [([b"a"], 30)]
    frames, lost = asm.push(Packet(7, 2880, False, b"c"))
    assert lost
    assert len(frames) == 1
    assert asm.push(Packet(6, 1920, False, b"b")) == ([], False)


def test_a_large_frame_with_a_late_packet_costs_no_scan_per_packet() -> None:
    """A 200-packet keyframe whose second packet comes last: nothing is released before it,
    the frame then comes out whole, and the bookkeeping of arrivals does not outgrow what is
    buffered (each packet used to scan the whole buffer twice: quadratic in a keyframe's size,
    which took most of a loaded server's time)."""
    clock = Clock()
    asm = video(clock)
    asm.push(Packet(1, 100, False, KEY))
    for seq in range(3, 201):
        clock.now += 0.0001
        assert asm.push(Packet(seq, 100, seq == 200, MORE)) == ([], False)
    frames, lost = asm.push(Packet(2, 100, False, MORE))
    assert not lost
    assert [(len(f.payloads), f.keyframe) for f in frames] == [(200, True)]
    for seq in range(201, 1201):  # a thousand one-packet frames after it
        clock.now += 0.03
        frames, lost = asm.push(Packet(seq, 100 + seq, True, DELTA))
        assert len(frames) == 1
        assert not lost
    assert len(asm._arrivals) <= 2


def test_a_gap_filled_by_a_packet_out_of_order_releases_every_waiting_frame() -> None:
    """Three frames wait behind one missing packet of the first; packets elsewhere do not
    release anything; the missing one releases all three at once."""
    asm = video()
    asm.push(Packet(1, 100, True, KEY))
    asm.push(Packet(2, 200, False, DELTA))
    for seq, ts, marker in ((4, 200, True), (5, 300, True), (6, 400, False), (7, 400, True)):
        assert asm.push(Packet(seq, ts, marker, DELTA if seq in (5, 6) else MORE)) == ([], False)
    frames, _ = asm.push(Packet(3, 200, False, MORE))
    assert [f.timestamp for f in frames] == [200, 300, 400]


def test_a_frame_missing_a_middle_packet_is_given_up_once() -> None:
    """The frame at the head has its first packet but not its second: after max_wait the
    assembler resumes at the next frame and reports the loss once, not on every later packet
    (it used to resume at the incomplete frame itself, so each packet asked for a keyframe)."""
    clock = Clock()
    asm = video(clock)
    asm.push(Packet(1, 100, True, KEY))
    asm.push(Packet(2, 200, False, DELTA))  # 3 (the end of frame 200) never comes
    asm.push(Packet(4, 300, True, DELTA))
    clock.now = 0.25
    frames, lost = asm.push(Packet(5, 400, True, DELTA))
    assert lost
    assert [f.timestamp for f in frames] == [300, 400]
    reports = []
    for seq in range(6, 20):
        clock.now += 0.03
        frames, lost = asm.push(Packet(seq, 100 * seq, True, DELTA))
        reports.append(lost)
        assert len(frames) == 1
    assert not any(reports)
    assert asm.dropped_frames == 1
