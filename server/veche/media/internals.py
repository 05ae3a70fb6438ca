"""Every use of aiortc's and aioice's private internals, in one place.

aiortc's public API decodes every received frame and encodes every sent one; an SFU must do
neither. Four narrow hooks make aiortc forward encoded media instead:

* :func:`tap_receiver` replaces one receiver's RTP handler: it keeps the parts a good receiver
  needs (statistics for receiver reports, RTX unwrapping, NACKs and REMB towards the publisher;
  a NACK names only packets still worth sending again, :mod:`veche.media.nacks`), sizes its
  socket's receive buffer to what it receives (:mod:`veche.media.recvbuf`)
  and hands each packet to Veche instead of the jitter buffer and decoder; the decoder thread
  that ``receive()`` starts is stopped before any frame could reach it.
* :func:`feed_sender` makes one sender send ready RTP payloads that Veche writes with a
  :class:`PacketWriter` (header, SRTP, one ``sendto``, synchronously) instead of encoding a
  track; aiortc still answers NACKs from the packet history the writer keeps; sender reports
  are sent from its counters while the sender sends (not for an idle one); a PLI or FIR it
  receives is passed to Veche.
* :func:`pin_codecs` narrows a transceiver to one negotiated codec before answering, and
  :func:`receive_codec` lets a running receiver take a codec it switched to.
* :func:`accept_declined_sections` rewrites an answer that declines a section (which aiortc
  cannot apply) into one that leaves the section inactive.
* :func:`accept_simulcast` lets a receiver take a simulcast publisher's layers: the RTP stream
  id extensions are negotiated and parsed, and packets of an SSRC the SDP did not announce are
  routed by their MID (aiortc routes them by payload type only, which fails when two bundled
  sections share one).
* :func:`watch_feedback` hands Veche what a subscriber reports about its link on one sender:
  the bitrate it estimates it can receive (REMB) and the loss and round-trip time of its
  receiver reports (aiortc reads both but keeps them to itself).
* :func:`set_stream_id` names the stream a forwarded track belongs to in the subscriber's SDP.
* :func:`bind_ports` makes a peer connection's ICE gathering bind only UDP ports of a range and
  announce a configured public address (aioice has no option for either).
* :func:`lighten_aiortc` removes costs aiortc pays per media section: on every renegotiation
  the certificate's fingerprints, hashed again for every section, and a deep copy of every codec
  it compares; and, for every video section, a bandwidth estimator of a thousand objects made
  whether or not anything is ever received on it (a subscribe connection's never is).
* :func:`read_in_bursts` makes asyncio read up to :data:`BURST` datagrams from a ready UDP
  socket per turn of the event loop instead of one.
* :func:`patient_consent` makes ICE consent (RFC 7675) expire after 30 s without an answer, as
  the RFC says, instead of after six checks in a row each answered later than half a second
  (aioice's rule, which a loaded event loop on either side breaks at once).

The aiortc version range is pinned in ``pyproject.toml``; :func:`check_internals` verifies that
what this module relies on still exists and ``tests/unit/test_media_internals.py`` calls it, so
an upgrade that changes them fails loudly.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import collections
import contextlib
import dataclasses
import errno
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import aioice.ice
import aioice.stun
import aiortc.rtcpeerconnection
import aiortc.rtcrtpreceiver
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aiortc import (
    RTCDtlsTransport,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.codecs import is_rtx
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsFingerprint, RtpRouter
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcpeerconnection import is_codec_compatible
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
)
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics
from aiortc.rtcrtpsender import RTCEncodedFrame
from aiortc.rtp import (
    DYNAMIC_PAYLOAD_TYPES,
    RTCP_PSFB_APP,
    RTP_HISTORY_SIZE,
    AnyRtcpPacket,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
    unpack_remb_fci,
    unwrap_rtx,
)

from veche.media.nacks import NackWindow
from veche.media.recvbuf import ReceiveBuffer

__all__ = [
    "EncodedFrame",
    "PacketSink",
    "PacketWriter",
    "accept_declined_sections",
    "accept_simulcast",
    "bind_ports",
    "check_internals",
    "feed_sender",
    "pin_codecs",
    "receive_codec",
    "request_keyframe",
    "set_stream_id",
    "tap_receiver",
    "watch_feedback",
]

log = logging.getLogger(__name__)

EncodedFrame = RTCEncodedFrame
"""Ready RTP payloads of one frame, their timestamp and (audio) level in -dBov."""

SIMULCAST_REMB_FLOOR: Final = 2_500_000
"""Bits per second the server never advertises below (REMB) to a simulcast publisher: its
three camera layers (150 kbps, 500 kbps, 1.5 Mbps) and its microphone."""

_R = "_RTCRtpReceiver__"
_S = "_RTCRtpSender__"
_RECEIVER_FIELDS: Final = (
    "remote_bitrate_estimator",
    "rtcp_ssrc",
    "active_ssrc",
    "codecs",
    "remote_streams",
    "rtx_ssrc",
    "nack_generator",
    "decoder_thread",
    "stop_decoder",
)
_SENDER_FIELDS: Final = (
    "encoder",
    "track",
    "started",
    "rtp_header_extensions_map",
    "rtp_history",
    "ntp_timestamp",
    "rtp_timestamp",
    "octet_count",
    "packet_count",
    "stream_id",
    "rtt",
    "cname",
    "lsr",
    "lsr_time",
    "rtcp_started",
    "rtcp_exited",
)
_ESTIMATOR: Final = f"{_R}remote_bitrate_estimator"
_RTCP_SSRC: Final = f"{_R}rtcp_ssrc"
_CODECS: Final = f"{_R}codecs"
_STREAMS: Final = f"{_R}remote_streams"
_RTX_SSRC: Final = f"{_R}rtx_ssrc"
_NACKS: Final = f"{_R}nack_generator"
_NTP_TIMESTAMP: Final = f"{_S}ntp_timestamp"
_RTP_TIMESTAMP: Final = f"{_S}rtp_timestamp"
_OCTET_COUNT: Final = f"{_S}octet_count"
_PACKET_COUNT: Final = f"{_S}packet_count"
_CNAME: Final = f"{_S}cname"
_LSR: Final = f"{_S}lsr"
_LSR_TIME: Final = f"{_S}lsr_time"
_RTCP_STARTED: Final = f"{_S}rtcp_started"
_RTCP_EXITED: Final = f"{_S}rtcp_exited"
_IDLE: Final = "_veche_idle"
"""A fed sender's future, resolved by its next frame (see :func:`_report_while_sending`)."""
_RTT: Final = f"{_S}rtt"
_STREAM_ID: Final = "_stream_id"


class PacketSink(Protocol):
    """Receives every RTP packet of a tapped receiver (RTX already unwrapped)."""

    def __call__(self, packet: RtpPacket, codec: RTCRtpCodecParameters) -> None: ...


def check_internals() -> list[str]:
    """Names of private aiortc/aioice members this module needs that are missing."""
    missing: list[str] = []
    receiver_init = RTCRtpReceiver.__init__.__code__.co_names
    for field in _RECEIVER_FIELDS:
        if f"{_R}{field}" not in receiver_init and not hasattr(RTCRtpReceiver, f"{_R}{field}"):
            missing.append(f"RTCRtpReceiver.{_R}{field}")
    sender_names = (
        RTCRtpSender.__init__.__code__.co_names + RTCRtpSender.replaceTrack.__code__.co_names
    )
    for field in _SENDER_FIELDS:
        if f"{_S}{field}" not in sender_names and f"_{field}" not in sender_names:
            missing.append(f"RTCRtpSender.{_S}{field}")
    for owner, name in (
        (RTCRtpReceiver, "_handle_rtp_packet"),
        (RTCRtpReceiver, "_send_rtcp"),
        (RTCRtpReceiver, "_send_rtcp_nack"),
        (RTCRtpReceiver, "_send_rtcp_pli"),
        (RTCRtpSender, "_next_encoded_frame"),
        (RTCRtpSender, "_send_keyframe"),
        (RTCRtpSender, "_handle_rtcp_packet"),
        (RTCRtpSender, "_run_rtp"),
        (RTCRtpSender, "_send_rtcp"),
        (aioice.ice.Connection, "get_component_candidates"),
        (aiortc.rtcpeerconnection, "find_common_codecs"),
        (RTCCertificate, "getFingerprints"),
        (aiortc.rtcrtpreceiver, "RemoteBitrateEstimator"),
        (aioice.ice, "StunProtocol"),
        (aioice.ice.Connection, "query_consent"),
        (getattr(asyncio.selector_events, "_SelectorDatagramTransport", None), "_read_ready"),
        (aioice.ice.Connection, "build_request"),
    ):
        if not hasattr(owner, name):
            missing.append(f"{getattr(owner, '__name__', owner)}.{name}")
    if "_rtp_router" not in RTCDtlsTransport.__init__.__code__.co_names:
        missing.append("RTCDtlsTransport._rtp_router")
    if "_tx_srtp" not in RTCDtlsTransport.__init__.__code__.co_names:
        missing.append("RTCDtlsTransport._tx_srtp")
    if "_state" not in RTCDtlsTransport.__init__.__code__.co_names:
        missing.append("RTCDtlsTransport._state")
    if "_rtp_header_extensions_map" not in RTCDtlsTransport.__init__.__code__.co_names:
        missing.append("RTCDtlsTransport._rtp_header_extensions_map")
    if "_headerExtensions" not in RTCRtpTransceiver.__init__.__code__.co_names:
        missing.append("RTCRtpTransceiver._headerExtensions")
    if "mid_table" not in RtpRouter.__init__.__code__.co_names:
        missing.append("RtpRouter.mid_table")
    if "_query_consent_task" not in aioice.ice.Connection.__init__.__code__.co_names:
        missing.append("aioice Connection._query_consent_task")
    if "_nominated" not in aioice.ice.Connection.__init__.__code__.co_names:
        missing.append("aioice Connection._nominated")
    run_rtp = RTCRtpSender._run_rtp.__code__.co_names
    if "_next_encoded_frame" not in run_rtp:
        missing.append("RTCRtpSender._run_rtp no longer calls _next_encoded_frame")
    if "_protocols" not in aioice.ice.Connection.get_component_candidates.__code__.co_names:
        missing.append("aioice Connection._protocols")
    return missing


# ------------------------------------------------------------------------------- negotiation


def lighten_aiortc() -> None:
    """Make aiortc's per-section work cheaper, with the same results (idempotent): a
    certificate's fingerprints are computed once (they never change); the codecs that
    :func:`aiortc.rtcpeerconnection.find_common_codecs` hands out are copied field by field
    instead of with ``copy.deepcopy`` (its fields are plain values, one list and one dict); and
    a video receiver's bandwidth estimator is made at the first packet it is given
    (:class:`_LazyEstimator`). Measured at 98 sections: an offer and its answer 37 -> 24 ms of
    CPU; in a 32-person meeting a million objects fewer for the garbage collector to walk."""
    if getattr(RTCCertificate.getFingerprints, "_veche", False):
        return
    fingerprints = RTCCertificate.getFingerprints

    def cached_fingerprints(self: RTCCertificate) -> list[RTCDtlsFingerprint]:
        found: list[RTCDtlsFingerprint] | None = getattr(self, "_veche_fingerprints", None)
        if found is None:
            found = fingerprints(self)
            self._veche_fingerprints = found  # type: ignore[attr-defined]
        return list(found)

    cached_fingerprints._veche = True  # type: ignore[attr-defined]
    RTCCertificate.getFingerprints = cached_fingerprints  # type: ignore[method-assign]
    aiortc.rtcpeerconnection.find_common_codecs = _find_common_codecs
    setattr(aiortc.rtcrtpreceiver, "RemoteBitrateEstimator", _LazyEstimator)  # noqa: B010


BURST: Final = 32
"""Datagrams read from one ready UDP socket per turn of the event loop, at most."""


def read_in_bursts() -> None:
    """Make asyncio's UDP transports read every datagram waiting on a ready socket, up to
    :data:`BURST`, per turn of the event loop (idempotent).

    asyncio reads one datagram per socket per turn. A turn of a busy server's loop takes
    milliseconds (every ready socket, timer and task has its go), so a publisher's socket
    that receives 300 packets a second fell behind as soon as a turn took more than 3 ms: its
    buffer filled and the kernel dropped what came next, ICE consent answers included (at 50
    people consent lapsed on connections whose checks went unanswered for 30 s). Reading a
    socket's backlog at once also costs one ``select`` wake-up per burst rather than per
    packet. The bound keeps one flooded socket from holding up the others."""
    transport_class = asyncio.selector_events._SelectorDatagramTransport  # type: ignore[attr-defined]
    if getattr(transport_class._read_ready, "_veche", False):
        return

    def read_ready(self: Any) -> None:
        for _ in range(BURST):
            if self._conn_lost:
                return
            try:
                data, addr = self._sock.recvfrom(self.max_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal read error on datagram transport")
                return
            self._protocol.datagram_received(data, addr)

    read_ready._veche = True  # type: ignore[attr-defined]
    transport_class._read_ready = read_ready


CONSENT_EXPIRY: Final = 30.0
"""Seconds without an answered consent check after which a connection's consent expires
(RFC 7675, section 5.1)."""
CONSENT_INTERVAL: Final = 5.0
"""Mean seconds between consent checks (randomized by ±20%, as the RFC asks)."""
CONSENT_RETRANSMISSIONS: Final = 3
"""Each check is sent again after 0.5, 1.5 and 3.5 s without an answer; it gives up at 7.5 s."""


def patient_consent() -> None:
    """Replace aioice's consent freshness check with one that expires consent as RFC 7675
    does: 30 seconds after the last answered check (idempotent).

    aioice sends each check once and counts it failed if no answer came within its first
    retransmission timeout (0.5 s); six failures in a row close the connection. An answer that
    takes longer than half a second is normal on a loaded server (the event loop behind by a
    second while a 50-person meeting sets up) or a loaded client, and its socket may hold
    hundreds of media packets before the answer: in the meeting benchmark at 50 people about
    30 publish connections closed 30-35 s after they connected, all within two seconds, their
    participants' pictures gone for everyone while they connected again. Here each check is
    retransmitted (answers up to 7.5 s late count) and consent lasts 30 s from the last answer,
    whatever the number of checks in between."""
    original = aioice.ice.Connection.query_consent
    if getattr(original, "_veche", False):
        return

    async def query_consent(self: aioice.ice.Connection) -> None:
        assert self.remote_password is not None  # consent checks start after connect()
        key = self.remote_password.encode("utf8")
        loop = asyncio.get_running_loop()
        answered = loop.time()
        while True:
            await asyncio.sleep(CONSENT_INTERVAL * (0.8 + 0.4 * random.random()))
            for pair in list(self._nominated.values()):
                request = self.build_request(pair, nominate=False)
                try:
                    await pair.protocol.request(
                        request,
                        pair.remote_addr,
                        integrity_key=key,
                        retransmissions=CONSENT_RETRANSMISSIONS,
                    )
                except aioice.stun.TransactionError:
                    continue
                answered = loop.time()
            if loop.time() - answered >= CONSENT_EXPIRY:
                log.info("ICE consent expired: no answer for %.0f s", loop.time() - answered)
                self._query_consent_task = None
                await self.close()
                return

    query_consent._veche = True  # type: ignore[attr-defined]
    query_consent._veche_original = original  # type: ignore[attr-defined]
    aioice.ice.Connection.query_consent = query_consent  # type: ignore[method-assign]


class _LazyEstimator:
    """aiortc's :class:`~aiortc.rate.RemoteBitrateEstimator`, made when a packet is first
    added: each holds a 1,000-bucket rate counter, and every video section of every subscribe
    connection (which never receives) had one: 1.3 million objects in a 32-person meeting, which
    made each full garbage collection stop the event loop for 300-700 ms."""

    __slots__ = ("_real",)

    def __init__(self) -> None:
        self._real: RemoteBitrateEstimator | None = None

    def add(
        self, arrival_time_ms: int, abs_send_time: int, payload_size: int, ssrc: int
    ) -> tuple[int, list[int]] | None:
        if self._real is None:
            self._real = RemoteBitrateEstimator()
            window = self._real.incoming_bitrate
            self._real.incoming_bitrate = RateWindow(window._window_size, window._scale)  # type: ignore[assignment]
        return self._real.add(arrival_time_ms, abs_send_time, payload_size, ssrc)


class RateWindow:
    """aiortc's :class:`~aiortc.rate.RateCounter` (a byte rate over a sliding window of
    milliseconds), with the same results, kept as a queue of samples instead of a bucket per
    millisecond: aiortc's walks every millisecond passed on each packet and makes a thousand
    buckets anew each time its receiver was silent for a second (a simulcast layer paused, a
    publisher renewed), which was 7% of the server's time in a 50-person meeting."""

    __slots__ = ("_count", "_origin", "_samples", "_scale", "_total", "_window")

    def __init__(self, window_size: int, scale: int = 8000) -> None:
        self._window = window_size
        self._scale = scale
        self.reset()

    def reset(self) -> None:
        self._samples: collections.deque[tuple[int, int]] = collections.deque()
        self._origin: int | None = None
        self._total = 0
        self._count = 0

    def add(self, value: int, now_ms: int) -> None:
        if self._origin is None:
            self._origin = now_ms
        else:
            self._erase_old(now_ms)
        self._samples.append((now_ms, value))
        self._total += value
        self._count += 1

    def rate(self, now_ms: int) -> int | None:
        if self._origin is not None:
            self._erase_old(now_ms)
            active = now_ms - self._origin + 1
            if self._count > 0 and active > 1:
                return round(self._scale * self._total / active)
        return None

    def _erase_old(self, now_ms: int) -> None:
        assert self._origin is not None
        origin = now_ms - self._window + 1
        if self._origin >= origin:
            return
        self._origin = origin
        samples = self._samples
        while samples and samples[0][0] < origin:
            _, value = samples.popleft()
            self._total -= value
            self._count -= 1


def _copy_codec(codec: RTCRtpCodecParameters) -> RTCRtpCodecParameters:
    return dataclasses.replace(
        codec, rtcpFeedback=list(codec.rtcpFeedback), parameters=dict(codec.parameters)
    )


def _find_common_codecs(
    local_codecs: list[RTCRtpCodecParameters], remote_codecs: list[RTCRtpCodecParameters]
) -> list[RTCRtpCodecParameters]:
    """aiortc's ``find_common_codecs`` (1.16), but with :func:`_copy_codec` for deep copies."""
    common: list[RTCRtpCodecParameters] = []
    common_base: dict[int | None, RTCRtpCodecParameters] = {}
    for remote in remote_codecs:
        if is_rtx(remote):  # RTX only for a base codec accepted, at its clock rate
            apt = remote.parameters.get("apt")
            base = common_base.get(apt) if isinstance(apt, int) else None
            if base is not None and remote.clockRate == base.clockRate:
                common.append(_copy_codec(remote))
            continue
        for local in local_codecs:
            if is_codec_compatible(local, remote):
                codec = _copy_codec(local)
                if remote.payloadType in DYNAMIC_PAYLOAD_TYPES:
                    codec.payloadType = remote.payloadType
                codec.rtcpFeedback = [f for f in codec.rtcpFeedback if f in remote.rtcpFeedback]
                common.append(codec)
                common_base[codec.payloadType] = codec
                break
    return common


# ------------------------------------------------------------------------------- receivers


def tap_receiver(
    receiver: RTCRtpReceiver,
    sink: PacketSink,
    on_nack: Callable[[], None] | None = None,
    max_bitrate: Callable[[], int | None] | None = None,
) -> None:
    """Deliver ``receiver``'s packets to ``sink`` instead of decoding them; ``on_nack`` is
    called for each NACK sent to the publisher. ``max_bitrate()``, if given, caps the bitrate
    the publisher is told (REMB) it may send (the load governor's lever).

    Call before the receiver starts (from the peer connection's ``track`` event).
    """
    state = receiver.__dict__
    layer_ssrcs: dict[str, int] = {}
    repaired_rids: dict[int, str] = {}
    first_ssrc: dict[int, int] = {}
    more_nacks: dict[int, NackGenerator] = {}
    windows: dict[int, NackWindow] = {}
    buffer: ReceiveBuffer | None = None

    async def handle_rtp(packet: RtpPacket, arrival_time_ms: int) -> None:
        nonlocal buffer
        if not receiver._enabled:
            return
        now = time.monotonic()
        if buffer is None:
            buffer = _receive_buffer(receiver, now)
        if buffer is not None:
            buffer.count(now)
        estimator = state[_ESTIMATOR]
        rtcp_ssrc = state[_RTCP_SSRC]
        if estimator is not None and packet.extensions.abs_send_time is not None:
            remb = estimator.add(
                abs_send_time=packet.extensions.abs_send_time,
                arrival_time_ms=arrival_time_ms,
                payload_size=len(packet.payload) + packet.padding_size,
                ssrc=packet.ssrc,
            )
            if remb is not None and rtcp_ssrc is not None:
                bitrate, ssrcs = remb
                if len(layer_ssrcs) > 1:
                    # A simulcast publisher needs the sum of its layers; the delay-based
                    # estimate of a Python receiver reads its own scheduling jitter as
                    # congestion and would keep the top layer off for good. Loss still
                    # lowers the publisher's rate (its own loss-based estimate).
                    bitrate = max(bitrate, SIMULCAST_REMB_FLOOR)
                cap = max_bitrate() if max_bitrate is not None else None
                if cap is not None:
                    bitrate = min(bitrate, cap)
                feedback = RtcpPsfbPacket(
                    fmt=RTCP_PSFB_APP,
                    ssrc=rtcp_ssrc,
                    media_ssrc=0,
                    fci=pack_remb_fci(bitrate, ssrcs),
                )
                await receiver._send_rtcp(feedback)
        codecs: dict[int, RTCRtpCodecParameters] = state[_CODECS]
        codec = codecs.get(packet.payload_type)
        if codec is None:
            return
        streams = state[_STREAMS]
        stats = streams.get(packet.ssrc)
        if stats is None:
            stats = streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stats.add(packet)
        rid = packet.extensions.rtp_stream_id
        if rid is not None:
            layer_ssrcs[rid] = packet.ssrc
        if is_rtx(codec):
            # A simulcast layer's RTX stream is announced by its repaired stream id only, and
            # only in its first packets: those may be padding sent to probe the bandwidth
            # before the layer itself starts (a browser's top layer, seconds later), so the
            # id is kept until the layer's own stream is known.
            repaired = packet.extensions.repaired_rtp_stream_id
            if repaired is not None:
                repaired_rids[packet.ssrc] = repaired
            else:
                repaired = repaired_rids.get(packet.ssrc)
            if repaired is not None and repaired in layer_ssrcs:
                state[_RTX_SSRC][packet.ssrc] = layer_ssrcs[repaired]
            original_ssrc = state[_RTX_SSRC].get(packet.ssrc)
            apt = codec.parameters.get("apt")
            if original_ssrc is None or len(packet.payload) < 2 or apt not in codecs:
                return  # unknown source, or padding used for bandwidth probing
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original_ssrc)
            codec = codecs[apt]
        nacks = state[_NACKS]
        if nacks is not None:
            # One generator per SSRC: a simulcast publisher sends several numbered streams.
            first = first_ssrc.setdefault(0, packet.ssrc)
            if packet.ssrc != first:
                nacks = more_nacks.get(packet.ssrc)
                if nacks is None:
                    nacks = more_nacks[packet.ssrc] = NackGenerator()
        if nacks is not None and nacks.add(packet):
            window = windows.get(packet.ssrc)
            if window is None:
                window = windows[packet.ssrc] = NackWindow()
            lost = window.due(nacks.missing, now)
            if lost:
                if on_nack is not None:
                    on_nack()
                await receiver._send_rtcp_nack(packet.ssrc, lost)
        sink(packet, codec)

    original_receive = receiver.receive

    async def receive(parameters: Any) -> None:
        await original_receive(parameters)
        # No frame has been queued (handle_rtp never does): stopping now means the thread
        # exits without ever creating a decoder.
        getattr(receiver, f"{_R}stop_decoder")()

    receiver._handle_rtp_packet = handle_rtp  # type: ignore[method-assign]
    receiver.receive = receive  # type: ignore[method-assign]


def _receive_buffer(receiver: RTCRtpReceiver, now: float) -> ReceiveBuffer | None:
    """The :class:`ReceiveBuffer` of the UDP socket ``receiver``'s packets come in on, shared
    by every receiver of that socket (a bundled connection's audio and video); ``None`` until
    a pair is nominated. A TCP transport's (a TURN relay over TCP: its window is not this
    module's to size) sizes nothing. aioice's internals: ``Connection._nominated``."""
    pair = receiver.transport.transport._connection._nominated.get(1)
    if pair is None:
        return None
    protocol = pair.protocol
    buffer: ReceiveBuffer | None = getattr(protocol, "_veche_buffer", None)
    if buffer is None:
        sock = protocol.transport.get_extra_info("socket")
        if sock is not None and sock.type != socket.SOCK_DGRAM:
            sock = None
        buffer = protocol._veche_buffer = ReceiveBuffer(sock, now)  # type: ignore[attr-defined]
    return buffer


async def request_keyframe(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Send a PLI for ``media_ssrc`` to the publisher behind ``receiver``."""
    with contextlib.suppress(ConnectionError):
        await receiver._send_rtcp_pli(media_ssrc)


# ------------------------------------------------------------------------------- senders


_NTP_EPOCH: Final = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)


class PacketHistory(dict[int, Any]):
    """A sender's packet history (what aiortc resends a NACKed packet from) that keeps each
    packet as a tuple of plain values (payload type, marker, sequence number, timestamp, SSRC,
    payload, MID, abs-send-time, audio level) and makes the :class:`RtpPacket` only when aiortc
    asks for one (:meth:`get`, the one way it reads it).

    aiortc keeps the packet objects themselves: with three garbage-collected objects each and
    128 per sender, a 32-person meeting held a quarter of a million, and every full collection
    of the garbage collector walked them all, stopping the event loop for 200-450 ms (the
    arrival latency's p95 of the meeting benchmark). Tuples of plain values are not walked."""

    def get(self, key: int, default: Any = None) -> Any:
        kept = super().get(key, default)
        if not isinstance(kept, tuple):
            return kept  # an RtpPacket aiortc stored itself, or the default
        payload_type, marker, number, timestamp, ssrc, payload, mid, send_time, level = kept
        packet = RtpPacket(
            payload_type=payload_type,
            marker=marker,
            sequence_number=number,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=payload,
        )
        packet.extensions.mid = mid
        if send_time is not None:
            packet.extensions.abs_send_time = send_time
        if level is not None:
            packet.extensions.audio_level = (False, level)
        return packet


class PacketWriter:
    """Writes one subscriber stream's RTP packets straight to its transport, synchronously.

    aiortc's own send loop costs a task switch per frame and several coroutine layers per
    packet; this does per packet only what is needed (header, SRTP, one ``sendto``), and keeps
    the sender's bookkeeping (packet history, counters, last timestamps) so that aiortc still
    answers NACKs (with RTX) and sends correct sender reports for the stream.
    """

    def __init__(self, sender: RTCRtpSender, parameters: Any) -> None:
        self._sender = sender
        self._state = sender.__dict__
        self._payload_type: int = parameters.codecs[0].payloadType
        self._mid: str | None = parameters.muxId
        self._extensions = self._state[f"{_S}rtp_header_extensions_map"]
        history = PacketHistory(self._state[f"{_S}rtp_history"])
        self._state[f"{_S}rtp_history"] = history
        self._history = history
        self._video = sender.kind == "video"

    def write_frame(
        self, payloads: list[bytes], sequence: int, timestamp: int, audio_level: int | None
    ) -> None:
        """Send one frame's payloads, numbered from ``sequence`` on, with RTP ``timestamp``
        (both from the stream's :class:`~veche.media.rewriter.StreamRewriter`)."""
        transport = self._sender.transport
        if transport._state is not DtlsState.CONNECTED:
            return
        pair = transport.transport._connection._nominated.get(1)
        if pair is None:
            return
        srtp = transport._tx_srtp
        now = time.time()
        rtp_timestamp = timestamp
        abs_send_time = int(now * (1 << 18)) & 0xFFFFFF  # 6.18 seconds; NTP-Unix offset is 0 mod 64
        last = len(payloads) - 1
        octets = 0
        for index, payload in enumerate(payloads):
            number = (sequence + index) & 0xFFFF
            packet = RtpPacket(
                payload_type=self._payload_type,
                marker=1 if index == last else 0,
                sequence_number=number,
                timestamp=rtp_timestamp,
                ssrc=self._sender._ssrc,
                payload=payload,
            )
            packet.extensions.mid = self._mid
            send_time = level = None
            if self._video:
                packet.extensions.abs_send_time = send_time = abs_send_time
            elif audio_level is not None:
                packet.extensions.audio_level = (False, audio_level)
                level = audio_level
            self._history[number % RTP_HISTORY_SIZE] = (
                self._payload_type,
                packet.marker,
                number,
                rtp_timestamp,
                packet.ssrc,
                payload,
                self._mid,
                send_time,
                level,
            )
            _send_datagram(pair, srtp.protect(packet.serialize(self._extensions)))
            octets += len(payload)
        state = self._state
        state[_NTP_TIMESTAMP] = int((now + _NTP_EPOCH) * (1 << 32))
        state[_RTP_TIMESTAMP] = rtp_timestamp
        state[_OCTET_COUNT] += octets
        state[_PACKET_COUNT] += len(payloads)
        idle = state.pop(_IDLE, None)
        if idle is not None and not idle.done():
            idle.set_result(None)  # wakes the sender's report loop (see _report_while_sending)

    def forget(self) -> None:
        """Answer no NACK for what was sent so far (aiortc resends from this history)."""
        self._history.clear()


def _send_datagram(pair: Any, data: bytes) -> None:
    # What aioice's StunProtocol.send_data does, without a coroutine per packet; for a relayed
    # pair the transport is aioice's TURN transport, which frames the data itself.
    pair.protocol.transport.sendto(data, pair.remote_addr)


def feed_sender(
    sender: RTCRtpSender,
    on_ready: Callable[[PacketWriter], None],
    on_keyframe_request: Callable[[], None],
) -> None:
    """Make ``sender`` send what Veche writes with the :class:`PacketWriter` handed to
    ``on_ready`` once the connection negotiated it; it never creates an encoder. A PLI or FIR
    from the subscriber calls ``on_keyframe_request``.

    The sender must have a track (any track: it is never read) so that aiortc starts it.
    """
    original_send = sender.send

    async def send(parameters: Any) -> None:
        first = not getattr(sender, f"{_S}started")
        await original_send(parameters)
        if first:
            on_ready(PacketWriter(sender, parameters))

    async def next_encoded_frame(codec: RTCRtpCodecParameters) -> EncodedFrame | None:
        # aiortc's own RTP loop waits here for good: packets are written by the PacketWriter.
        await asyncio.get_running_loop().create_future()
        return None

    sender.send = send  # type: ignore[method-assign]
    sender._next_encoded_frame = next_encoded_frame  # type: ignore[method-assign]
    sender._send_keyframe = on_keyframe_request  # type: ignore[method-assign]
    sender._run_rtcp = lambda: _report_while_sending(sender)  # type: ignore[method-assign]


async def _report_while_sending(sender: RTCRtpSender) -> None:
    """aiortc's sender report loop (an SR and the CNAME every 0.5-1.5 s, a BYE at the end),
    skipping the reports of a sender that sent nothing since its last one.

    A subscriber's sections are mostly idle: tiles it does not show, microphones that are not
    among the loudest. aiortc reports on each every second regardless: in a 50-person meeting
    ~4,900 SRTP-protected RTCP packets a second, a sixth of the server's time in one profile.
    An idle sender's last report still holds (RFC 3550 lets a sender that stopped sending stop
    reporting as one); the first packet it sends again brings the reports back. While idle the
    loop waits for that packet instead of waking every second (4,900 wake-ups a second at 50
    people were another 6% of the server's time)."""
    state = sender.__dict__
    state[_RTCP_STARTED].set()
    loop = asyncio.get_running_loop()
    reported = -1
    try:
        while True:
            await asyncio.sleep(0.5 + random.random())
            count = state[_PACKET_COUNT]
            if count == reported:
                # Sleep until the next frame rather than waking every second for nothing.
                idle = state[_IDLE] = loop.create_future()
                await idle
                continue
            reported = count
            packets: list[AnyRtcpPacket] = [
                RtcpSrPacket(
                    ssrc=sender._ssrc,
                    sender_info=RtcpSenderInfo(
                        ntp_timestamp=state[_NTP_TIMESTAMP],
                        rtp_timestamp=state[_RTP_TIMESTAMP],
                        packet_count=count & 0xFFFFFFFF,
                        octet_count=state[_OCTET_COUNT] & 0xFFFFFFFF,
                    ),
                )
            ]
            state[_LSR] = (state[_NTP_TIMESTAMP] >> 16) & 0xFFFFFFFF
            state[_LSR_TIME] = time.time()
            cname = state.get(_CNAME)
            if cname is not None:
                packets.append(
                    RtcpSdesPacket(
                        chunks=[RtcpSourceInfo(ssrc=sender._ssrc, items=[(1, cname.encode())])]
                    )
                )
            await sender._send_rtcp(packets)
    except asyncio.CancelledError:
        pass
    try:
        await sender._send_rtcp([RtcpByePacket(sources=[sender._ssrc])])
    finally:
        state[_RTCP_EXITED].set()


def watch_feedback(
    sender: RTCRtpSender,
    on_estimate: Callable[[int], None],
    on_report: Callable[[float, float | None], None],
) -> None:
    """Pass on what the subscriber behind ``sender`` reports about its link: ``on_estimate``
    gets each receiver-estimated maximum bitrate (REMB, bits per second) that names the
    sender's stream, ``on_report`` each receiver report's fraction of packets lost (0 to 1)
    with the sender's smoothed round-trip time in seconds (``None`` until known).

    aiortc handles both (the REMB would steer an encoder this sender does not have) and keeps
    them; this runs after its handler, which updates the round-trip time first.
    """
    original = sender._handle_rtcp_packet
    state = sender.__dict__

    async def handle_rtcp(packet: AnyRtcpPacket) -> None:
        await original(packet)
        try:
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                try:
                    bitrate, ssrcs = unpack_remb_fci(packet.fci)
                except ValueError:
                    return
                if sender._ssrc in ssrcs:
                    on_estimate(bitrate)
            elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
                for report in packet.reports:
                    if report.ssrc == sender._ssrc:
                        on_report(report.fraction_lost / 256, state.get(_RTT))
        except Exception:
            # Never let it reach aiortc's transport loop, which would stop all media.
            log.exception("subscriber feedback failed")

    sender._handle_rtcp_packet = handle_rtcp  # type: ignore[method-assign]


# ------------------------------------------------------------------------------- codecs


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs a transceiver has negotiated so far, in preference order."""
    codecs: list[RTCRtpCodecParameters] = transceiver._codecs
    return codecs


def pin_codecs(transceiver: RTCRtpTransceiver, codec: RTCRtpCodecParameters) -> None:
    """Keep only ``codec`` (and its RTX) on a transceiver whose remote offer is applied, so the
    answer lets the browser send nothing else."""
    kept = [codec]
    for candidate in transceiver._codecs:
        if is_rtx(candidate) and candidate.parameters.get("apt") == codec.payloadType:
            kept.append(candidate)
    transceiver._codecs = kept


def receive_codec(transceiver: RTCRtpTransceiver, codec: RTCRtpCodecParameters) -> None:
    """Let ``transceiver``'s receiver take packets of ``codec`` (and its RTX) after a
    renegotiation switched the publisher to it: aiortc reads the payload types a receiver knows,
    and routes to it on the shared transport, only when the receiver starts."""
    receiver = transceiver.receiver
    codecs: dict[int | None, RTCRtpCodecParameters] = receiver.__dict__[_CODECS]
    payload_types = [codec.payloadType]
    for candidate in transceiver._codecs:
        if is_rtx(candidate) and candidate.parameters.get("apt") == codec.payloadType:
            payload_types.append(candidate.payloadType)
            codecs[candidate.payloadType] = candidate
    codecs[codec.payloadType] = codec
    receiver.transport._rtp_router.register_receiver(
        receiver, ssrcs=[], payload_types=[pt for pt in payload_types if pt is not None]
    )


def accept_simulcast(transceiver: RTCRtpTransceiver, extensions: dict[str, int]) -> None:
    """Let ``transceiver`` (its remote offer applied) receive simulcast layers: ``extensions``
    maps the offer's RTP stream id extension URIs (``…:sdes:rtp-stream-id``,
    ``…:sdes:repaired-rtp-stream-id``) to their ids. aiortc drops both from its answer and
    never parses them; this keeps them in the answer and the transport's parser, and routes
    packets of unannounced SSRCs by MID."""
    kept: list[RTCRtpHeaderExtensionParameters] = transceiver._headerExtensions
    for uri, ext_id in extensions.items():
        if not any(e.uri == uri for e in kept):
            kept.append(RTCRtpHeaderExtensionParameters(id=ext_id, uri=uri))
    transport = transceiver.receiver.transport
    transport._rtp_header_extensions_map.configure(
        RTCRtpReceiveParameters(headerExtensions=list(kept))
    )
    _route_by_mid(transport._rtp_router)


def _route_by_mid(router: Any) -> None:
    if getattr(router, "_veche_mid_routing", False):
        return
    router._veche_mid_routing = True
    original = router.route_rtp

    def route_rtp(packet: RtpPacket) -> Any:
        if packet.ssrc not in router.ssrc_table and packet.extensions.mid is not None:
            receiver = router.mid_table.get(packet.extensions.mid)
            if receiver is not None:
                router.ssrc_table[packet.ssrc] = receiver
        return original(packet)

    router.route_rtp = route_rtp


def set_stream_id(sender: RTCRtpSender, stream_id: str) -> None:
    """Name the stream ``sender``'s track belongs to (the subscriber's ``track`` event sees it as
    ``streams[0].id``); aiortc has no API for it."""
    sender._stream_id = stream_id


# ------------------------------------------------------------------------------- declined


def accept_declined_sections(answer: str, offer: str) -> tuple[str, list[str]]:
    """Make an answer that declines media sections acceptable to aiortc; the declined mids.

    A browser may decline a section of the server's offer (port 0, no ICE or DTLS attributes,
    its mid left out of the bundle), as Firefox does for a codec it cannot decode. aiortc 1.16
    refuses any such answer ("ICE username fragment or password is missing"), and removing that
    check only moves the error on (a declined section lists none of the offered codecs). Each
    declined section is rewritten as an inactive one on the bundle's transport, with the offer's
    codecs, which is what declining means for a bundled connection: nothing flows there. An
    answer whose every section is declined is returned as it is.
    """
    head, sections = _split_sdp(answer)
    _, offered = _split_sdp(offer)
    declined_at = [i for i, lines in enumerate(sections) if _port(lines[0]) == 0]
    live = next((lines for lines in sections if _port(lines[0]) != 0), None)
    if not declined_at or live is None:
        return answer, []
    transport = [
        line
        for line in live
        if line.startswith(("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:", "a=setup:"))
    ]
    declined: list[str] = []
    for index in declined_at:
        lines = sections[index]
        theirs = offered[index] if index < len(offered) else lines
        mid = _attribute(lines, "a=mid:") or _attribute(theirs, "a=mid:") or str(index)
        kind, _, proto, *_ = [*lines[0].split(" "), "", "", ""]
        formats = theirs[0].split(" ")[3:]
        codec_lines = [
            line for line in theirs if line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"))
        ]
        sections[index] = [
            " ".join([kind, "9", proto, *formats]),
            "c=IN IP4 0.0.0.0",
            "a=inactive",
            f"a=mid:{mid}",
            "a=rtcp-mux",
            *transport,
            *codec_lines,
        ]
        declined.append(mid)
    text = "\r\n".join(head + [line for lines in sections for line in lines]) + "\r\n"
    return text, declined


def _split_sdp(sdp: str) -> tuple[list[str], list[list[str]]]:
    head: list[str] = []
    sections: list[list[str]] = []
    for line in sdp.splitlines():
        if not line:
            continue
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            head.append(line)
    return head, sections


def _port(m_line: str) -> int:
    parts = m_line.split(" ")
    try:
        return int(parts[1])
    except (IndexError, ValueError):
        return -1


def _attribute(lines: list[str], prefix: str) -> str | None:
    return next((line[len(prefix) :] for line in lines if line.startswith(prefix)), None)


# ------------------------------------------------------------------------------- ports


def bind_ports(pc: RTCPeerConnection, port_min: int, port_max: int, public_ip: str | None) -> None:
    """Make every ICE gatherer of ``pc`` not yet gathering bind host candidates to UDP ports in
    ``[port_min, port_max]`` and, if ``public_ip`` is set, announce that address instead of the
    interface's. Call before ``setLocalDescription``; it is idempotent."""
    for transceiver in pc.getTransceivers():
        gatherer = transceiver.receiver.transport.transport.iceGatherer
        connection = gatherer._connection
        if getattr(connection, "_veche_ports", False) or gatherer.state != "new":
            continue
        connection._veche_ports = True  # type: ignore[attr-defined]
        original = connection.get_component_candidates

        async def gather(
            component: int,
            addresses: list[str],
            timeout: int = 5,
            *,
            _connection: aioice.ice.Connection = connection,
            _original: Callable[..., Awaitable[list[Candidate]]] = original,
        ) -> list[Candidate]:
            candidates = await _bind_hosts(
                _connection, component, addresses, port_min, port_max, public_ip
            )
            if _connection.turn_server or _connection.stun_server:
                # aioice's own code for relayed candidates; with no addresses it binds nothing.
                candidates += await _original(component, [], timeout)
            return candidates

        connection.get_component_candidates = gather  # type: ignore[method-assign]


async def _bind_hosts(
    connection: aioice.ice.Connection,
    component: int,
    addresses: list[str],
    port_min: int,
    port_max: int,
    public_ip: str | None,
) -> list[Candidate]:
    loop = asyncio.get_running_loop()
    candidates = []
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = _bind_in_range(family, address, port_min, port_max)
        if sock is None:
            log.warning(
                "no free UDP port for media",
                extra={"address": address, "range": f"{port_min}-{port_max}"},
            )
            continue
        _, protocol = await loop.create_datagram_endpoint(
            lambda: aioice.ice.StunProtocol(connection), sock=sock
        )
        host, port = sock.getsockname()[:2]
        announced = public_ip if public_ip and family == socket.AF_INET else host
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", announced),
            component=component,
            transport="udp",
            priority=candidate_priority(component, "host"),
            host=announced,
            port=port,
            type="host",
        )
        connection._protocols.append(protocol)
        candidates.append(protocol.local_candidate)
    return candidates


def _bind_in_range(family: int, address: str, port_min: int, port_max: int) -> socket.socket | None:
    ports = list(range(port_min, port_max + 1))
    start = random.randrange(len(ports))  # spread sockets over the range
    for port in ports[start:] + ports[:start]:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((address, port))
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            return None
        sock.setblocking(False)
        return sock
    return None
