"""The publishing half of the meeting benchmark's rig: sending a pre-encoded clip on an aiortc
publish connection as a browser would, in three simulcast layers or one.

aiortc cannot send simulcast. :func:`simulcast_offer` declares the layers in the offer as
Chromium does, and :class:`ReplaySender` sends RTP of its own for each layer's SSRC, with the
rid and mid header extensions, on the connection's transport. With the viewers' helpers
(:func:`enlarge_buffers`, :func:`count_in_the_clear`, :func:`without_bandwidth_estimate`), this
module is the one place where the rig reaches into aiortc's and aioice's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    HeaderExtensionsMap,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtpPacket,
    unpack_remb_fci,
)

from tests.bench.clip import FPS, FRAMES, LAYERS, SINGLE_LAYER, Clip, renumber, temporal_id

RID_EXTENSION: Final = 10
REPAIRED_RID_EXTENSION: Final = 11
RID_URI: Final = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI: Final = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
RECEIVE_BUFFER: Final = 1 << 20
"""Bytes of socket receive buffer for each connection of the rig (see :func:`enlarge_buffers`)."""
HISTORY: Final = 512
"""Packets of each stream kept for retransmission."""
RESEND_INTERVAL: Final = 0.1
RESENDS: Final = 2
"""A packet is sent again at most every ``RESEND_INTERVAL`` seconds and ``RESENDS`` times,
however many NACKs name it: a receiver repeats its whole list of missing packets with every new
gap, and a browser bounds its retransmissions too (without a bound, retransmissions feed the
loss they answer)."""


def may_resend(resent: dict[int, tuple[float, int]], sequence: int, now: float) -> bool:
    """Whether a NACKed packet ``sequence`` may be sent again at ``now`` (seconds, monotonic),
    within :data:`RESEND_INTERVAL` and :data:`RESENDS`; if so it is noted in ``resent`` (when
    each packet was last sent again, and how many times it was). Both replay rigs answer
    NACKs through this."""
    last, times = resent.get(sequence, (-1.0, 0))
    if now - last < RESEND_INTERVAL or times >= RESENDS:
        return False
    resent[sequence] = (now, times + 1)
    return True


def simulcast_offer(sdp: str, *, videos: int | None = None) -> str:
    """``sdp`` (aiortc's publish offer) with its video section sending three layers the way
    Chromium's offer says it: RTP stream id extensions, ``a=rid:<id> send`` each and
    ``a=simulcast:send``; the section's own ``a=ssrc`` lines go (Chromium names none). With
    ``videos``, only that many video sections, the first ones (a screen stays one layer)."""
    out: list[str] = []
    video = False
    seen = 0
    for line in sdp.splitlines():
        if line.startswith("m="):
            video = line.startswith("m=video") and (videos is None or seen < videos)
            seen += line.startswith("m=video")
        if video and line.startswith(("a=ssrc:", "a=ssrc-group:")):
            continue
        out.append(line)
        if video and line.startswith("a=mid:"):
            out.append(f"a=extmap:{RID_EXTENSION} {RID_URI}")
            out.append(f"a=extmap:{REPAIRED_RID_EXTENSION} {REPAIRED_RID_URI}")
            out += [f"a=rid:{layer.rid} send" for layer in LAYERS]
            out.append("a=simulcast:send " + ";".join(layer.rid for layer in LAYERS))
    return "\r\n".join(out) + "\r\n"


def sections(sdp: str) -> list[list[str]]:
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


def without_bandwidth_estimate(receiver: RTCRtpReceiver) -> None:
    """Make ``receiver`` (tapped with ``veche.media.internals.tap_receiver``) send no bandwidth
    estimate (REMB): the server does not use a viewer's, and aiortc's estimator costs the rig
    more per packet than all the rest of receiving."""
    receiver.__dict__["_RTCRtpReceiver__remote_bitrate_estimator"] = None


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
    paused: bool = False
    """Not sent: the server's REMB does not leave room for this layer."""
    picture_id: int = field(default_factory=lambda: random.randrange(1 << 15))
    """The next frame's VP8 picture id."""
    tl0picidx: int = field(default_factory=lambda: random.randrange(1 << 8))
    """The TL0PICIDX of the last base-layer frame sent."""


class ReplaySender:
    """Sends the clip's packets on a connected publish connection: the video as three layers
    (their own SSRCs, each packet naming its rid and mid) or one, and the audio, from the
    senders' transport (SRTP, one ``sendto`` a packet), as the server's ``PacketWriter`` does.
    Like a browser it sends only the layers, lowest first, that fit in the bitrate the server
    says it may send (REMB; a layer that comes back starts with a keyframe), answers a PLI with
    a keyframe of that layer and a NACK by sending the
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
        audio_section, video_section = sections(offer)[:2]  # a screen's section may follow
        answered: dict[str, list[str]] = {}
        for section in sections(answer):
            answered.setdefault(section[0].split()[0], section)
        self._audio_extensions = _extensions(audio_section)
        self._video_extensions = _extensions(video_section)
        self._audio_pt = int(answered["m=audio"][0].split()[3])
        self._video_pt = int(answered["m=video"][0].split()[3])
        self._audio_mid = attribute(audio_section, "a=mid:")
        self._video_mid = attribute(video_section, "a=mid:")
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
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                with contextlib.suppress(ValueError):
                    self.remb = unpack_remb_fci(packet.fci)[0]
                return
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
                    if data is None or not may_resend(stream.resent, sequence, now):
                        continue
                    self._resend(data)
                    self.retransmissions += 1

        video._handle_rtcp_packet = handle_rtcp  # type: ignore[method-assign]
        self.remb: int | None = None
        """The bitrate the server last said this publisher may send (bits per second)."""
        self._rates = clip.layer_bitrates()
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
        fitting = len(self.streams)
        if len(self.streams) > 1 and self.remb is not None:
            fitting, total = 0, 0.0
            for layer in self._layers:
                total += self._rates[layer]
                if fitting and total > self.remb:
                    break
                fitting += 1
        for rank, (stream, layer) in enumerate(zip(self.streams, self._layers, strict=True)):
            if rank >= fitting:
                stream.paused = True
                continue
            if stream.paused:
                stream.paused, stream.keyframe = False, True
            key = stream.keyframe
            payloads = (self.clip.keyframes if key else self.clip.video)[layer][index]
            if temporal_id(payloads[0]) == 0:
                stream.tl0picidx = (stream.tl0picidx + 1) & 0xFF
            payloads = renumber(payloads, stream.picture_id, stream.tl0picidx)
            stream.picture_id = (stream.picture_id + 1) & 0x7FFF
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


def attribute(section: list[str], prefix: str) -> str | None:
    return next((line[len(prefix) :] for line in section if line.startswith(prefix)), None)


class ScreenSender:
    """Sends a shared screen on a publish connection: one layer (the clip's largest, 1280x720)
    at ``fps`` frames a second, on the sender's own SSRC, answering a PLI with a keyframe, as a
    browser sends a screen (no simulcast, a low frame rate). The section is the offer's
    ``section``-th (0: the first). No retransmissions: on loopback a screen's few packets are
    next to never lost, and a lost one costs a keyframe, as without NACKs."""

    def __init__(
        self, clip: Clip, sender: RTCRtpSender, offer: str, answer: str, section: int, fps: int
    ) -> None:
        self.clip = clip
        self.fps = fps
        self._transport = sender.transport
        offered, answered = sections(offer)[section], sections(answer)[section]
        self._extensions = _extensions(offered)
        self._pt = int(answered[0].split()[3])
        self._mid = attribute(offered, "a=mid:")
        self._stream = _Stream(sender._ssrc, None)
        self._stream.keyframe = True
        self.keyframe_requests = 0
        handle = sender._handle_rtcp_packet

        async def handle_rtcp(packet: Any) -> None:
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                self._stream.keyframe = True
                self.keyframe_requests += 1
                return
            await handle(packet)

        sender._handle_rtcp_packet = handle_rtcp  # type: ignore[method-assign]

    def send(self, number: int) -> None:
        """Send screen frame ``number`` (the clip's frames, every ``FPS / fps``-th)."""
        stream = self._stream
        index = (number * (FPS // self.fps)) % FRAMES
        key = stream.keyframe
        payloads = (self.clip.keyframes if key else self.clip.video)[len(LAYERS) - 1][index]
        pair = self._transport.transport._connection._nominated.get(1)
        srtp = getattr(self._transport, "_tx_srtp", None)
        if pair is None or srtp is None:
            return
        for position, payload in enumerate(payloads):
            packet = RtpPacket(
                payload_type=self._pt,
                marker=int(position == len(payloads) - 1),
                sequence_number=stream.sequence,
                timestamp=(number * 90000 // self.fps) & 0xFFFFFFFF,
                ssrc=stream.ssrc,
                payload=payload,
            )
            packet.extensions.mid = self._mid
            packet.extensions.abs_send_time = int(time.time() * (1 << 18)) & 0xFFFFFF
            pair.protocol.transport.sendto(
                srtp.protect(packet.serialize(self._extensions)), pair.remote_addr
            )
            stream.sequence = (stream.sequence + 1) & 0xFFFF
        stream.keyframe = stream.keyframe and not key
