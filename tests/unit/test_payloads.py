"""Frame starts and keyframes read from VP8 and H.264 payloads, without decoding."""

from __future__ import annotations

import pytest

from veche.media.payloads import Vp8Temporal, is_keyframe, starts_frame, vp8_temporal

# VP8 descriptor: X=1 S=1 PID=0 | I=1 | 15-bit picture id | payload header byte (P bit)
VP8_KEY = bytes([0x90, 0x80, 0x80, 0x01, 0x10, 0x02, 0x00])
VP8_DELTA = bytes([0x90, 0x80, 0x80, 0x02, 0x11, 0x02, 0x00])
VP8_MIDDLE = bytes([0x80, 0x80, 0x80, 0x02, 0x55])  # S=0: continues a partition
VP8_SHORT_KEY = bytes([0x10, 0x00, 0x9D])  # no extension


@pytest.mark.parametrize(
    ("payload", "start", "key"),
    [
        (VP8_KEY, True, True),
        (VP8_DELTA, True, False),
        (VP8_MIDDLE, False, False),
        (VP8_SHORT_KEY, True, True),
        (b"", False, False),
        (bytes([0x90]), True, False),
    ],
)
def test_vp8(payload: bytes, start: bool, key: bool) -> None:
    """VP8: a frame starts at S=1, PID=0; a clear P bit marks a keyframe."""
    assert starts_frame("VP8", payload) is start
    assert is_keyframe("vp8", payload) is key


def _stap_a(*nals: bytes) -> bytes:
    return bytes([24]) + b"".join(len(n).to_bytes(2, "big") + n for n in nals)


@pytest.mark.parametrize(
    ("payload", "start", "key"),
    [
        (_stap_a(bytes([0x67, 1, 2]), bytes([0x68, 3])), True, True),  # SPS + PPS
        (bytes([0x65, 0x88]), True, True),  # IDR slice
        (bytes([0x41, 0x9A]), True, False),  # non-IDR slice
        (bytes([0x7C, 0x85, 0x00]), True, True),  # FU-A start of an IDR
        (bytes([0x7C, 0x05, 0x00]), False, False),  # FU-A continuation
        (bytes([0x7C, 0x81, 0x00]), True, False),  # FU-A start of a non-IDR slice
        (bytes([24, 0, 5, 0x67]), False, False),  # aggregate shorter than it claims
    ],
)
def test_h264(payload: bytes, start: bool, key: bool) -> None:
    """H.264: IDR or SPS anywhere at the frame's start makes a keyframe."""
    assert starts_frame("H264", payload) is start
    assert is_keyframe("H264", payload) is key


def test_audio_is_always_a_frame_and_key() -> None:
    """Audio packets stand alone."""
    assert starts_frame("opus", b"\x01")
    assert is_keyframe("opus", b"\x01")


def _descriptor(ext: int, *fields: int) -> bytes:
    """A VP8 packet with X=1, S=1: extension byte ``ext``, then ``fields``, then a delta frame's
    payload header."""
    return bytes([0x90, ext, *fields, 0x01, 0x02])


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # I, L, T: 15-bit picture id, TL0PICIDX 7, TID 2 without Y
        (_descriptor(0xE0, 0x80, 0x05, 7, 0x80), Vp8Temporal(2, False, 7)),
        # I, L, T: TID 1 with Y (layer sync), KEYIDX bits ignored
        (_descriptor(0xE0, 0x81, 0x00, 255, 0x6F), Vp8Temporal(1, True, 255)),
        # I with a 7-bit picture id, T only: no TL0PICIDX
        (_descriptor(0xA0, 0x05, 0x00), Vp8Temporal(0, False, None)),
        # T and K together (one shared byte): TID 0 with Y
        (_descriptor(0x30, 0x20), Vp8Temporal(0, True, None)),
        # no T bit: a stream without temporal layers (L alone says nothing of them)
        (_descriptor(0xC0, 0x80, 0x05, 7), None),
        (_descriptor(0x80, 0x80, 0x05), None),
        (bytes([0x10, 0x01]), None),  # no extension at all
        (bytes([0x90, 0xE0, 0x80]), None),  # cut short inside the picture id
        (bytes([0x90, 0xE0, 0x80, 0x05, 7]), None),  # cut short before the TID byte
        (b"", None),
    ],
)
def test_vp8_temporal_fields(payload: bytes, expected: Vp8Temporal | None) -> None:
    """The TID, Y and TL0PICIDX of RFC 7741's descriptor are read where the T bit says they
    are there; a descriptor cut short gives None, never an error."""
    assert vp8_temporal(payload) == expected
