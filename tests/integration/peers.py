"""Real aiortc participants for integration tests and benchmarks.

A :class:`MediaClient` speaks Veche's signalling over ``websockets``, publishes synthetic audio
and video on its publish connection, answers the server's subscribe offers and keeps the remote
tracks it receives. The synthetic video carries its frame number in pixel blocks so a receiver
can read it back (latency measurements); the audio is a tone.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import VideoStreamTrack
from av import AudioFrame, VideoFrame
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

WIDTH, HEIGHT = 640, 480
# Like browsers: one transport for everything (aiortc's default, balanced, mishandles a second
# m-section of a kind when bundling).
_CONFIG = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
BLOCK = 16  # pixels per bit of the drawn frame number
BITS = 20


class CountingVideoTrack(VideoStreamTrack):
    """640x480 frames at 30 fps, each showing its number (and send time) as black/white blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.sent_at: dict[int, float] = {}

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = np.full((HEIGHT, WIDTH, 3), 96, dtype=np.uint8)
        number = self.count % (1 << BITS)
        for bit in range(BITS):
            value = 255 if number >> bit & 1 else 0
            image[0 : BLOCK * 2, bit * BLOCK * 2 : (bit + 1) * BLOCK * 2] = value
        # moving content so the encoder has work like a camera's
        x = (self.count * 7) % (WIDTH - 80)
        image[200:280, x : x + 80] = (40, 160, 220)
        frame = VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.sent_at[number] = time.monotonic()
        self.count += 1
        return frame


def read_frame_number(frame: VideoFrame) -> int:
    """The number drawn by :class:`CountingVideoTrack` (survives lossy coding)."""
    image = frame.to_ndarray(format="gray")
    number = 0
    for bit in range(BITS):
        block = image[
            BLOCK // 2 : BLOCK * 3 // 2,
            bit * BLOCK * 2 + BLOCK // 2 : bit * BLOCK * 2 + BLOCK * 3 // 2,
        ]
        if block.mean() > 128:
            number |= 1 << bit
    return number


class ToneTrack(MediaStreamTrack):
    """A 440 Hz tone in 20 ms frames at 48 kHz, paced in real time."""

    kind = "audio"
    RATE = 48000
    SAMPLES = 960

    def __init__(self, amplitude: int = 8000) -> None:
        super().__init__()
        self.amplitude = amplitude
        self._sent = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._start + self._sent / self.RATE - time.monotonic()))
        t = (np.arange(self.SAMPLES) + self._sent) / self.RATE
        data = (np.sin(2 * math.pi * 440 * t) * self.amplitude).astype(np.int16)
        frame = AudioFrame.from_ndarray(data.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, self.RATE)
        self._sent += self.SAMPLES
        return frame


class SparseToneTrack(ToneTrack):
    """A 20 ms tone frame every ``interval`` seconds: a cheap stand-in for a microphone in tests
    with many participants."""

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__()
        self.interval = interval

    async def recv(self) -> AudioFrame:
        await asyncio.sleep(self.interval)
        return await super().recv()


class SlideTrack(MediaStreamTrack):
    """A tiny (64x48) grey picture ``fps`` times a second: a cheap stand-in for a camera."""

    kind = "video"

    def __init__(self, fps: float = 2.0) -> None:
        super().__init__()
        self.fps = fps
        self.count = 0

    async def recv(self) -> VideoFrame:
        await asyncio.sleep(1 / self.fps)
        frame = VideoFrame.from_ndarray(np.full((48, 64, 3), 96, dtype=np.uint8), format="rgb24")
        frame.pts = int(self.count * 90000 / self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        self.count += 1
        return frame


def decline_sections(answer: str, codecs: tuple[str, ...]) -> str:
    """``answer`` with every media section whose codec is one of ``codecs`` declined the way
    Firefox declines a codec it cannot decode: port 0, inactive, no ICE or DTLS attributes, its
    mid left out of the bundle."""
    names = {codec.split("/", 1)[1].lower() for codec in codecs}
    head: list[str] = []
    sections: list[list[str]] = []
    for line in answer.splitlines():
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            head.append(line)
    declined: set[str] = set()
    for index, lines in enumerate(sections):
        rtpmaps = [
            line.split(" ", 1)[1].split("/")[0].lower() for line in lines if "rtpmap" in line
        ]
        if not any(name in names for name in rtpmaps):
            continue
        mid = next(line[6:] for line in lines if line.startswith("a=mid:"))
        payload = lines[0].split(" ")[3]
        declined.add(mid)
        sections[index] = [
            f"{lines[0].split(' ')[0]} 0 UDP/TLS/RTP/SAVPF {payload}",
            "c=IN IP4 0.0.0.0",
            "a=inactive",
            f"a=mid:{mid}",
        ]
    for index, line in enumerate(head):
        if line.startswith("a=group:BUNDLE"):
            kept = [mid for mid in line.split(" ")[1:] if mid not in declined]
            head[index] = " ".join(["a=group:BUNDLE", *kept])
    return "\r\n".join(head + [line for lines in sections for line in lines]) + "\r\n"


@dataclass
class RemoteTrack:
    """A track received on the subscribe connection, and what was read from it."""

    owner: str
    track: MediaStreamTrack
    frames: int = 0
    first_frame_at: float | None = None
    numbers: list[tuple[int, float]] = field(default_factory=list)
    size: tuple[int, int] | None = None


class MediaClient:
    """One participant: signalling, a publish connection and a subscribe connection."""

    def __init__(
        self, ws: ClientConnection, *, decode: bool = True, decline: tuple[str, ...] = ()
    ) -> None:
        self.ws = ws
        self.decode = decode
        self.decline = decline
        self.participant_id = ""
        self.welcome: dict[str, Any] = {}
        self.messages: list[dict[str, Any]] = []
        self.received_at: list[float] = []
        """When each message of ``messages`` came in (``time.monotonic()``)."""
        self.answer_subscribe = True
        """Whether the server's subscribe offers are answered (never: that connection fails)."""
        self.publish_pc = RTCPeerConnection(_CONFIG)
        self.subscribe_pc: RTCPeerConnection | None = None
        self.remote: list[RemoteTrack] = []
        self.video_source: CountingVideoTrack | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._waiters: list[
            tuple[Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]
        ] = []
        self._offer_sdp = ""
        self.on_remote_frame: Callable[[RemoteTrack, Any], None] | None = None

    @classmethod
    async def join(
        cls,
        url: str,
        room: str,
        name: str,
        *,
        decode: bool = True,
        receive_codecs: list[str] | None = None,
        decline: tuple[str, ...] = (),
        resume: str | None = None,
    ) -> MediaClient:
        """Join ``room``; ``receive_codecs`` is what the client says it decodes (nothing said by
        default), ``decline`` the codecs (``video/H264``) whose sections it declines in its
        subscribe answers, as a browser that cannot decode them does; ``resume`` a resume
        token (coming back on a new connection, as the browser does after 1012)."""
        client = cls(await connect(url, max_size=2**22), decode=decode, decline=decline)
        hello: dict[str, Any] = {"type": "hello", "version": 1, "room": room, "name": name}
        if receive_codecs is not None:
            hello["receive_codecs"] = receive_codecs
        if resume is not None:
            hello["resume"] = resume
        await client.ws.send(json.dumps(hello))
        welcome = json.loads(await client.ws.recv())
        assert welcome["type"] == "welcome", welcome
        client.welcome = welcome
        client.participant_id = welcome["participant_id"]
        client._reader = asyncio.create_task(client._read())
        return client

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> dict[str, Any]:
        for message in self.messages:
            if predicate(message):
                return message
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        return await asyncio.wait_for(future, timeout)

    async def publish(
        self,
        *,
        audio: bool = True,
        video: bool = True,
        video_codecs: list[str] | None = None,
        silent: bool = False,
        cheap: bool = False,
    ) -> None:
        """Offer synthetic tracks on the publish connection and apply the answer;
        ``video_codecs`` (``["video/H264"]``), when given, are the only video codecs offered, in
        that order; ``cheap`` sends a sparse tone and a tiny slide instead (many publishers on
        one machine)."""
        if cheap:
            if audio:
                self.publish_pc.addTrack(SparseToneTrack())
            if video:
                self.publish_pc.addTrack(SlideTrack())
            audio = video = False
        if audio:
            self.publish_pc.addTrack(ToneTrack(amplitude=0 if silent else 8000))
        if video:
            self.video_source = CountingVideoTrack()
            self.publish_pc.addTrack(self.video_source)
            if video_codecs:
                codecs = RTCRtpSender.getCapabilities("video").codecs
                chosen = [c for name in video_codecs for c in codecs if c.mimeType == name]
                rtx = [c for c in codecs if c.mimeType == "video/rtx"]
                for transceiver in self.publish_pc.getTransceivers():
                    if transceiver.kind == "video":
                        transceiver.setCodecPreferences(chosen + rtx)
        await self.publish_pc.setLocalDescription(await self.publish_pc.createOffer())
        await self.send(
            {"type": "offer", "pc": "publish", "sdp": self.publish_pc.localDescription.sdp}
        )
        answer = await self.wait_for(lambda m: m["type"] == "answer" and m["pc"] == "publish")
        await self.publish_pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))

    async def republish(self, **publish: Any) -> None:
        """Publish again on a new connection (after the server reported ``media_failed``),
        with :meth:`publish`'s arguments."""
        await asyncio.wait_for(self.publish_pc.close(), 10)
        self.publish_pc = RTCPeerConnection(_CONFIG)
        received = zip(self.messages, self.received_at, strict=True)
        kept = [(m, t) for m, t in received if m["type"] != "answer"]
        self.messages = [m for m, _ in kept]
        self.received_at = [t for _, t in kept]
        await self.publish(**publish)

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                message = json.loads(raw)
                self.messages.append(message)
                self.received_at.append(time.monotonic())
                for waiter in list(self._waiters):
                    predicate, future = waiter
                    if not future.done() and predicate(message):
                        future.set_result(message)
                        self._waiters.remove(waiter)
                failed = message["type"] == "error" and message["code"] == "media_failed"
                if failed and message.get("pc") != "publish" and self.subscribe_pc is not None:
                    # The server starts the subscribe connection afresh: answer on a new one.
                    old, self.subscribe_pc = self.subscribe_pc, None
                    closing = asyncio.ensure_future(old.close())
                    self._tasks.add(closing)
                subscribe = message["type"] == "offer" and message["pc"] == "subscribe"
                if subscribe and self.answer_subscribe:
                    await self._answer_subscribe(message["sdp"])

    async def _answer_subscribe(self, sdp: str) -> None:
        if self.subscribe_pc is None:
            pc = self.subscribe_pc = RTCPeerConnection(_CONFIG)

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                owner = self._owner_of(self._offer_sdp, track)
                remote = RemoteTrack(owner, track)
                self.remote.append(remote)
                task = asyncio.ensure_future(self._consume(remote))
                self._tasks.add(task)

        pc = self.subscribe_pc
        self._offer_sdp = sdp
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription.sdp
        if self.decline:
            answer = decline_sections(answer, self.decline)
        await self.send({"type": "answer", "pc": "subscribe", "sdp": answer})

    @staticmethod
    def _owner_of(sdp: str, track: MediaStreamTrack) -> str:
        # The server names each forwarded stream after its publisher (msid stream id).
        for line in sdp.splitlines():
            if line.startswith("a=msid:") and line.split()[-1] == track.id:
                return line.split(":", 1)[1].split()[0]
        return "?"

    async def _consume(self, remote: RemoteTrack) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await remote.track.recv()
                now = time.monotonic()
                remote.frames += 1
                if remote.first_frame_at is None:
                    remote.first_frame_at = now
                if isinstance(frame, VideoFrame):
                    remote.size = (frame.width, frame.height)
                    if self.on_remote_frame is not None:
                        self.on_remote_frame(remote, frame)

    def tracks_from(self, owner: str, kind: str) -> list[RemoteTrack]:
        return [r for r in self.remote if r.owner == owner and r.track.kind == kind]

    def receives_from(self, owner: str, *, video: int, audio: int) -> bool:
        """Whether at least ``video`` video and ``audio`` audio frames of ``owner`` came in."""
        videos, audios = self.tracks_from(owner, "video"), self.tracks_from(owner, "audio")
        return bool(videos and audios and videos[0].frames >= video and audios[0].frames >= audio)

    async def close(self) -> None:
        # Close while the reader still reads: a full receive queue would hold back the close.
        await self.ws.close()
        for task in self._tasks:
            task.cancel()
        if self._reader is not None:
            self._reader.cancel()
        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is not None:
                await asyncio.wait_for(pc.close(), 10)
