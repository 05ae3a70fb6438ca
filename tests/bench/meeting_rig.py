"""The participants of the meeting benchmark, in a process of their own (several such processes
share one meeting).

``python -m tests.bench.meeting_rig --url WS --room ROOM --total N --first I --count C
--epoch T [--single]`` joins participants ``p<I>`` .. ``p<I+C-1>`` of an N-person meeting. Each
publishes a camera and a microphone by replaying :mod:`tests.bench.clip`: three simulcast layers
(``q``, ``h``, ``f``, declared with ``a=rid``/``a=simulcast`` as Chromium declares them), or with
``--single`` the middle layer alone, without simulcast. Each also views: it shows a page of up to
16 others (``p<i+1>`` large, the next ones small) and says so with ``view``, as the browser
client does; with ``--single`` it sends no ``view`` and receives everything. Nothing is encoded
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

aiortc cannot send simulcast; :class:`ReplaySender` is the one place that reaches into aiortc's
internals to send RTP of its own on a publish connection's transport.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    HeaderExtensionsMap,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtpPacket,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.bench.clip import FPS, FRAMES, LAYERS, SINGLE_LAYER, Clip, load_clip
from tests.bench.rig import count_packets
from veche.media.internals import tap_receiver

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
RID_EXTENSION: Final = 10
REPAIRED_RID_EXTENSION: Final = 11
MID_URI: Final = "urn:ietf:params:rtp-hdrext:sdes:mid"
RID_URI: Final = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI: Final = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
ABS_SEND_TIME_URI: Final = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
LEVEL_URI: Final = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
RECEIVE_BUFFER: Final = 1 << 20
"""Bytes of socket receive buffer for each connection of the rig (see :func:`enlarge_buffers`)."""
HISTORY: Final = 512
"""Packets of each stream kept for retransmission."""
MEASURED_EVERY: Final = 8
"""Every this many participants (``p0``, ``p8``, …) one viewer decrypts what it receives and
recognises each frame (its layer and latency); the others count frames from clear headers."""
RESEND_INTERVAL: Final = 0.1
RESENDS: Final = 2
"""A packet is sent again at most every ``RESEND_INTERVAL`` seconds and ``RESENDS`` times,
however many NACKs name it: a receiver repeats its whole list of missing packets with every new
gap, and a browser bounds its retransmissions too (without a bound, retransmissions feed the
loss they answer)."""
READY_TIMEOUT: Final = 60.0
"""Seconds after the last participant joined that viewers have to receive every tile."""


def page(viewer: int, total: int) -> list[int]:
    """The participants ``viewer`` shows, the large tile first."""
    return [(viewer + step) % total for step in range(1, min(PAGE, total - 1) + 1)]


def simulcast_offer(sdp: str) -> str:
    """``sdp`` (aiortc's publish offer) with its video section sending three layers the way
    Chromium's offer says it: RTP stream id extensions, ``a=rid:<id> send`` each and
    ``a=simulcast:send``; the section's own ``a=ssrc`` lines go (Chromium names none)."""
    out: list[str] = []
    video = False
    for line in sdp.splitlines():
        if line.startswith("m="):
            video = line.startswith("m=video")
        if video and line.startswith(("a=ssrc:", "a=ssrc-group:")):
            continue
        out.append(line)
        if video and line.startswith("a=mid:"):
            out.append(f"a=extmap:{RID_EXTENSION} {RID_URI}")
            out.append(f"a=extmap:{REPAIRED_RID_EXTENSION} {REPAIRED_RID_URI}")
            out += [f"a=rid:{layer.rid} send" for layer in LAYERS]
            out.append("a=simulcast:send " + ";".join(layer.rid for layer in LAYERS))
    return "\r\n".join(out) + "\r\n"


def _sections(sdp: str) -> list[list[str]]:
    sections: list[list[str]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([])
        if sections:
            sections[-1].append(line)
    return sections


def _extensions(section: list[str]) -> HeaderExtensionsMap:
    parameters = RTCRtpParameters()
    for line in section:
        if line.startswith("a=extmap:"):
            ext_id, uri = line[len("a=extmap:") :].split()[:2]
            parameters.headerExtensions.append(
                RTCRtpHeaderExtensionParameters(id=int(ext_id.split("/")[0]), uri=uri)
            )
    extensions = HeaderExtensionsMap()
    extensions.configure(parameters)
    return extensions


def enlarge_buffers(pc: RTCPeerConnection) -> None:
    """Give the UDP sockets ``pc`` gathered a larger receive buffer than the system's default
    (about 200 KB): with many participants in one rig process on a shared machine, the process
    is sometimes not scheduled for tens of milliseconds, and what the server sent meanwhile
    must not be lost in the rig's own sockets. aioice's internals: ``Connection._protocols``."""
    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection
        for protocol in connection._protocols:
            sock = protocol.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)


def count_in_the_clear(pc: RTCPeerConnection, sink: Callable[[bytes], None]) -> None:
    """Hand every RTP datagram ``pc`` receives to ``sink`` as it arrives, still encrypted, and
    nothing more: no SRTP, no parsing, no queue (SRTP leaves the RTP header in the clear, which
    is enough to count packets and frames per SSRC). STUN, DTLS and RTCP go on as before, so the
    connection stays up. aioice's internals: ``Connection._protocols``."""
    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection
        for protocol in connection._protocols:
            if getattr(protocol, "_bench_counted", False):
                continue
            original = protocol.datagram_received

            def datagram_received(data: bytes, addr: Any, original: Any = original) -> None:
                # RTP: version 2, and not one of RTCP's packet types (RFC 5761).
                if len(data) >= 12 and 128 <= data[0] < 192 and not 192 <= data[1] <= 223:
                    sink(data)
                else:
                    original(data, addr)

            protocol.datagram_received = datagram_received
            protocol._bench_counted = True


class IdleTrack(MediaStreamTrack):
    """A track that never yields a frame: aiortc's own sender loop waits on it for good, while
    :class:`ReplaySender` sends the packets."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Any:
        await asyncio.get_running_loop().create_future()


@dataclass
class _Stream:
    ssrc: int
    rid: str | None
    sequence: int = field(default_factory=lambda: random.randrange(1 << 16))
    keyframe: bool = False
    """A keyframe was asked for (PLI)."""
    sent: dict[int, bytes] = field(default_factory=dict)
    """The last :data:`HISTORY` packets, protected, by sequence number (for NACKs)."""
    resent: dict[int, tuple[float, int]] = field(default_factory=dict)
    """When each packet was last sent again, and how many times it was."""


class ReplaySender:
    """Sends the clip's packets on a connected publish connection: the video as three layers
    (their own SSRCs, each packet naming its rid and mid) or one, and the audio, from the
    senders' transport (SRTP, one ``sendto`` a packet), as the server's ``PacketWriter`` does.
    Like a browser it answers a PLI with a keyframe of that layer and a NACK by sending the
    packets again (the same protected bytes: no RTX stream, which the server's receiver takes
    all the same); without retransmission, a burst lost under load would cost a keyframe each
    time and the keyframes more loss.

    aiortc's internals: ``RTCDtlsTransport._tx_srtp`` and ``_rtp_router``, aioice's nominated
    pair, ``RTCRtpSender._ssrc`` and ``_handle_rtcp_packet`` (the server's PLIs and NACKs for
    the layers' SSRCs)."""

    def __init__(
        self,
        clip: Clip,
        video: RTCRtpSender,
        audio: RTCRtpSender,
        offer: str,
        answer: str,
        *,
        simulcast: bool,
        level: int,
    ) -> None:
        self.clip = clip
        self._transport = video.transport
        audio_section, video_section = _sections(offer)
        answered = {s[0].split()[0]: s for s in _sections(answer)}
        self._audio_extensions = _extensions(audio_section)
        self._video_extensions = _extensions(video_section)
        self._audio_pt = int(answered["m=audio"][0].split()[3])
        self._video_pt = int(answered["m=video"][0].split()[3])
        self._audio_mid = _attribute(audio_section, "a=mid:")
        self._video_mid = _attribute(video_section, "a=mid:")
        if simulcast:
            self.streams = [_Stream(random.randrange(1, 1 << 32), layer.rid) for layer in LAYERS]
            self._layers = list(range(len(LAYERS)))
        else:
            self.streams = [_Stream(video._ssrc, None)]
            self._layers = [SINGLE_LAYER]
        self._audio = _Stream(audio._ssrc, None)
        self._level = level
        router = self._transport._rtp_router
        by_ssrc = {stream.ssrc: stream for stream in self.streams}
        for ssrc in by_ssrc:
            router.register_sender(video, ssrc)
        handle = video._handle_rtcp_packet

        async def handle_rtcp(packet: Any) -> None:
            asked = isinstance(packet, RtcpPsfbPacket) and packet.fmt in (
                RTCP_PSFB_PLI,
                RTCP_PSFB_FIR,
            )
            nack = isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK
            stream = by_ssrc.get(packet.media_ssrc) if asked or nack else None
            if stream is None:
                await handle(packet)
            elif asked:
                stream.keyframe = True
                self.keyframe_requests += 1
            else:
                now = time.monotonic()
                for sequence in packet.lost:
                    data = stream.sent.get(sequence)
                    last, times = stream.resent.get(sequence, (-1.0, 0))
                    if data is None or now - last < RESEND_INTERVAL or times >= RESENDS:
                        continue
                    stream.resent[sequence] = (now, times + 1)
                    self._resend(data)
                    self.retransmissions += 1

        video._handle_rtcp_packet = handle_rtcp  # type: ignore[method-assign]
        self.keyframe_requests = 0
        self.retransmissions = 0
        self.lag: list[float] = []
        """Seconds each frame went out after its scheduled time."""

    def _send(self, packet: RtpPacket, extensions: HeaderExtensionsMap) -> bytes | None:
        """Protect and send ``packet``; the bytes sent (None before the connection is up)."""
        transport = self._transport
        pair = transport.transport._connection._nominated.get(1)
        srtp = getattr(transport, "_tx_srtp", None)
        if pair is None or srtp is None:
            return None
        data: bytes = srtp.protect(packet.serialize(extensions))
        pair.protocol.transport.sendto(data, pair.remote_addr)
        return data

    def _resend(self, data: bytes) -> None:
        pair = self._transport.transport._connection._nominated.get(1)
        if pair is not None:
            pair.protocol.transport.sendto(data, pair.remote_addr)

    def send_video(self, number: int, scheduled: float) -> None:
        """Send frame ``number`` of the loop in every layer (a keyframe where one was asked)."""
        index = number % FRAMES
        timestamp = (number * 90000 // FPS) & 0xFFFFFFFF
        abs_send_time = int(time.time() * (1 << 18)) & 0xFFFFFF
        for stream, layer in zip(self.streams, self._layers, strict=True):
            key = stream.keyframe
            payloads = (self.clip.keyframes if key else self.clip.video)[layer][index]
            last = len(payloads) - 1
            for position, payload in enumerate(payloads):
                packet = RtpPacket(
                    payload_type=self._video_pt,
                    marker=int(position == last),
                    sequence_number=stream.sequence,
                    timestamp=timestamp,
                    ssrc=stream.ssrc,
                    payload=payload,
                )
                packet.extensions.mid = self._video_mid
                packet.extensions.rtp_stream_id = stream.rid
                packet.extensions.abs_send_time = abs_send_time
                data = self._send(packet, self._video_extensions)
                if data is None:
                    return
                stream.sent[stream.sequence] = data
                stale = (stream.sequence - HISTORY) & 0xFFFF
                stream.sent.pop(stale, None)
                stream.resent.pop(stale, None)
                stream.sequence = (stream.sequence + 1) & 0xFFFF
            stream.keyframe = stream.keyframe and not key
        self.lag.append(time.monotonic() - scheduled)

    def send_audio(self, number: int) -> None:
        packet = RtpPacket(
            payload_type=self._audio_pt,
            marker=0,
            sequence_number=self._audio.sequence,
            timestamp=(number * 960) & 0xFFFFFFFF,
            ssrc=self._audio.ssrc,
            payload=self.clip.audio[number % len(self.clip.audio)],
        )
        packet.extensions.mid = self._audio_mid
        packet.extensions.audio_level = (self._level < 60, self._level)
        if self._send(packet, self._audio_extensions) is not None:
            self._audio.sequence = (self._audio.sequence + 1) & 0xFFFF


def _attribute(section: list[str], prefix: str) -> str | None:
    return next((line[len(prefix) :] for line in section if line.startswith(prefix)), None)


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
        return cls(rig, index, ws, welcome)

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "participant_joined":
                    info = message["participant"]
                    self.rig.note_participant(info["name"], info["id"])
                elif kind == "answer" and message.get("pc") == "publish":
                    self._answers.put_nowait(message["sdp"])
                elif kind == "offer" and message.get("pc") == "subscribe":
                    await self._answer(message["sdp"])

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

    async def show(self) -> None:
        """Say which tiles this participant shows (the browser client's ``view``)."""
        tiles = []
        for position, other in enumerate(page(self.index, self.rig.total)):
            width, height = LARGE if position == 0 else SMALL
            pid = self.rig.ids[f"p{other}"]
            tiles.append({"participant_id": pid, "width": width, "height": height})
        await self.ws.send(json.dumps({"type": "view", "tiles": tiles}))

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
        # No bandwidth estimate (REMB) from the rig's viewers: the server does not use a
        # viewer's, and aiortc's estimator costs more per packet than all the rest of receiving.
        receiver.__dict__["_RTCRtpReceiver__remote_bitrate_estimator"] = None
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
        for section in _sections(sdp):
            mid = _attribute(section, "a=mid:")
            msid = _attribute(section, "a=msid:")
            ssrc = _attribute(section, "a=ssrc:")
            if mid is None or msid is None or ssrc is None:
                continue
            tile = self._by_mid.get(mid)
            if tile is None:
                tile = self._by_mid[mid] = TileCounter(section[0].startswith("m=video"), self.rig)
                self.tiles.append(tile)
            tile.stream = msid.split()[0].split("~")[0]
            tile.owner = self.rig.index_of.get(tile.stream)
            self._by_ssrc[int(ssrc.split()[0])] = tile

    def _count_clear(self, data: bytes) -> None:
        tile = self._by_ssrc.get(int.from_bytes(data[8:12], "big"))
        if tile is not None:
            tile.add_header(int.from_bytes(data[4:8], "big"), len(data))

    def video_from(self, owner: int) -> TileCounter | None:
        return next((t for t in self.tiles if t.video and t.owner == owner), None)

    async def close(self) -> None:
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
        sender = participant.sender
        assert sender is not None
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
            if video_at <= audio_at:
                if video >= 0:
                    sender.send_video(video, video_at)
                video += 1
            else:
                if audio >= 0:
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
            if (tile := p.video_from(owner)) is None or tile.frames == 0
        ]

    def _totals(self) -> dict[str, Any]:
        return {
            "tiles": {
                (p.index, t.owner): (t.frames, dict(t.layers))
                for p in self.participants
                for t in p.tiles
                if t.video
            },
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
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
