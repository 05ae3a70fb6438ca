"""Pipes: a published track carried once from the process where it is published to another
Veche process that has viewers of it (another worker of this machine, another node).

One Python process forwards on one core. A meeting larger than that needs its viewers spread
over several processes, and each of those must receive each track it shows *once*, not once per
viewer, and fan it out to its own viewers as if the publisher were local (mediasoup's
``pipeToRouter``, Jitsi's relay bridges). The vocabulary:

* :class:`PipeEndpoint` -- this process's one UDP socket for pipes, bound to a port of a
  configured range on the internal network; every link shares it.
* :class:`PipeLink` -- this process's end of the pipe to one other process: an SRTP key for
  each direction (made here and exchanged over the bus, see :mod:`veche.cluster.pipes`), the
  tracks sent over it and the tracks received from it.
* :class:`PipedOut` -- an uptrack of this process sent over a link; only the simulcast layers
  the other side needs travel.
* :class:`PipedIn` -- a stand-in :class:`~veche.media.tracks.Uptrack` fed by a link: local
  subscribers take downtracks of it exactly as of a local publisher's, and its keyframe
  requests go back over the link to the real one.

On the wire every packet is SRTP or SRTCP (AES-128 counter mode, HMAC-SHA1-80; plain RTP never
leaves the process). A piped track's streams have one SSRC per layer: the track's *base* SSRC
with the layer's index in its two low bits. Packets keep their sequence numbers, timestamps,
payload type, marker and audio level. Feedback is RTCP: a PLI on a layer's SSRC asks for a
keyframe (and says that layer is needed at once); application feedback (PSFB, format 15) on a
base SSRC carries a four-byte name and a bit mask of layers (a byte, padded to a word):

* ``VPLA`` -- sender to receiver: the layers flowing at the publisher (the stand-in's layer
  choice follows them, though only the needed ones travel);
* ``VPLW`` -- receiver to sender: the layers its viewers need now (none: nothing is sent);
* ``VPKA`` -- either way, the link is alive.

Each side sends its ``VPLA``/``VPLW`` (or a ``VPKA``) every :data:`KEEPALIVE` seconds, so a
link that hears nothing for :data:`STALL_AFTER` seconds (three rounds) has stalled: it notices
within :data:`STALL_AFTER` + :data:`CHECK_INTERVAL` (under 2 s), counts it, and calls its
``on_stall`` (the owner of the link re-establishes it with fresh keys; the tracks stay, so that
viewers keep their tiles). When the other end is heard again, each received track asks its
publisher for a keyframe of every layer its viewers need: their decoders missed seconds of
packets, and would otherwise wait for a request of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
)
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    HeaderExtensionsMap,
    RtcpPacket,
    RtcpPsfbPacket,
    RtpPacket,
)
from pylibsrtp import Error as SrtpError
from pylibsrtp import Policy, Session

from veche.ids import ParticipantId
from veche.media.counters import MediaCounters
from veche.media.tracks import Uptrack
from veche.media.udpstats import READS
from veche.protocol import Source

__all__ = [
    "KEY_LENGTH",
    "PipeEndpoint",
    "PipeLink",
    "PipeStats",
    "PipedIn",
    "PipedOut",
    "TrackDescription",
    "new_key",
]

log = logging.getLogger(__name__)

KEY_LENGTH: Final = 30
"""Bytes of an SRTP master key and salt (AES-128-CM with HMAC-SHA1-80)."""
KEEPALIVE: Final = 0.5
"""Seconds between two feedback rounds on a link (each is also a sign of life)."""
STALL_AFTER: Final = 1.5
"""Seconds without anything from the other end after which a link counts as stalled."""
CHECK_INTERVAL: Final = 0.25
"""Seconds between two looks at whether a link has stalled."""
AUDIO_LEVEL_ID: Final = 1
"""The header extension id of the audio level on the pipe's wire."""

_ACTIVE: Final = b"VPLA"
_WANTED: Final = b"VPLW"
_ALIVE: Final = b"VPKA"
_LAYER_BITS: Final = 0x3


def new_key() -> bytes:
    """A fresh SRTP master key and salt for one direction of a link."""
    return os.urandom(KEY_LENGTH)


@dataclass(frozen=True, slots=True)
class TrackDescription:
    """What the receiving process needs to stand a piped track in: told over the bus."""

    track: str
    owner: str
    kind: str
    source: Source
    mime_type: str
    clock_rate: int
    channels: int | None
    payload_type: int
    parameters: dict[str, str | int | None]
    rids: tuple[str, ...]
    ssrc: int
    """The base SSRC: layer ``i`` travels as ``ssrc | i``."""

    def codec(self) -> RTCRtpCodecParameters:
        return RTCRtpCodecParameters(
            mimeType=self.mime_type,
            clockRate=self.clock_rate,
            channels=self.channels,
            payloadType=self.payload_type,
            parameters=dict(self.parameters),
        )


@dataclass(slots=True)
class PipeStats:
    """Counters of one link, for ``/metrics`` and tests."""

    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0
    bytes_received: int = 0
    packets_lost: int = 0
    """Sequence numbers skipped on arrival, all streams together."""
    rejected: int = 0
    """Datagrams that failed SRTP authentication (or did not parse) and were dropped."""
    keyframe_requests_sent: int = 0
    keyframe_requests_received: int = 0
    stalls: int = 0
    stalled_seconds: float = 0.0
    """The silences that were stalls, whole (from the last datagram before to the first
    after), counted when the other end is heard again."""


def _mask(layers: set[int]) -> bytes:
    value = 0
    for index in layers:
        value |= 1 << index
    return bytes([value, 0, 0, 0])  # RTCP packets are whole 32-bit words


def _layers(mask: bytes) -> set[int]:
    value = mask[0] if mask else 0
    return {i for i in range(8) if value >> i & 1}


@dataclass(eq=False)
class PipedOut:
    """A local uptrack sent over one link: ``wanted`` are the layers the other side needs."""

    link: PipeLink
    uptrack: Uptrack
    ssrc: int
    wanted: set[int] = field(default_factory=set)

    def describe(self) -> TrackDescription:
        codec = self.uptrack.codec
        return TrackDescription(
            track=self.uptrack.id,
            owner=str(self.uptrack.owner),
            kind=self.uptrack.kind,
            source=self.uptrack.source,
            mime_type=codec.mimeType,
            clock_rate=codec.clockRate,
            channels=codec.channels,
            payload_type=codec.payloadType or 0,
            parameters=dict(codec.parameters),
            rids=tuple(layer.rid or "" for layer in self.uptrack.layers if layer.rid),
            ssrc=self.ssrc,
        )

    def tap(self, packet: RtpPacket, index: int) -> None:
        """The uptrack's tap: send ``packet`` on if its layer is wanted."""
        if index in self.wanted:
            self.link.send_rtp(packet, self.ssrc | index)


@dataclass(eq=False)
class PipedIn:
    """A track received over one link, and the stand-in uptrack local viewers subscribe to."""

    link: PipeLink
    description: TrackDescription
    uptrack: Uptrack
    last_sequence: dict[int, int] = field(default_factory=dict)
    wanted: set[int] = field(default_factory=set)

    def needed(self) -> set[int]:
        """The layers the stand-in's viewers need now (a recording: the highest)."""
        uptrack = self.uptrack
        needed: set[int] = set()
        for downtrack in uptrack.downtracks:
            if downtrack.paused:
                continue
            needed.add(downtrack.target)
            if downtrack.layer is not None:
                needed.add(downtrack.layer)
        if uptrack.sinks:
            needed.add(len(uptrack.layers) - 1)
        return needed


class PipeLink:
    """This process's end of the pipe to the process at ``remote`` (its pipe endpoint's
    address). ``send_key`` protects what goes there, ``receive_key`` what comes from there
    (the other end has them the other way round; until it is known, see
    :meth:`set_receive_key`, whatever comes is dropped). ``on_stall`` is called once when nothing
    has come for :data:`STALL_AFTER` seconds."""

    def __init__(
        self,
        endpoint: PipeEndpoint,
        remote: tuple[str, int],
        send_key: bytes,
        receive_key: bytes | None,
        *,
        on_stall: Callable[[PipeLink], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.remote = remote
        self._tx: Session
        self.set_send_key(send_key)
        self._rx: Session | None = None
        if receive_key is not None:
            self.set_receive_key(receive_key)
        self._extensions = HeaderExtensionsMap()
        self._extensions.configure(
            RTCRtpParameters(
                headerExtensions=[
                    RTCRtpHeaderExtensionParameters(
                        id=AUDIO_LEVEL_ID, uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level"
                    )
                ]
            )
        )
        self.stats = PipeStats()
        self.outgoing: dict[int, PipedOut] = {}
        """Tracks sent over this link, by base SSRC."""
        self.incoming: dict[int, PipedIn] = {}
        """Tracks received over this link, by base SSRC."""
        self._on_stall = on_stall
        self._clock = clock
        self.last_heard = clock()
        self.stalled = False
        self.closed = False
        self._feedback_ssrc = random.getrandbits(32)
        self._task = asyncio.ensure_future(self._keep_alive())
        endpoint.links[remote] = self

    def set_receive_key(self, key: bytes) -> None:
        """Take what comes from the other end under ``key`` from now on (its first key, or a
        fresh one after it re-established the link)."""
        self._rx = Session(
            Policy(
                key=key,
                ssrc_type=Policy.SSRC_ANY_INBOUND,
                srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
            )
        )

    def set_send_key(self, key: bytes) -> None:
        """Protect what goes to the other end under ``key`` from now on."""
        self._tx = Session(
            Policy(
                key=key,
                ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
            )
        )

    # ------------------------------------------------------------------ sending side

    def send_track(self, uptrack: Uptrack) -> PipedOut:
        """Start sending ``uptrack`` over this link (its layers as the other side asks for
        them); describe it to the other side with :meth:`PipedOut.describe`."""
        for piped in self.outgoing.values():
            if piped.uptrack is uptrack:
                return piped
        ssrc = random.getrandbits(32) & ~_LAYER_BITS
        while ssrc in self.outgoing or ssrc == 0:
            ssrc = random.getrandbits(32) & ~_LAYER_BITS
        piped = self.outgoing[ssrc] = PipedOut(self, uptrack, ssrc)
        uptrack.taps.append(piped.tap)
        return piped

    def stop_track(self, uptrack: Uptrack) -> None:
        """Stop sending ``uptrack`` over this link."""
        for ssrc, piped in list(self.outgoing.items()):
            if piped.uptrack is uptrack:
                del self.outgoing[ssrc]
                with contextlib.suppress(ValueError):
                    uptrack.taps.remove(piped.tap)

    def send_rtp(self, packet: RtpPacket, ssrc: int) -> None:
        if self.closed:
            return
        copy = RtpPacket(
            payload_type=packet.payload_type,
            marker=packet.marker,
            sequence_number=packet.sequence_number,
            timestamp=packet.timestamp,
            ssrc=ssrc,
            payload=packet.payload,
        )
        copy.extensions.audio_level = packet.extensions.audio_level
        data = self._tx.protect(copy.serialize(self._extensions))
        self.stats.packets_sent += 1
        self.stats.bytes_sent += len(data)
        self.endpoint.send(data, self.remote)

    def _send_rtcp(self, packet: RtcpPsfbPacket) -> None:
        if not self.closed:
            self.endpoint.send(self._tx.protect_rtcp(bytes(packet)), self.remote)

    def _feedback(self, media_ssrc: int, name: bytes, layers: set[int]) -> None:
        self._send_rtcp(
            RtcpPsfbPacket(
                fmt=RTCP_PSFB_APP,
                ssrc=self._feedback_ssrc,
                media_ssrc=media_ssrc,
                fci=name + _mask(layers),
            )
        )

    # ------------------------------------------------------------------ receiving side

    def receive_track(
        self, description: TrackDescription, *, counters: MediaCounters | None = None
    ) -> PipedIn:
        """Stand ``description`` in as a local uptrack fed by this link."""
        existing = self.incoming.get(description.ssrc)
        if existing is not None:
            return existing
        base = description.ssrc

        def ask_keyframe(ssrc: int) -> None:
            self.stats.keyframe_requests_sent += 1
            piped.wanted.add(ssrc & _LAYER_BITS)
            self._send_rtcp(
                RtcpPsfbPacket(
                    fmt=RTCP_PSFB_PLI, ssrc=self._feedback_ssrc, media_ssrc=ssrc, fci=b""
                )
            )

        uptrack = Uptrack(
            ParticipantId(description.owner),
            description.kind,
            description.codec(),
            ask_keyframe,
            source=description.source,
            counters=counters,
            rids=description.rids,
        )
        for index in range(len(uptrack.layers)):
            uptrack.assign_stream(index, base | index)
        piped = self.incoming[base] = PipedIn(self, description, uptrack)
        return piped

    def drop_track(self, ssrc: int) -> None:
        """The track described with base ``ssrc`` is no longer received: close its stand-in."""
        piped = self.incoming.pop(ssrc, None)
        if piped is not None:
            piped.uptrack.close()

    def datagram(self, data: bytes) -> None:
        """One datagram from the other end (the endpoint hands it here)."""
        rx = self._rx
        if len(data) < 2 or rx is None:
            self.stats.rejected += 1
            return
        try:
            if 192 <= data[1] <= 223:
                self._rtcp(rx.unprotect_rtcp(data))
            else:
                self._rtp(rx.unprotect(data))
        except (SrtpError, ValueError):
            self.stats.rejected += 1
            return
        now = self._clock()
        if self.stalled:
            self._resumed(now - self.last_heard)
        self.last_heard = now

    def _rtp(self, data: bytes) -> None:
        packet = RtpPacket.parse(data, self._extensions)
        self.stats.packets_received += 1
        self.stats.bytes_received += len(data)
        piped = self.incoming.get(packet.ssrc & ~_LAYER_BITS)
        if piped is None:
            return
        last = piped.last_sequence.get(packet.ssrc)
        gap = 1 if last is None else (packet.sequence_number - last) & 0xFFFF
        if gap < 0x8000:  # else a late packet: counted lost when it was skipped
            self.stats.packets_lost += max(0, gap - 1)
            piped.last_sequence[packet.ssrc] = packet.sequence_number
        piped.uptrack.on_packet(packet, piped.uptrack.codec)

    def _rtcp(self, data: bytes) -> None:
        for packet in RtcpPacket.parse(data):
            if not isinstance(packet, RtcpPsfbPacket):
                continue
            if packet.fmt == RTCP_PSFB_PLI:
                piped_out = self.outgoing.get(packet.media_ssrc & ~_LAYER_BITS)
                if piped_out is not None:
                    index = packet.media_ssrc & _LAYER_BITS
                    self.stats.keyframe_requests_received += 1
                    piped_out.wanted.add(index)
                    if index < len(piped_out.uptrack.layers):
                        piped_out.uptrack.request_keyframe(index)
            elif packet.fmt == RTCP_PSFB_APP and len(packet.fci) >= 8:
                name, layers = packet.fci[:4], _layers(packet.fci[4:5])
                if name == _WANTED:
                    piped_out = self.outgoing.get(packet.media_ssrc)
                    if piped_out is not None:
                        piped_out.wanted = layers
                elif name == _ACTIVE:
                    piped_in = self.incoming.get(packet.media_ssrc)
                    if piped_in is not None:
                        self._mirror_active(piped_in, layers)

    def _mirror_active(self, piped: PipedIn, layers: set[int]) -> None:
        """The publisher's flowing layers count as flowing on the stand-in, though only the
        needed ones travel: its viewers' layer choice is the one they would make there."""
        now = self._clock()
        for index, layer in enumerate(piped.uptrack.layers):
            if index in layers:
                layer.last_packet = max(layer.last_packet, now)

    # ------------------------------------------------------------------ liveness

    async def _keep_alive(self) -> None:
        rounds = round(KEEPALIVE / CHECK_INTERVAL)
        tick = 0
        while not self.closed:
            await asyncio.sleep(CHECK_INTERVAL)
            tick += 1
            if tick % rounds == 0:
                self.feedback()
            silent = self._clock() - self.last_heard
            if not self.stalled and silent > STALL_AFTER:
                self.stalled = True
                self.stats.stalls += 1
                log.warning(
                    "pipe stalled",
                    extra={
                        "remote": f"{self.remote[0]}:{self.remote[1]}",
                        "silent": round(silent, 2),
                    },
                )
                if self._on_stall is not None:
                    self._on_stall(self)

    def _resumed(self, silence: float) -> None:
        """The other end is heard again after ``silence`` seconds: the viewers of each
        received track missed packets all that time, so their layers ask the publisher for a
        keyframe now."""
        self.stalled = False
        self.stats.stalled_seconds += silence
        for piped in self.incoming.values():
            for index in sorted(piped.needed()):
                if index < len(piped.uptrack.layers):
                    piped.uptrack.request_keyframe(index)
        log.info(
            "pipe resumed",
            extra={
                "remote": f"{self.remote[0]}:{self.remote[1]}",
                "silent": round(silence, 2),
            },
        )

    def feedback(self) -> None:
        """Send one round of feedback now: the layers each received track needs, the layers
        of each sent track that flow, or a sign of life."""
        sent = False
        for ssrc, piped_in in self.incoming.items():
            piped_in.wanted = piped_in.needed()
            self._feedback(ssrc, _WANTED, piped_in.wanted)
            sent = True
        now = self._clock()
        for ssrc, piped_out in self.outgoing.items():
            layers = piped_out.uptrack.layers
            active = {i for i, layer in enumerate(layers) if now - layer.last_packet < 1.0}
            self._feedback(ssrc, _ACTIVE, active)
            sent = True
        if not sent:
            self._feedback(0, _ALIVE, set())

    def close(self) -> None:
        """Stop sending and receiving; close every stand-in (its viewers lose it)."""
        if self.closed:
            return
        self.closed = True
        self._task.cancel()
        for piped_out in list(self.outgoing.values()):
            self.stop_track(piped_out.uptrack)
        for ssrc in list(self.incoming):
            self.drop_track(ssrc)
        if self.endpoint.links.get(self.remote) is self:
            del self.endpoint.links[self.remote]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: PipeEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        READS.total += 1
        link = self.endpoint.links.get((str(addr[0]), int(str(addr[1]))))
        if link is None:
            self.endpoint.strays += 1
            return
        link.datagram(data)


class PipeEndpoint:
    """The UDP socket of this process's pipes. Open it with :meth:`open`."""

    def __init__(self) -> None:
        self.links: dict[tuple[str, int], PipeLink] = {}
        self.address: tuple[str, int] = ("", 0)
        self.strays = 0
        """Datagrams from an address no link is to (dropped)."""
        self._transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, host: str, port_min: int, port_max: int) -> PipeEndpoint:
        """Bind a UDP port of ``[port_min, port_max]`` on ``host`` (tried from a random one
        on, so that the workers of one machine do not race for the same port)."""
        endpoint = cls()
        loop = asyncio.get_running_loop()
        ports = list(range(port_min, port_max + 1))
        start = random.randrange(len(ports))
        for port in ports[start:] + ports[:start]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(endpoint), sock=sock
            )
            endpoint._transport = transport
            endpoint.address = (host, port)
            return endpoint
        raise OSError(f"no free UDP port for pipes in {port_min}-{port_max} on {host}")

    def send(self, data: bytes, remote: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(data, remote)

    def close(self) -> None:
        for link in list(self.links.values()):
            link.close()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
