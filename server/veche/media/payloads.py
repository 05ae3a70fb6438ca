"""What an SFU must know about codec payloads without decoding them: where a frame starts,
whether it is a keyframe (RFC 7741 for VP8, RFC 6184 for H.264) and, for VP8 encoded in
temporal layers, which layer a frame belongs to. Pure functions on bytes."""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = [
    "Vp8Temporal",
    "is_keyframe",
    "starts_frame",
    "vp8_picture_ids",
    "vp8_temporal",
    "vp8_width",
    "with_vp8_picture_ids",
]

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


def vp8_width(codec: str, payload: bytes) -> int | None:
    """The picture width a VP8 keyframe's first packet states (RFC 6386 9.1), else None."""
    if codec.upper() != "VP8" or not _vp8_starts_partition_zero(payload):
        return None
    offset = _vp8_header_offset(payload)
    if offset is None or len(payload) < offset + 10 or payload[offset] & 0x01:
        return None
    if payload[offset + 3 : offset + 6] != b"\x9d\x01\x2a":
        return None
    return int.from_bytes(payload[offset + 6 : offset + 8], "little") & 0x3FFF


def vp8_picture_ids(payload: bytes) -> tuple[int | None, int | None]:
    """A VP8 packet's picture id (7 or 15 bits) and TL0PICIDX, each None when absent."""
    if len(payload) < 2 or not payload[0] & 0x80:
        return None, None
    ext = payload[1]
    offset = 2
    picture_id: int | None = None
    if ext & 0x80:
        if len(payload) <= offset:
            return None, None
        if payload[offset] & 0x80:
            if len(payload) <= offset + 1:
                return None, None
            picture_id = ((payload[offset] & 0x7F) << 8) | payload[offset + 1]
            offset += 2
        else:
            picture_id = payload[offset]
            offset += 1
    tl0: int | None = None
    if ext & 0x40 and len(payload) > offset:
        tl0 = payload[offset]
    return picture_id, tl0


def with_vp8_picture_ids(payload: bytes, picture_id: int | None, tl0: int | None) -> bytes:
    """``payload`` with its VP8 picture id (written in 15 bits) and TL0PICIDX replaced, where
    the packet carries them."""
    if len(payload) < 2 or not payload[0] & 0x80:
        return payload
    ext = payload[1]
    head = bytearray(payload[:2])
    offset = 2
    if ext & 0x80:
        if len(payload) <= offset:
            return payload
        size = 2 if payload[offset] & 0x80 else 1
        value = picture_id if picture_id is not None else 0
        if picture_id is None:
            head += payload[offset : offset + size]
        else:
            head += bytes((0x80 | (value >> 8) & 0x7F, value & 0xFF))
        offset += size
    if ext & 0x40 and len(payload) > offset:
        head.append(payload[offset] if tl0 is None else tl0 & 0xFF)
        offset += 1
    return bytes(head) + payload[offset:]


class Vp8Temporal(NamedTuple):
    """The temporal layer fields of a VP8 payload descriptor (RFC 7741 4.2)."""

    tid: int
    """Temporal layer index, 0 the base layer (every fourth frame of three layers at 30 fps,
    then every fourth offset by two for TID 1, the rest TID 2)."""
    sync: bool
    """Y, layer sync: the frame depends only on the base layer, so a viewer that was not sent
    this layer before can start decoding it here."""
    tl0: int | None
    """TL0PICIDX, the running index of base layer frames, if present."""


def vp8_temporal(payload: bytes) -> Vp8Temporal | None:
    """The temporal layer fields of a VP8 packet, or None when its descriptor has none (the
    T bit is clear: a stream without temporal layers) or is cut short."""
    if len(payload) < 2 or not payload[0] & 0x80:
        return None
    ext = payload[1]
    if not ext & 0x20:  # T: TID/Y present
        return None
    offset = 2
    if ext & 0x80:  # I: picture id, 7 or 15 bits
        if len(payload) <= offset:
            return None
        offset += 2 if payload[offset] & 0x80 else 1
    tl0: int | None = None
    if ext & 0x40:  # L: TL0PICIDX
        if len(payload) <= offset:
            return None
        tl0 = payload[offset]
        offset += 1
    if len(payload) <= offset:
        return None
    byte = payload[offset]
    return Vp8Temporal(byte >> 6, bool(byte & 0x20), tl0)
