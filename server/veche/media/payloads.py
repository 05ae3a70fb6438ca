"""What an SFU must know about codec payloads without decoding them: where a frame starts and
whether it is a keyframe (RFC 7741 for VP8, RFC 6184 for H.264). Pure functions on bytes."""

from __future__ import annotations

from typing import Final

__all__ = ["is_keyframe", "starts_frame"]

_H264_IDR: Final = 5
_H264_SPS: Final = 7
_H264_STAP_A: Final = 24
_H264_FU_A: Final = 28


def _vp8_header_offset(payload: bytes) -> int | None:
    """Offset of the VP8 payload header after the payload descriptor, or None if malformed."""
    if not payload:
        return None
    offset = 1
    if payload[0] & 0x80:  # X: extension byte follows
        if len(payload) < 2:
            return None
        ext = payload[1]
        offset = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            if len(payload) <= offset:
                return None
            offset += 2 if payload[offset] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            offset += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX byte
            offset += 1
    return offset if offset < len(payload) else None


def _vp8_starts_partition_zero(payload: bytes) -> bool:
    return bool(payload) and bool(payload[0] & 0x10) and (payload[0] & 0x07) == 0


def _h264_nal_types(payload: bytes) -> list[int]:
    """NAL unit types that begin in this packet."""
    if not payload:
        return []
    kind = payload[0] & 0x1F
    if kind == _H264_STAP_A:
        types, offset = [], 1
        while offset + 2 < len(payload):
            size = int.from_bytes(payload[offset : offset + 2], "big")
            offset += 2
            if size == 0 or offset + size > len(payload):
                break
            types.append(payload[offset] & 0x1F)
            offset += size
        return types
    if kind == _H264_FU_A:
        if len(payload) < 2 or not payload[1] & 0x80:  # not the fragment's start
            return []
        return [payload[1] & 0x1F]
    return [kind] if 0 < kind < _H264_STAP_A else []


def starts_frame(codec: str, payload: bytes) -> bool:
    """Whether this packet can be the first of a frame (codec name as in SDP, e.g. ``VP8``)."""
    name = codec.upper()
    if name == "VP8":
        return _vp8_starts_partition_zero(payload)
    if name == "H264":
        return bool(_h264_nal_types(payload))
    return True


def is_keyframe(codec: str, payload: bytes) -> bool:
    """Whether a frame whose first packet carries ``payload`` can be decoded on its own."""
    name = codec.upper()
    if name == "VP8":
        if not _vp8_starts_partition_zero(payload):
            return False
        offset = _vp8_header_offset(payload)
        return offset is not None and not payload[offset] & 0x01  # P bit clear: key frame
    if name == "H264":
        return any(kind in (_H264_IDR, _H264_SPS) for kind in _h264_nal_types(payload))
    return True
