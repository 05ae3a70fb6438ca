"""Cheap participants for load tests: they publish pre-encoded media and count what they receive
without decoding it, so that one test process can stand for many people.

A clip is encoded once (:func:`encode_clip`, real libvpx through PyAV, and Opus) at the
bitrates aiortc's VP8 encoder spans, in three temporal layers as Chromium sends a camera (L1T3:
TIDs 0, 2, 1, 2, error-resilient; each frame's TID, layer sync flag and TL0PICIDX in its payload
descriptor), so that the server can send a viewer fewer frames a second without a keyframe.
Each :class:`ReplayParticipant` replays it on a real aiortc publish connection: its sender's
encoder is replaced by a :class:`Replay` that hands out the next frame at 30 fps, restarts the
clip at its keyframe when asked for one (PLI), and, like aiortc's encoder, follows the bitrate
the server tells it (REMB) by switching to the version encoded nearest below it (at that
version's keyframe). Like a browser, it answers the server's NACKs with RTX from the packets it
sent last (aiortc's sender keeps them), each packet at most twice and 100 ms apart
(:func:`tests.bench.replay.may_resend`, as the meeting benchmark's rig): aiortc alone resends
every packet each NACK names, however often, and when the server still named every packet
missing among the last 128 in each NACK, the same stale packets came again and again under
loss (1,013 retransmissions for 37 NACKs in one run's 10 s), more for a starved server to
read. Its subscribe connection taps each receiver
(:func:`~veche.media.internals.tap_receiver`, nothing decoded) and counts, per second and per
publisher, audio packets and video frames (distinct RTP timestamps).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Final

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.codecs.vpx import PACKET_MAX, VpxPayloadDescriptor
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCEncodedFrame
from aiortc.rtp import RtpPacket
from av import AudioFrame, VideoFrame
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.bench.replay import HISTORY, may_resend
from veche.media.internals import tap_receiver

from .peers import _CONFIG

FPS: Final = 30
AUDIO_FRAME: Final = 0.06
"""Seconds of sound in one audio packet."""
BITRATES: Final = (1_500_000, 600_000, 250_000)
"""The versions of the clip, highest first: aiortc's VP8 encoder's range."""
TEMPORAL_PATTERN: Final = (0, 2, 1, 2)
"""The TID of each frame in a group of four (libvpx's ``ts_layering_mode`` 3, as Chromium's
L1T3): TID 0 alone is 7.5 fps, TID 0-1 15 fps."""
LAYER_SYNC: Final = (False, True, True, False)
"""Whether each frame of a group refers to the base layer only (checked by decoding: the
second TID 2 frame refers to the TID 1 frame before it)."""
_ENCODER: Final = "_RTCRtpSender__encoder"


@dataclass(frozen=True)
class Clip:
    """Encoded media to replay: ``video[bitrate]`` is a list of frames (each a list of RTP
    payloads, the first frame a keyframe); ``audio`` Opus frames of :data:`AUDIO_FRAME`."""

    video: dict[int, list[list[bytes]]]
    audio: list[list[bytes]]


def encode_clip(seconds: float = 2.0, size: tuple[int, int] = (640, 480)) -> Clip:
    """Encode a moving picture with some grain at every bitrate of :data:`BITRATES` (about
    145, 80 and 77 packets a second, a third of them in the base temporal layer: the encoder
    cannot go much lower on this picture), and a tone."""
    width, height = size
    rng = np.random.default_rng(13)
    count = round(seconds * FPS)
    yy, xx = np.mgrid[0:height, 0:width]
    pictures = []
    for index in range(count):
        waves = np.sin((xx + 5 * index) / 23.0) * np.cos((yy - 3 * index) / 17.0)
        base = 128 + 60 * waves + 40 * np.sin(xx * yy / 5000.0 + index / 5)
        noise = np.kron(rng.integers(0, 16, size=(height // 8, width // 8)), np.ones((8, 8)))
        gray = np.clip(base + noise, 0, 255).astype(np.uint8)
        rgb = np.stack([gray, np.roll(gray, index, axis=1), 255 - gray], axis=2)
        frame = VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = index * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        pictures.append(frame)
    video = {bitrate: _encode_layered(pictures, bitrate) for bitrate in BITRATES}
    # Opus in 60 ms packets (a framing Opus allows): audio, never degraded, is most of the
    # packets a governed meeting still needs, and a test on two shared cores needs room above it.
    opus = av.CodecContext.create("libopus", "w")
    opus.sample_rate = 48000
    opus.layout = "stereo"
    opus.format = "s16"
    opus.bit_rate = 32000
    opus.options = {"frame_duration": str(round(AUDIO_FRAME * 1000))}
    opus.open()
    samples = round(48000 * AUDIO_FRAME)
    audio = []
    for index in range(round(1 / AUDIO_FRAME)):
        t = (np.arange(samples) + samples * index) / 48000
        tone = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16)
        frame = AudioFrame.from_ndarray(
            np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = 48000
        frame.pts = samples * index
        frame.time_base = fractions.Fraction(1, 48000)
        audio.extend([bytes(packet)] for packet in opus.encode(frame))
    return Clip(video, audio)


def _encode_layered(pictures: list[VideoFrame], bitrate: int) -> list[list[bytes]]:
    """The pictures in VP8 with three temporal layers (the first a keyframe), each frame as its
    RTP payloads."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = pictures[0].width, pictures[0].height
    codec.pix_fmt = "yuv420p"
    codec.bit_rate = bitrate
    codec.time_base = fractions.Fraction(1, FPS)
    codec.framerate = FPS
    codec.gop_size = 3000  # one keyframe: the rest only when asked for (the clip restarts)
    # Kilobits per second up to each layer (libvpx shares them out as Chromium does).
    layers = ",".join(str(bitrate // 1000 * share // 100) for share in (40, 60, 100))
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "error-resilient": "1",
        "ts-parameters": (
            f"ts_number_layers=3:ts_target_bitrate={layers}:ts_rate_decimator=4,2,1"
            ":ts_periodicity=4:ts_layer_id=0,2,1,2:ts_layering_mode=3"
        ),
    }
    encoded: list[bytes] = []
    for index, picture in enumerate(pictures):
        picture = picture.reformat(format="yuv420p")
        picture.pts = index
        picture.time_base = codec.time_base
        encoded.extend(bytes(packet) for packet in codec.encode(picture))
    encoded.extend(bytes(packet) for packet in codec.encode(None))
    assert len(encoded) == len(pictures), "libvpx held back or dropped frames"
    return [_packetize(data, index) for index, data in enumerate(encoded)]


def _packetize(data: bytes, index: int) -> list[bytes]:
    """Frame ``index`` of the clip as RTP payloads: a payload descriptor with its picture id,
    TL0PICIDX, TID and layer sync flag (RFC 7741) before each piece."""
    position = index % len(TEMPORAL_PATTERN)
    descriptor = VpxPayloadDescriptor(
        partition_start=1,
        partition_id=0,
        picture_id=index % (1 << 15),
        tl0picidx=(index // len(TEMPORAL_PATTERN)) % 256,
        tid=(TEMPORAL_PATTERN[position], int(LAYER_SYNC[position])),
    )
    payloads = []
    for start in range(0, len(data), PACKET_MAX - len(bytes(descriptor))):
        head = bytes(descriptor)
        payloads.append(head + data[start : start + PACKET_MAX - len(head)])
        descriptor.partition_start = 0
    return payloads


class Replay:
    """Stands in for a sender's encoder: the next frame of the clip, in real time."""

    def __init__(self, frames: dict[int, list[list[bytes]]], *, step: int, interval: float):
        self._frames = frames
        self._step = step
        self._interval = interval
        self.bitrate = max(frames)
        self.switches = 0
        self.keyframes = 0
        """Keyframes asked for (PLI)."""
        self.sent = 0
        self._index = 0
        self._count = 0
        self._due: float | None = None
        self.audio_level: int | None = None

    @property
    def target_bitrate(self) -> int:
        return self.bitrate

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        """The server's REMB: take the highest version not above it (the lowest at least),
        from its keyframe."""
        below = [b for b in self._frames if b <= bitrate]
        chosen = max(below) if below else min(self._frames)
        if chosen != self.bitrate:
            self.bitrate = chosen
            self.switches += 1
            self._index = 0

    def keyframe(self) -> None:
        """A PLI: restart at the clip's keyframe."""
        self._index = 0
        self.keyframes += 1

    async def next_frame(self, codec: RTCRtpCodecParameters) -> RTCEncodedFrame:
        now = time.monotonic()
        if self._due is None or now - self._due > 0.5:
            self._due = now
        await asyncio.sleep(max(0.0, self._due - now))
        self._due += self._interval
        frames = self._frames[self.bitrate]
        payloads = frames[self._index]
        self._index = (self._index + 1) % len(frames)
        self._count += 1
        self.sent += 1
        return RTCEncodedFrame(payloads, self._count * self._step, self.audio_level)


class _Placeholder(MediaStreamTrack):
    """A track for aiortc to start the sender with; never read (the replay feeds it)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Any:
        raise RuntimeError("a replayed track is fed, not read")


def _bound_retransmissions(sender: RTCRtpSender, participant: ReplayParticipant) -> None:
    """Let aiortc's sender resend a NACKed packet only within :func:`may_resend`'s bounds."""
    resent: dict[int, tuple[float, int]] = {}
    retransmit = sender._retransmit

    async def bounded(sequence: int) -> None:
        if not may_resend(resent, sequence, time.monotonic()):
            return
        if len(resent) > HISTORY:
            resent.pop(next(iter(resent)))  # the oldest noted
        participant.retransmissions += 1
        await retransmit(sequence)

    sender._retransmit = bounded  # type: ignore[method-assign]


def _replace_encoder(sender: RTCRtpSender, replay: Replay, *, follow_remb: bool) -> None:
    sender._next_encoded_frame = replay.next_frame  # type: ignore[method-assign]
    sender._send_keyframe = replay.keyframe  # type: ignore[method-assign]
    if follow_remb:
        setattr(sender, _ENCODER, replay)  # aiortc hands REMB to the encoder's target_bitrate


class ReplayParticipant:
    """One participant publishing the clip and counting what it receives, per second."""

    def __init__(self, ws: ClientConnection, participant_id: str) -> None:
        self.ws = ws
        self.participant_id = participant_id
        self.publish_pc = RTCPeerConnection(_CONFIG)
        self.subscribe_pc: RTCPeerConnection | None = None
        self.video: Replay | None = None
        self.audio: Replay | None = None
        self.messages: list[dict[str, Any]] = []
        self.received: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
        """``(publisher, kind)`` to second (``int(time.monotonic())``) to audio packets or
        video frames received in it."""
        self._newest: dict[tuple[str, str], int] = {}
        self._answer: asyncio.Future[dict[str, Any]] | None = None
        self._offer_sdp = ""
        self._reader: asyncio.Task[None] | None = None
        self.retransmissions = 0
        """Packets sent again for the server's NACKs."""

    @classmethod
    async def join(cls, url: str, room: str, name: str) -> ReplayParticipant:
        ws = await connect(url, max_size=2**22)
        await ws.send(json.dumps({"type": "hello", "version": 1, "room": room, "name": name}))
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        participant = cls(ws, welcome["participant_id"])
        participant._reader = asyncio.create_task(participant._read())
        return participant

    async def publish(self, clip: Clip, *, loud: bool = False, follow_remb: bool = True) -> None:
        """Publish the clip's tone (``loud``: a speaker's level, else near silence) and video;
        without ``follow_remb`` the video keeps the clip's highest bitrate whatever the server
        says (a publisher that does not adapt: the server alone must cope)."""
        pc = self.publish_pc
        pc.addTrack(_Placeholder("audio"))
        pc.addTrack(_Placeholder("video"))
        for transceiver in pc.getTransceivers():
            sender = transceiver.sender
            if transceiver.kind == "audio":
                self.audio = Replay(
                    {0: clip.audio}, step=round(48000 * AUDIO_FRAME), interval=AUDIO_FRAME
                )
                self.audio.audio_level = -10 if loud else -127
                _replace_encoder(sender, self.audio, follow_remb=False)
            else:
                self.video = Replay(clip.video, step=90000 // FPS, interval=1 / FPS)
                _replace_encoder(sender, self.video, follow_remb=follow_remb)
                _bound_retransmissions(sender, self)
        self._answer = asyncio.get_running_loop().create_future()
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"type": "offer", "pc": "publish", "sdp": pc.localDescription.sdp}
        await self.ws.send(json.dumps(offer))
        answer = await asyncio.wait_for(self._answer, 20)
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                message = json.loads(raw)
                self.messages.append(message)
                kind, pc = message["type"], message.get("pc")
                if kind == "answer" and pc == "publish" and self._answer is not None:
                    if not self._answer.done():
                        self._answer.set_result(message)
                elif kind == "offer" and pc == "subscribe":
                    await self._answer_subscribe(message["sdp"])

    async def _answer_subscribe(self, sdp: str) -> None:
        if self.subscribe_pc is None:
            self.subscribe_pc = RTCPeerConnection(_CONFIG)
            self.subscribe_pc.on("track", self._on_track)
        pc = self.subscribe_pc
        self._offer_sdp = sdp
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        answer = {"type": "answer", "pc": "subscribe", "sdp": pc.localDescription.sdp}
        await self.ws.send(json.dumps(answer))

    def _on_track(self, track: MediaStreamTrack) -> None:
        assert self.subscribe_pc is not None
        owner = "?"
        for line in self._offer_sdp.splitlines():
            if line.startswith("a=msid:") and line.split()[-1] == track.id:
                owner = line.split(":", 1)[1].split()[0]
        receiver = next(
            t.receiver for t in self.subscribe_pc.getTransceivers() if t.receiver.track is track
        )
        key = (owner, track.kind)

        def count(packet: RtpPacket, codec: RTCRtpCodecParameters) -> None:
            if track.kind == "video":
                newest = self._newest.get(key)
                if newest is not None and not 0 < (packet.timestamp - newest) % 2**32 < 2**31:
                    return  # another packet of a frame already counted, or a late one
                self._newest[key] = packet.timestamp
            self.received[key][int(time.monotonic())] += 1

        tap_receiver(receiver, count)

    def receives_from(self, owner: str) -> bool:
        """Whether both audio and video of ``owner`` came in."""
        return bool(self.received.get((owner, "audio"))) and bool(
            self.received.get((owner, "video"))
        )

    async def close(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(json.dumps({"type": "leave"}))
        await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pc.close(), 10)
