"""The participants of the meeting benchmark, in a process of their own (several such processes
share one meeting).

``python -m tests.bench.meeting_rig --url WS --room ROOM --total N --first I --count C
--epoch T [--single]`` joins participants ``p<I>`` .. ``p<I+C-1>`` of an N-person meeting. Each
publishes a camera and a microphone by replaying :mod:`tests.bench.clip`: three simulcast layers
(``q``, ``h``, ``f``, declared with ``a=rid``/``a=simulcast`` as Chromium declares them), or with
``--single`` the middle layer alone, without simulcast. Each also views: it shows a page of up to
16 others (``p<i+1>`` large, the next ones small) and says so with ``view`` as the browser
client does: from its arrival, again as the others arrive (coalesced, :data:`VIEW_DELAY`);
with ``--single`` it sends no ``view`` and receives everything. Nothing is encoded
or decoded: publishers send pre-encoded packets, viewers count them.

It prints JSON lines: ``{"ready": ...}`` once every viewer receives every tile of its page (or
after a while, with ``"missing"`` tiles), then waits for ``start`` and ``stop`` lines on its
standard input and answers ``stop`` with what it measured in between (see
:meth:`Rig.results`); it leaves when its standard input closes.

Latency without a side channel: every publisher sends frame ``n`` of the clip loop at
``T + (n + i / N) / 30`` seconds of ``time.monotonic()`` (the same clock in every process on
the machine), so a viewer that recognises a frame (:meth:`Clip.identify`) knows when it was
sent. A frame more than the clip's length (2 s) late would be read as on time: the rig reports
how late its own publishers send (``send_lag_ms``) so that a rig that falls behind shows.

Publishing (and every reach into aiortc's and aioice's internals) is in :mod:`tests.bench.replay`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtp import RtpPacket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.bench.clip import FPS, FRAMES, Clip, load_clip
from tests.bench.replay import (
    IdleTrack,
    ReplaySender,
    attribute,
    count_in_the_clear,
    enlarge_buffers,
    sections,
    simulcast_offer,
    without_bandwidth_estimate,
)
from tests.bench.rig import count_packets
from veche.media.internals import lighten_aiortc, patient_consent, read_in_bursts, tap_receiver

CONFIG: Final = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
PAGE: Final = 16
"""Tiles a viewer shows at most: one large, the rest small."""
LARGE: Final = (1280, 720)
SMALL: Final = (320, 180)
"""CSS pixels of the large tile and of the small ones (the server picks the ``f`` and ``q``
layers for them)."""
SPEAKERS: Final = 3
"""Participants whose microphone is loud (the others send near silence)."""
AUDIO_STEP: Final = 0.02
MEASURED_EVERY: Final = 8
"""Every this many participants (``p0``, ``p8``, …) one viewer decrypts what it receives and
recognises each frame (its layer and latency); the others count frames from clear headers."""
VIEW_DELAY: Final = 0.15
"""Seconds a viewer gathers arrivals before it reports its page again (the browser's delay)."""
READY_TIMEOUT: Final = 60.0
"""Seconds after the last participant joined that viewers have to receive every tile."""


def page(viewer: int, total: int) -> list[int]:
    """The participants ``viewer`` shows, the large tile first."""
    return [(viewer + step) % total for step in range(1, min(PAGE, total - 1) + 1)]


# ------------------------------------------------------------------------------- viewing


@dataclass
class TileCounter:
    """What a viewer receives on one track: packets, bytes (RTP payload, retransmissions
    included), and for video its frames by layer and their latency: a frame counts once, when
    the first packet of a newer frame than any counted is recognised (:meth:`Clip.identify`)."""

    video: bool
    rig: Rig
    track_id: str = ""
    stream: str = ""
    """The stream id of the track (its publisher's participant id)."""
    owner: int | None = None
    packets: int = 0
    octets: int = 0
    frames: int = 0
    layers: Counter[int] = field(default_factory=Counter)
    _last_timestamp: int | None = None

    def add_header(self, timestamp: int, size: int) -> None:
        """Count an encrypted packet from its clear RTP header (a viewer that does not decrypt,
        see :func:`count_in_the_clear`): its size, and a frame at each newer timestamp."""
        self.packets += 1
        self.octets += size
        last = self._last_timestamp
        if self.video and (last is None or 0 < (timestamp - last) % 2**32 < 2**31):
            self._last_timestamp = timestamp
            self.frames += 1

    def add(self, packet: RtpPacket) -> None:
        self.packets += 1
        self.octets += len(packet.payload)
        if not self.video:
            return
        last = self._last_timestamp
        if last is not None and not 0 < (packet.timestamp - last) % 2**32 < 2**31:
            return  # not a newer frame: a retransmission, or a packet of a frame counted
        found = self.rig.clip.identify(packet.payload)
        if found is None:
            return
        self._last_timestamp = packet.timestamp
        layer, index, _ = found
        self.frames += 1
        self.layers[layer] += 1
        if self.owner is not None and self.rig.measuring:
            self.rig.note_latency(self.owner, index, time.monotonic())


class Participant:
    """One member of the meeting: signalling, a publish connection replaying the clip, and a
    subscribe connection whose tracks are counted, never decoded."""

    def __init__(self, rig: Rig, index: int, ws: ClientConnection, welcome: dict[str, Any]):
        self.rig = rig
        self.index = index
        self.ws = ws
        self.participant_id: str = welcome["participant_id"]
        self.publish_pc = RTCPeerConnection(CONFIG)
        self.subscribe_pc: RTCPeerConnection | None = None
        self.sender: ReplaySender | None = None
        self.tiles: list[TileCounter] = []
        self.measured = index % rig.measured_every == 0
        """Whether this viewer decrypts and recognises every frame (layer, latency); the others
        count from the clear RTP headers, which costs the rig far less."""
        self._by_mid: dict[str, TileCounter] = {}
        self._by_ssrc: dict[int, TileCounter] = {}
        self._offer_sdp = ""
        self._answers: asyncio.Queue[str] = asyncio.Queue()
        self._view: asyncio.TimerHandle | None = None
        self._shown = ""
        self._tasks: set[asyncio.Future[None]] = set()
        self._reader = asyncio.ensure_future(self._read())
        for info in welcome["participants"]:
            rig.note_participant(info["name"], info["id"])

    @classmethod
    async def join(cls, rig: Rig, index: int) -> Participant:
        ws = await connect(rig.url, max_size=2**24)
        hello = {"type": "hello", "version": 1, "room": rig.room, "name": f"p{index}"}
        await ws.send(json.dumps(hello))
        welcome = json.loads(await ws.recv())
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"p{index} was not welcomed: {welcome}")
        participant = cls(rig, index, ws, welcome)
        participant.schedule_view()
        return participant

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "participant_joined":
                    info = message["participant"]
                    self.rig.note_participant(info["name"], info["id"])
                    self.schedule_view()
                elif kind == "answer" and message.get("pc") == "publish":
                    self._answers.put_nowait(message["sdp"])
                elif kind == "offer" and message.get("pc") == "subscribe":
                    try:
                        await self._answer(message["sdp"])
                    except Exception as exc:  # the rig goes on; the bench reports its tiles
                        print(f"p{self.index}: subscribe answer failed: {exc!r}", file=sys.stderr)
                elif kind == "error":
                    print(f"p{self.index}: error from the server: {message}", file=sys.stderr)
                    if message.get("code") == "media_failed":
                        await self._renew(message.get("pc"))

    async def _renew(self, role: str | None) -> None:
        """Start the connection the server renewed afresh, as the browser client does: a new
        subscribe connection for its next offer (its tracks get counters of their own, added
        to the old ones'), or publishing again on a new connection."""
        if role != "publish" and self.subscribe_pc is not None:
            old, self.subscribe_pc = self.subscribe_pc, None
            self._by_mid, self._by_ssrc = {}, {}
            self._later(old.close())
        if role != "subscribe":
            old = self.publish_pc
            self.publish_pc = RTCPeerConnection(CONFIG)
            self._later(old.close())
            self._later(self.publish())

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def publish(self) -> None:
        pc = self.publish_pc
        audio = pc.addTransceiver(IdleTrack("audio"), direction="sendonly")
        video = pc.addTransceiver(IdleTrack("video"), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        enlarge_buffers(pc)
        offer = pc.localDescription.sdp
        if not self.rig.single:
            offer = simulcast_offer(offer)
        await self.ws.send(json.dumps({"type": "offer", "pc": "publish", "sdp": offer}))
        answer = await asyncio.wait_for(self._answers.get(), 30)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        self.sender = ReplaySender(
            self.rig.clip,
            video.sender,
            audio.sender,
            offer,
            answer,
            simulcast=not self.rig.single,
            level=30 if self.index < SPEAKERS else 110,
        )

    def schedule_view(self) -> None:
        """Report the page shortly, with whoever has arrived by then (unless ``single``)."""
        if self.rig.single or self._view is not None:
            return

        def report() -> None:
            self._view = None
            self._later(self.show())

        self._view = asyncio.get_running_loop().call_later(VIEW_DELAY, report)

    async def show(self) -> None:
        """Say which tiles of its page this participant shows (the browser client's ``view``):
        those whose participant has arrived."""
        tiles = []
        for position, other in enumerate(page(self.index, self.rig.total)):
            width, height = LARGE if position == 0 else SMALL
            pid = self.rig.ids.get(f"p{other}")
            if pid is not None:
                tiles.append({"participant_id": pid, "width": width, "height": height})
        text = json.dumps({"type": "view", "tiles": tiles})
        if text != self._shown:
            self._shown = text
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send(text)

    async def _answer(self, sdp: str) -> None:
        if self.subscribe_pc is None:
            self.subscribe_pc = RTCPeerConnection(CONFIG)
            self.subscribe_pc.on("track", self._on_track)
        self._offer_sdp = sdp
        await self.subscribe_pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        await self.subscribe_pc.setLocalDescription(await self.subscribe_pc.createAnswer())
        enlarge_buffers(self.subscribe_pc)
        if not self.measured:
            self._tiles_from_offer(sdp)
            count_in_the_clear(self.subscribe_pc, self._count_clear)
        answer = {
            "type": "answer",
            "pc": "subscribe",
            "sdp": self.subscribe_pc.localDescription.sdp,
        }
        await self.ws.send(json.dumps(answer))
        self._name_owners()

    def _on_track(self, track: MediaStreamTrack) -> None:
        assert self.subscribe_pc is not None
        receiver = next(
            t.receiver for t in self.subscribe_pc.getTransceivers() if t.receiver.track is track
        )
        tap_receiver(receiver, lambda packet, codec: None)
        if not self.measured:
            return  # counted in the clear, per SSRC of the offer
        tile = TileCounter(track.kind == "video", self.rig, track.id)
        self.tiles.append(tile)
        without_bandwidth_estimate(receiver)
        count_packets(receiver, tile)  # type: ignore[arg-type]
        self._name_owners()

    def _name_owners(self) -> None:
        """Each track's owner (its publisher's index), from the offer's ``a=msid`` (the stream
        id is the publisher's participant id)."""
        if not self.measured:
            return
        streams = {}
        for line in self._offer_sdp.splitlines():
            if line.startswith("a=msid:"):
                stream, track_id = line[len("a=msid:") :].split()[:2]
                streams[track_id] = stream.split("~")[0]
        for tile in self.tiles:
            tile.stream = streams.get(tile.track_id, "")
            tile.owner = self.rig.index_of.get(tile.stream)

    def resolve_owners(self) -> None:
        """Name the owners of tracks whose publisher was not known yet when they came."""
        for tile in self.tiles:
            if tile.owner is None and tile.stream:
                tile.owner = self.rig.index_of.get(tile.stream)

    def _tiles_from_offer(self, sdp: str) -> None:
        """A counter per section of the server's offer, keyed by the SSRC it sends (the first
        ``a=ssrc``; its RTX stream's packets are not counted), with the owner of its track."""
        self._by_ssrc = {}
        for section in sections(sdp):
            mid = attribute(section, "a=mid:")
            msid = attribute(section, "a=msid:")
            ssrc = attribute(section, "a=ssrc:")
            if mid is None or msid is None or ssrc is None:
                continue
            stream = msid.split()[0].split("~")[0]
            tile = self._by_mid.get(mid)
            if tile is None or (tile.stream and tile.stream != stream):
                # A section reused for another publisher's track counts afresh (its old
                # counts stay with their owner).
                tile = self._by_mid[mid] = TileCounter(section[0].startswith("m=video"), self.rig)
                self.tiles.append(tile)
            tile.stream = stream
            tile.owner = self.rig.index_of.get(tile.stream)
            self._by_ssrc[int(ssrc.split()[0])] = tile

    def _count_clear(self, data: bytes) -> None:
        tile = self._by_ssrc.get(int.from_bytes(data[8:12], "big"))
        if tile is not None:
            tile.add_header(int.from_bytes(data[4:8], "big"), len(data))

    def video_from(self, owner: int) -> TileCounter | None:
        """The counter of ``owner``'s video on the newest subscribe connection."""
        return next((t for t in reversed(self.tiles) if t.video and t.owner == owner), None)

    def frames_from(self, owner: int) -> int:
        """Video frames received from ``owner`` (on every subscribe connection so far)."""
        return sum(t.frames for t in self.tiles if t.video and t.owner == owner)

    async def close(self) -> None:
        if self._view is not None:
            self._view.cancel()
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(json.dumps({"type": "leave"}))
        await self.ws.close()
        self._reader.cancel()
        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pc.close(), 10)


# ------------------------------------------------------------------------------- the rig


class Rig:
    """This process's participants, their replay loop and the measuring window."""

    def __init__(
        self,
        url: str,
        room: str,
        total: int,
        clip: Clip,
        *,
        epoch: float,
        first: int = 0,
        count: int | None = None,
        single: bool = False,
        measured_every: int = MEASURED_EVERY,
    ) -> None:
        self.url = url
        self.measured_every = measured_every
        self.room = room
        self.total = total
        self.first = first
        self.count = total - first if count is None else count
        self.epoch = epoch
        self.single = single
        self.clip = clip
        self.ids: dict[str, str] = {}
        self.index_of: dict[str, int] = {}
        self.participants: list[Participant] = []
        self.measuring = False
        self.latencies: Counter[int] = Counter()
        """Latency in whole milliseconds, counted while measuring."""
        self._start: dict[str, Any] = {}
        self._replays: list[asyncio.Task[None]] = []

    async def join(self, timeout: float = READY_TIMEOUT) -> list[tuple[int, int]]:
        """Join this process's participants one after the other, each publishing (and replaying
        from then on); once everyone in the meeting is known, say what each shows (unless
        ``single``) and wait up to ``timeout`` seconds for every tile to move. The tiles still
        without a frame then, as (viewer, owner)."""
        for index in range(self.first, self.first + self.count):
            participant = await Participant.join(self, index)
            self.participants.append(participant)
            await participant.publish()
            self._replays.append(asyncio.ensure_future(self.replay(participant)))
        deadline = time.monotonic() + timeout
        while len(self.ids) < self.total and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if not self.single:
            for participant in self.participants:
                await participant.show()
        while self.missing() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return self.missing()

    async def close(self) -> None:
        """Stop replaying; every participant leaves."""
        for task in self._replays:
            task.cancel()
        await asyncio.gather(*(p.close() for p in self.participants), return_exceptions=True)

    def note_participant(self, name: str, pid: str) -> None:
        if name.startswith("p") and name[1:].isdigit():
            self.ids[name] = pid
            self.index_of[pid] = int(name[1:])

    def note_latency(self, owner: int, index: int, now: float) -> None:
        """A frame of clip index ``index`` from participant ``owner`` arrived ``now``."""
        phase = owner / self.total
        latest = math.floor((now - self.epoch) * FPS - phase)
        number = latest - (latest - index) % FRAMES
        sent = self.epoch + (number + phase) / FPS
        self.latencies[int((now - sent) * 1000)] += 1

    async def replay(self, participant: Participant) -> None:
        """Send the participant's video and audio on the shared schedule, from now on. Like a
        camera, a publisher that fell behind by more than a frame skips to the current one
        rather than sending a burst of old frames."""
        phase = participant.index / self.total
        video = audio = -1
        while True:
            now = time.monotonic()
            video = max(video, math.ceil((now - self.epoch) * FPS - phase) - 1)
            audio = max(audio, math.ceil((now - self.epoch) / AUDIO_STEP - phase) - 1)
            video_at = self.epoch + (video + phase) / FPS
            audio_at = self.epoch + (audio + phase) * AUDIO_STEP
            due = min(video_at, audio_at)
            await asyncio.sleep(max(0.0, due - now))
            sender = participant.sender  # a new one after publishing again
            if video_at <= audio_at:
                if video >= 0 and sender is not None:
                    sender.send_video(video, video_at)
                video += 1
            else:
                if audio >= 0 and sender is not None:
                    sender.send_audio(audio)
                audio += 1

    def missing(self) -> list[tuple[int, int]]:
        """(viewer, owner) of each tile of a page that has not received a frame yet."""
        for participant in self.participants:
            participant.resolve_owners()
        return [
            (p.index, owner)
            for p in self.participants
            for owner in page(p.index, self.total)
            if p.frames_from(owner) == 0
        ]

    def _totals(self) -> dict[str, Any]:
        tiles: dict[tuple[int, int | None], tuple[int, Counter[int]]] = {}
        for p in self.participants:
            for t in p.tiles:
                if t.video:  # a renewed connection's counters add to the old ones'
                    frames, layers = tiles.get((p.index, t.owner), (0, Counter()))
                    tiles[(p.index, t.owner)] = (frames + t.frames, layers + t.layers)
        return {
            "tiles": tiles,
            "audio": {
                p.index: (
                    sum(t.packets for t in p.tiles if not t.video),
                    {t.owner: t.packets for t in p.tiles if not t.video},
                )
                for p in self.participants
            },
            "packets": sum(t.packets for p in self.participants for t in p.tiles),
            "octets": sum(t.octets for p in self.participants for t in p.tiles),
            "lag": sum(len(p.sender.lag) for p in self.participants if p.sender),
            "keyframes": sum(p.sender.keyframe_requests for p in self.participants if p.sender),
            "retransmissions": sum(p.sender.retransmissions for p in self.participants if p.sender),
            "at": time.monotonic(),
        }

    def start(self) -> None:
        for participant in self.participants:
            participant.resolve_owners()
            if participant.sender is not None:
                participant.sender.lag.clear()
        self.latencies.clear()
        self._start = self._totals()
        self.measuring = True

    def results(self) -> dict[str, Any]:
        """What was received between ``start`` and now: ``tiles`` ([viewer, owner, fps,
        {layer: frames}] for each tile of each page), ``audio`` ([viewer, packets/s, streams
        heard] per viewer), ``packets_per_second`` and ``bits_per_second`` received (all tracks,
        payload bits), ``latency_ms`` ({ms: frames}), ``send_lag_ms`` (p50, p95, max of how late
        this process's publishers sent their frames), ``keyframes`` (PLIs they got),
        ``retransmissions`` (packets they sent again for NACKs)."""
        self.measuring = False
        end, start = self._totals(), self._start
        window = end["at"] - start["at"]
        tiles = []
        for participant in self.participants:
            for owner in page(participant.index, self.total):
                frames, layers = end["tiles"].get((participant.index, owner), (0, {}))
                before, layers_before = start["tiles"].get((participant.index, owner), (0, {}))
                shown = {k: v - layers_before.get(k, 0) for k, v in layers.items()}
                tiles.append([participant.index, owner, (frames - before) / window, shown])
        audio = []
        for index, (packets, by_owner) in end["audio"].items():
            earlier = start["audio"].get(index, (0, {}))[1]
            heard = sum(1 for o, n in by_owner.items() if n > earlier.get(o, 0))
            audio.append([index, (packets - start["audio"].get(index, (0, {}))[0]) / window, heard])
        lags = sorted(lag for p in self.participants if p.sender for lag in p.sender.lag)
        return {
            "window": window,
            "tiles": tiles,
            "audio": audio,
            "packets_per_second": (end["packets"] - start["packets"]) / window,
            "bits_per_second": (end["octets"] - start["octets"]) * 8 / window,
            "latency_ms": dict(self.latencies),
            "send_lag_ms": [
                _quantile(lags, 0.5) * 1000,
                _quantile(lags, 0.95) * 1000,
                (lags[-1] if lags else 0.0) * 1000,
            ],
            "keyframes": end["keyframes"] - start["keyframes"],
            "retransmissions": end["retransmissions"] - start["retransmissions"],
        }


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def _emit(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def run(args: argparse.Namespace) -> None:
    clip = load_clip(Path(args.clip) if args.clip else None)
    rig = Rig(
        args.url,
        args.room,
        args.total,
        clip,
        epoch=args.epoch,
        first=args.first,
        count=args.count,
        single=args.single,
    )
    await serve(rig)


async def serve(rig: Rig) -> None:
    """Join ``rig``'s participants and say so, then answer the benchmark's ``start`` and
    ``stop`` lines on standard input until it closes; leave."""
    try:
        _emit({"ready": True, "missing": await rig.join()})
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().strip():
            if line == "start":
                rig.start()
            elif line == "stop":
                _emit(rig.results())
    finally:
        await rig.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.meeting_rig", description=__doc__)
    parser.add_argument("--url", required=True, help="the server's WebSocket URL")
    parser.add_argument("--room", required=True)
    parser.add_argument("--total", type=int, required=True, help="participants in the meeting")
    parser.add_argument("--first", type=int, default=0, help="index of this process's first")
    parser.add_argument("--count", type=int, required=True, help="participants in this process")
    parser.add_argument("--epoch", type=float, required=True, help="time.monotonic() of frame 0")
    parser.add_argument("--single", action="store_true", help="one layer, no view (baseline)")
    parser.add_argument("--clip", help="the clip's cache file (see clip.py)")
    lighten_aiortc()  # as the server does: answering a long offer costs less
    patient_consent()  # as browsers do: consent lasts 30 s from the last answer
    read_in_bursts()  # as the server does
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
