"""A short pre-encoded clip that the meeting benchmark's publishers replay instead of encoding.

:func:`load_clip` encodes it once (PyAV's libvpx and libopus, a few seconds of CPU) and keeps it
in a cache file, so that fifty replaying publishers cost about what sending packets costs. The
video is one synthetic picture (a drifting pattern with a band of fresh noise, so that the rate
control spends its budget as on a camera) in three simulcast layers, lowest first; each layer
has its frames as delta frames (played in a loop: no periodic keyframe) and, for every frame, a
keyframe version, sent instead when the server asks for a keyframe (PLI). Each layer is in three
temporal layers as Chromium sends a camera (L1T3: TIDs 0, 2, 1, 2, error-resilient), every
payload descriptor naming its TID, layer sync flag, picture id and TL0PICIDX; the replaying
sender numbers picture ids and TL0PICIDX on across loops (:func:`renumber`). The audio is a
second of Opus frames.

Every frame's first packet ends with bytes no other frame of the clip ends with:
:meth:`Clip.identify` turns the tail of a received first packet back into (layer, frame index,
keyframe), which tells a viewer which layer it receives and, with the publishers' shared
schedule, when the frame was sent (see ``meeting_rig.py``). The server rewrites only the VP8
descriptor at the start of a packet, never its tail.
"""

from __future__ import annotations

import fractions
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import av
import numpy as np
from aiortc.codecs.vpx import PACKET_MAX
from av import AudioFrame, VideoFrame

FPS: Final = 30
FRAMES: Final = 60
"""Frames of the clip (2 s at 30 fps), replayed in a loop."""
AUDIO_FRAMES: Final = 50
"""20 ms Opus frames (1 s)."""
TAIL: Final = 12
"""Bytes at the end of a frame's first packet that identify it."""


@dataclass(frozen=True)
class LayerSpec:
    rid: str
    width: int
    height: int
    bitrate: int


LAYERS: Final = (
    LayerSpec("q", 320, 180, 150_000),
    LayerSpec("h", 640, 360, 500_000),
    LayerSpec("f", 1280, 720, 1_500_000),
)
"""The browser client's camera layers, lowest first (``web/`` publishes the same three)."""
SINGLE_LAYER: Final = 1
"""The layer a publisher without simulcast sends (640x360, 500 kbps)."""
TEMPORAL_PATTERN: Final = (0, 2, 1, 2)
"""The TID of each frame in a group of four (libvpx's ``ts_layering_mode`` 3, as Chromium's
L1T3): TID 0 alone is 7.5 fps, TIDs 0-1 15 fps. :data:`FRAMES` is a multiple of four."""
LAYER_SYNC: Final = (False, True, True, False)
"""Whether each frame of a group refers to the base layer only."""
DESCRIPTOR: Final = 6
"""Bytes of every payload's VP8 descriptor here: X, then I, L and T; a 15-bit picture id;
TL0PICIDX; TID, Y and KEYIDX."""

_VERSION: Final = 2
"""Bump when what is encoded changes: the cache file is named after it."""


@dataclass
class Clip:
    """Encoded frames: ``video[layer][i]`` and ``keyframes[layer][i]`` are RTP payloads (VP8
    descriptor included) of frame ``i``; ``audio[i]`` one Opus payload."""

    video: list[list[list[bytes]]]
    keyframes: list[list[list[bytes]]]
    audio: list[bytes]
    _tails: dict[bytes, tuple[int, int, bool]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        seen: dict[bytes, tuple[int, int, bool] | None] = {}
        for key, frames in ((False, self.video), (True, self.keyframes)):
            for layer, layer_frames in enumerate(frames):
                for index, payloads in enumerate(layer_frames):
                    tail = payloads[0][-TAIL:]
                    seen[tail] = None if tail in seen else (layer, index, key)
        self._tails = {tail: found for tail, found in seen.items() if found is not None}

    def identify(self, first_payload: bytes) -> tuple[int, int, bool] | None:
        """(layer, frame index, keyframe) of a frame from its first packet's payload; None for
        a frame of no known tail (a tail two frames share)."""
        return self._tails.get(first_payload[-TAIL:])

    def layer_bitrates(self) -> list[float]:
        """Bits per second each layer's delta frames make at :data:`FPS`."""
        return [
            sum(len(p) for frame in frames for p in frame) * 8 * FPS / len(frames)
            for frames in self.video
        ]


def _pictures(width: int, height: int) -> list[np.ndarray]:
    """The clip's pictures at ``width`` x ``height`` (one more than :data:`FRAMES`: the first
    is encoded as the opening keyframe and dropped), drawn at 1280x720 and scaled: a texture of
    16-pixel cells drifting left by one cell a frame (whole pixels at every layer's scale), a
    moving block, and a band of fresh 4-pixel cells (detail that only the larger layers keep),
    so that each layer comes near its bitrate as a camera's would."""
    rng = np.random.default_rng(13)
    cell = np.ones((16, 16, 3), dtype=np.uint8)
    texture = np.kron(rng.integers(0, 4, (45, 80 + FRAMES + 1, 1), dtype=np.uint8), cell)
    texture = texture * 64 + 32
    pictures = []
    for number in range(FRAMES + 1):
        image = np.ascontiguousarray(texture[:, number * 16 : number * 16 + 1280])
        fresh = rng.integers(0, 4, (12, 320, 1), dtype=np.uint8) * 64
        image[352:400, :] = np.kron(fresh, np.ones((4, 4, 3), dtype=np.uint8))
        x = (number * 16) % 1120
        image[90:250, x : x + 160] = (40, 160, 220)
        frame = VideoFrame.from_ndarray(image, format="rgb24")
        pictures.append(frame.reformat(width=width, height=height, format="yuv420p").to_ndarray())
    return pictures


def _vp8(spec: LayerSpec, pictures: list[np.ndarray], *, key: bool) -> list[list[bytes]]:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = spec.width, spec.height
    codec.bit_rate = spec.bitrate
    codec.pix_fmt = "yuv420p"
    codec.time_base = fractions.Fraction(1, FPS)
    codec.gop_size = 3000
    # Kilobits per second up to each temporal layer (libvpx shares them out as Chromium does).
    rates = ",".join(str(spec.bitrate // 1000 * share // 100) for share in (40, 60, 100))
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "4",
        "lag-in-frames": "0",
        "minrate": str(spec.bitrate),
        "maxrate": str(spec.bitrate),
        "bufsize": str(spec.bitrate),
        "undershoot-pct": "100",
        "overshoot-pct": "15",
        "error-resilient": "1",
        "ts-parameters": (
            f"ts_number_layers=3:ts_target_bitrate={rates}:ts_rate_decimator=4,2,1"
            ":ts_periodicity=4:ts_layer_id=0,2,1,2:ts_layering_mode=3"
        ),
    }
    frames = []
    for number, picture in enumerate(pictures):
        frame = VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts = number
        frame.time_base = codec.time_base
        if key:
            frame.pict_type = av.video.frame.PictureType.I
        data = b"".join(bytes(packet) for packet in codec.encode(frame))
        # Frame ``number`` is played as frame ``number - 1`` of the loop (the first is dropped).
        position = (number - 1) % len(TEMPORAL_PATTERN)
        tid, sync = (0, True) if key else (TEMPORAL_PATTERN[position], LAYER_SYNC[position])
        frames.append(_packetize(data, tid, sync))
    return frames[1:]


def _packetize(data: bytes, tid: int, sync: bool) -> list[bytes]:
    """A frame's RTP payloads, each with a :data:`DESCRIPTOR`-byte descriptor naming ``tid``
    and ``sync`` (picture id and TL0PICIDX 0: see :func:`renumber`)."""
    payloads = []
    size = PACKET_MAX - DESCRIPTOR  # as large as aiortc's payloads
    for start in range(0, len(data), size):
        first = 0x10 if start == 0 else 0x00  # S: a partition starts here
        head = bytes([0x80 | first, 0xE0, 0x80, 0x00, 0x00, (tid << 6) | (int(sync) << 5)])
        payloads.append(head + data[start : start + size])
    return payloads


def renumber(payloads: list[bytes], picture_id: int, tl0picidx: int) -> list[bytes]:
    """``payloads`` (one frame of the clip) with picture id ``picture_id`` (15 bits) and
    TL0PICIDX ``tl0picidx`` (8 bits), so that a replayed loop numbers on."""
    fields = bytes([0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF, tl0picidx & 0xFF])
    return [payload[:2] + fields + payload[5:] for payload in payloads]


def temporal_id(payload: bytes) -> int:
    """The TID of a frame of the clip, from one of its payloads."""
    return payload[5] >> 6


def _opus() -> list[bytes]:
    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate = 32000
    codec.sample_rate = 48000
    codec.format = "s16"
    codec.layout = "mono"
    codec.time_base = fractions.Fraction(1, 48000)
    codec.options = {"application": "voip"}
    payloads: list[bytes] = []
    number = 0
    while len(payloads) < AUDIO_FRAMES:
        t = (np.arange(960) + number * 960) / 48000
        data = (np.sin(2 * np.pi * 440 * t) * 6000).astype(np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(data, format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, number * 960
        payloads += [bytes(packet) for packet in codec.encode(frame)]
        number += 1
    return payloads[:AUDIO_FRAMES]


def encode_clip() -> Clip:
    """Encode the clip (a few seconds of CPU)."""
    video, keyframes = [], []
    for spec in LAYERS:
        pictures = _pictures(spec.width, spec.height)
        video.append(_vp8(spec, pictures, key=False))
        keyframes.append(_vp8(spec, pictures, key=True))
    return Clip(video, keyframes, _opus())


def clip_path() -> Path:
    return Path(tempfile.gettempdir()) / f"veche-bench-clip-{_VERSION}.pickle"


def load_clip(path: Path | None = None) -> Clip:
    """The clip from its cache file, encoded and written there first if it is not there."""
    path = path or clip_path()
    if path.exists():
        with path.open("rb") as file:
            video, keyframes, audio = pickle.load(file)
        return Clip(video, keyframes, audio)
    clip = encode_clip()
    partial = path.with_suffix(".partial")
    with partial.open("wb") as file:
        pickle.dump((clip.video, clip.keyframes, clip.audio), file)
    partial.replace(path)
    return clip
