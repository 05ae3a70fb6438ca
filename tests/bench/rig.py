"""The client side of the forwarding benchmark, in two processes of their own.

``python -m tests.bench.rig publish --url WS --room ROOM`` joins as the publisher of the
synthetic 640x480 30 fps VP8 video (its frame number drawn in) and an Opus tone, prints
``{"ready": true}`` once its media connects, and publishes until its standard input closes; then it
prints ``{"sent_at": {frame number: time.monotonic() when the frame was made}}``.

``python -m tests.bench.rig subscribe --url WS --room ROOM --count K ...`` joins K subscribers.
The first decodes the video and reads the drawn numbers (latency); the others tap their receivers
so that nothing is decoded, and only count packets and frames. Once every subscriber receives
video, it waits ``--warmup`` seconds, measures for ``--seconds`` and prints one JSON object (see
:func:`measure`); ``{"error": ...}`` if the subscribers do not all receive video in time.

Both print JSON lines on standard output, for ``bench_sfu_forwarding.py``; ``time.monotonic()`` is
the same clock in every process, so send and receive times compare across them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Final

from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket
from av import VideoFrame
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.bench.procstat import cpu_seconds, machine_jiffies
from tests.integration.peers import MediaClient, read_frame_number
from veche.media.internals import tap_receiver

CLOSE_TIMEOUT: Final = 10.0
"""Seconds to wait for one peer connection to close."""
VIDEO_TIMEOUT: Final = 30.0
"""Seconds every subscriber has to start receiving video."""
CONFIG: Final = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
"""Like a browser: one transport for all media, no STUN server."""


# ------------------------------------------------------------------------------- publisher


async def publish(url: str, room: str, *, record: bool = False) -> None:
    """Publish until standard input closes, then report when each video frame was made. With
    ``record``, the publisher (the room's moderator) records the room meanwhile."""
    client = await MediaClient.join(url, room, "publisher")
    try:
        await client.publish()
        deadline = time.monotonic() + VIDEO_TIMEOUT
        while client.publish_pc.connectionState != "connected":
            if time.monotonic() > deadline:
                raise TimeoutError("the publish connection did not connect")
            await asyncio.sleep(0.05)
        if record:
            await client.send({"type": "record", "active": True})
        _emit({"ready": True})
        await asyncio.to_thread(sys.stdin.read)
    finally:
        sent_at = dict(client.video_source.sent_at) if client.video_source else {}
        with contextlib.suppress(TimeoutError, ConnectionClosed):
            await client.close()
    _emit({"sent_at": sent_at})


# ------------------------------------------------------------------------------- subscribers


@dataclass
class StreamCounter:
    """Packets of one received stream, and for video its frames (distinct RTP timestamps,
    counted when a newer one arrives, so retransmissions do not count twice)."""

    video: bool
    packets: int = 0
    frames: int = 0
    _newest: int | None = None

    def add(self, packet: RtpPacket) -> None:
        self.packets += 1
        if not self.video:
            return
        newer = self._newest is None or 0 < (packet.timestamp - self._newest) % 2**32 < 2**31
        if newer:
            self._newest = packet.timestamp
            self.frames += 1


def count_packets(receiver: RTCRtpReceiver, counter: StreamCounter) -> None:
    """Count every RTP packet ``receiver`` gets (RTX included) before it handles it."""
    handle = receiver._handle_rtp_packet

    async def counted(packet: RtpPacket, arrival_time_ms: int) -> None:
        counter.add(packet)
        await handle(packet, arrival_time_ms)

    receiver._handle_rtp_packet = counted  # type: ignore[method-assign]


@dataclass
class Subscriber:
    """One participant that only receives: it answers the server's subscribe offers."""

    ws: ClientConnection
    decode: bool
    pc: RTCPeerConnection | None = None
    audio: StreamCounter = field(default_factory=lambda: StreamCounter(video=False))
    video: StreamCounter = field(default_factory=lambda: StreamCounter(video=True))
    decoded: list[tuple[int, float]] = field(default_factory=list)
    """(drawn frame number, time.monotonic() when decoded) for each decoded frame."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    async def join(cls, url: str, room: str, name: str, *, decode: bool) -> Subscriber:
        ws = await connect(url, max_size=2**22)
        await ws.send(json.dumps({"type": "hello", "version": 1, "room": room, "name": name}))
        welcome = json.loads(await ws.recv())
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"{name} was not welcomed: {welcome}")
        subscriber = cls(ws, decode)
        subscriber._spawn(subscriber._read())
        return subscriber

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                message = json.loads(raw)
                if message.get("type") == "offer" and message.get("pc") == "subscribe":
                    await self._answer(message["sdp"])

    async def _answer(self, sdp: str) -> None:
        if self.pc is None:
            self.pc = RTCPeerConnection(CONFIG)
            self.pc.on("track", self._on_track)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        answer = {"type": "answer", "pc": "subscribe", "sdp": self.pc.localDescription.sdp}
        await self.ws.send(json.dumps(answer))

    def _on_track(self, track: MediaStreamTrack) -> None:
        assert self.pc is not None
        receiver = next(t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track)
        if self.decode:
            self._spawn(self._consume(track))
        else:
            tap_receiver(receiver, lambda packet, codec: None)
        count_packets(receiver, self.video if track.kind == "video" else self.audio)

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if isinstance(frame, VideoFrame):
                    self.decoded.append((read_frame_number(frame), time.monotonic()))

    async def close(self) -> None:
        """Say ``leave``, hang up and close the peer connection (bounded in time).

        The reader runs until the socket has closed: a client that stops reading stops
        websockets from reading the close frame once its queue is full (``participant_left``
        from everyone else leaving at the same time fills it)."""
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(json.dumps({"type": "leave"}))
        await self.ws.close()
        for task in list(self._tasks):
            task.cancel()
        if self.pc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.pc.close(), CLOSE_TIMEOUT)


@dataclass(frozen=True)
class Snapshot:
    """Counters at one instant of the measuring window."""

    at: float
    cpu: dict[str, float]
    machine: tuple[int, int]
    packets: int
    frames: list[int]

    @classmethod
    def take(cls, pids: dict[str, int], subscribers: list[Subscriber]) -> Snapshot:
        return cls(
            at=time.monotonic(),
            cpu={role: cpu_seconds(pid) for role, pid in pids.items()},
            machine=machine_jiffies(),
            packets=sum(s.audio.packets + s.video.packets for s in subscribers),
            frames=[s.video.frames for s in subscribers],
        )


async def measure(
    subscribers: list[Subscriber], pids: dict[str, int], warmup: float, seconds: float
) -> dict[str, Any]:
    """Wait for video everywhere and ``warmup`` seconds, then measure for ``seconds``.

    Returns ``cores`` (CPU time of each process in ``pids`` per second of the window),
    ``machine_busy`` (share of all cores busy), ``packets_per_second`` (RTP packets received
    by all subscribers together, audio and video, retransmissions included), ``fps`` (video
    frames received per second, per subscriber), ``decoded`` (number and time of each frame the
    first subscriber decoded in the window).
    """
    start = time.monotonic()
    while any(s.video.frames == 0 for s in subscribers):
        if time.monotonic() - start > VIDEO_TIMEOUT:
            waiting = sum(1 for s in subscribers if s.video.frames == 0)
            return {"error": f"{waiting} of {len(subscribers)} subscribers got no video"}
        await asyncio.sleep(0.05)
    await asyncio.sleep(warmup)
    before = Snapshot.take(pids, subscribers)
    await asyncio.sleep(seconds)
    after = Snapshot.take(pids, subscribers)
    window = after.at - before.at
    busy = after.machine[0] - before.machine[0]
    total = after.machine[1] - before.machine[1]
    return {
        "cores": {role: (after.cpu[role] - before.cpu[role]) / window for role in pids},
        "machine_busy": busy / total if total else 0.0,
        "packets_per_second": (after.packets - before.packets) / window,
        "fps": [(b - a) / window for a, b in zip(before.frames, after.frames, strict=True)],
        "decoded": [(n, t) for n, t in subscribers[0].decoded if before.at <= t <= after.at],
    }


async def subscribe(
    url: str, room: str, count: int, pids: dict[str, int], warmup: float, seconds: float
) -> None:
    """Join ``count`` subscribers (the first decodes), measure, leave, print the result."""
    subscribers: list[Subscriber] = []
    try:
        for number in range(count):
            subscribers.append(
                await Subscriber.join(url, room, f"subscriber{number}", decode=number == 0)
            )
        result = await measure(subscribers, {**pids, "subscribers": os.getpid()}, warmup, seconds)
    finally:
        await asyncio.gather(*(s.close() for s in subscribers), return_exceptions=True)
    _emit(result)


def _emit(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.rig", description=__doc__)
    parser.add_argument("role", choices=["publish", "subscribe"])
    parser.add_argument("--url", required=True, help="the server's WebSocket URL")
    parser.add_argument("--room", required=True)
    parser.add_argument("--count", type=int, default=1, help="subscribers to join")
    parser.add_argument("--server-pid", type=int, help="server process to measure")
    parser.add_argument("--publisher-pid", type=int, help="publisher process to measure")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--record", action="store_true", help="publisher: record the room")
    args = parser.parse_args()
    if args.role == "publish":
        asyncio.run(publish(args.url, args.room, record=args.record))
    else:
        given = {"server": args.server_pid, "publisher": args.publisher_pid}
        pids = {role: pid for role, pid in given.items() if pid is not None}
        asyncio.run(subscribe(args.url, args.room, args.count, pids, args.warmup, args.seconds))


if __name__ == "__main__":
    main()
