"""One participant's media: a *publish* connection the client offers, carrying its own tracks,
and a *subscribe* connection the server offers, carrying everyone else's.

Each side offers on one connection only, so offers never collide. The subscribe connection is
renegotiated whenever tracks come or go; changes that arrive while an offer is outstanding are
folded into one new offer after the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from aiortc.sdp import candidate_from_sdp

from veche.errors import ErrorCode, MediaError
from veche.media.candidates import candidate_address_allowed, filter_sdp_candidates
from veche.media.counters import MediaCounters
from veche.media.internals import (
    bind_ports,
    feed_sender,
    negotiated_codecs,
    pin_codecs,
    tap_receiver,
)
from veche.media.tracks import Downtrack, SenderFeed, Uptrack
from veche.protocol import Answer, Candidate, Error, Offer, PeerRole, ServerMessage, Source

__all__ = ["MediaConfig", "MediaPeer"]

log = logging.getLogger(__name__)

CLOSE_TIMEOUT: Final = 5.0
"""Seconds to wait for a peer connection to close (aiortc's close can hang)."""


def _no_ice_servers() -> list[RTCIceServer]:
    return []


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """What every peer connection of this server is configured with. ``ice_servers`` is called
    for each new connection (TURN credentials expire)."""

    ice_servers: Callable[[], list[RTCIceServer]] = _no_ice_servers
    relay_only: bool = False
    allow_local_candidates: bool = False
    max_candidates: int = 20
    max_sdp: int = 30000
    connect_timeout: float = 20.0
    port_min: int = 40000
    port_max: int = 40199
    public_ip: str | None = None
    counters: MediaCounters = field(default_factory=MediaCounters)
    """Totals for ``/metrics``, shared by every peer of the router."""


class _ForwardedTrack(MediaStreamTrack):
    """Stands in for a forwarded track on a subscriber's sender; never read (the sender is fed
    by a downtrack), its id names the track in the subscriber's SDP."""

    def __init__(self, kind: str, track_id: str) -> None:
        super().__init__()
        self.kind = kind
        self._id = track_id

    async def recv(self) -> None:  # type: ignore[override]
        raise RuntimeError("forwarded tracks are fed, not read")


class MediaPeer:
    """The two peer connections of one participant.

    ``send`` delivers a server message to this participant; ``on_publish`` is called with each
    new track the participant publishes; ``on_failed`` when a connection fails (ICE or DTLS),
    after the client was told with a ``media_failed`` error.
    """

    def __init__(
        self,
        participant_id: str,
        config: MediaConfig,
        *,
        send: Callable[[ServerMessage], None],
        on_publish: Callable[[Uptrack], None],
        on_failed: Callable[[], None] = lambda: None,
        on_level: Callable[[int], None] | None = None,
    ) -> None:
        self.participant_id = participant_id
        self.config = config
        self._send = send
        self._on_publish = on_publish
        self._on_failed = on_failed
        self._on_level = on_level
        self.publish_pc: RTCPeerConnection | None = None
        self.subscribe_pc: RTCPeerConnection | None = None
        self.uptracks: list[Uptrack] = []
        self._downtracks: dict[str, tuple[RTCRtpTransceiver, Downtrack]] = {}
        self._feeds: list[tuple[RTCRtpTransceiver, SenderFeed, RTCRtpCodecParameters]] = []
        self._awaiting_answer = False
        self._renegotiate = False
        self._negotiation: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._candidates: dict[PeerRole, int] = {"publish": 0, "subscribe": 0}
        self.closed = False

    # ---------------------------------------------------------------- messages from the client

    async def handle(self, message: Offer | Answer | Candidate) -> None:
        """Apply a media message from this participant's client."""
        if isinstance(message, Offer | Answer):
            if len(message.sdp) > self.config.max_sdp:
                raise MediaError(
                    f"the SDP is longer than {self.config.max_sdp} characters", ref=message.id
                )
            sdp, kept = filter_sdp_candidates(
                message.sdp,
                allow_local=self.config.allow_local_candidates,
                limit=self.config.max_candidates,
            )
            self._candidates[message.pc] = kept
            message = message.model_copy(update={"sdp": sdp})
        match message:
            case Offer(pc="publish"):
                await self._publish_offer(message.sdp, message.sources or {})
            case Answer(pc="subscribe"):
                await self._subscribe_answer(message.sdp)
            case Candidate():
                await self._candidate(message)
            case _:
                raise MediaError(
                    f"a client sends offers only for 'publish' and answers only for "
                    f"'subscribe', not {message.type} for {message.pc!r}",
                    code=ErrorCode.WRONG_STATE,
                    ref=message.id,
                )

    async def _publish_offer(self, sdp: str, sources: dict[str, Source]) -> None:
        if not any(line.startswith(("m=audio", "m=video")) for line in sdp.splitlines()):
            raise MediaError("the publish offer has no audio or video section")
        async with self._lock:
            if self.closed:
                return
            pc = self.publish_pc
            if pc is None:
                pc = self.publish_pc = self._new_pc("publish")
                pc.on("track", lambda track: self._tap(pc, track))
            known = {t.mid for t in pc.getTransceivers()}
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except Exception as exc:
                raise MediaError(f"the publish offer could not be applied: {exc}") from None
            added = []
            for transceiver in pc.getTransceivers():
                if transceiver.mid in known or transceiver.receiver.track is None:
                    continue
                codecs = [c for c in negotiated_codecs(transceiver) if not is_rtx(c)]
                if not codecs:
                    continue
                pin_codecs(transceiver, codecs[0])
                source = sources.get(transceiver.mid or "")
                if source is not None and (source == "microphone") != (transceiver.kind == "audio"):
                    source = None  # a microphone must be audio, a camera or screen video
                added.append(self._uptrack_for(transceiver, codecs[0], source))
            bind_ports(pc, self.config.port_min, self.config.port_max, self.config.public_ip)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
            self._send(Answer(pc="publish", sdp=pc.localDescription.sdp))
        for uptrack in added:
            self._on_publish(uptrack)

    def _tap(self, pc: RTCPeerConnection, track: MediaStreamTrack) -> None:
        for transceiver in pc.getTransceivers():
            if transceiver.receiver.track is track:
                receiver = transceiver.receiver

                def sink(
                    packet: RtpPacket,
                    codec: RTCRtpCodecParameters,
                    *,
                    t: RTCRtpTransceiver = transceiver,
                ) -> None:
                    uptrack = getattr(t, "_veche_uptrack", None)
                    if uptrack is not None:
                        uptrack.on_packet(packet, codec)

                tap_receiver(receiver, sink, on_nack=self._count_nack)

    def _count_nack(self) -> None:
        self.config.counters.nacks_sent += 1

    def _uptrack_for(
        self, transceiver: RTCRtpTransceiver, codec: RTCRtpCodecParameters, source: Source | None
    ) -> Uptrack:
        uptrack = Uptrack(
            self.participant_id,
            transceiver.kind,
            codec,
            transceiver.receiver,
            source=source,
            on_level=self._on_level if transceiver.kind == "audio" else None,
            counters=self.config.counters,
        )
        transceiver._veche_uptrack = uptrack  # type: ignore[attr-defined]
        self.uptracks.append(uptrack)
        log.info(
            "track published",
            extra={"participant": self.participant_id, "track": uptrack.id, "codec": codec.name},
        )
        return uptrack

    async def _subscribe_answer(self, sdp: str) -> None:
        async with self._lock:
            pc = self.subscribe_pc
            if pc is None or not self._awaiting_answer:
                raise MediaError(
                    "no subscribe offer is waiting for an answer", code=ErrorCode.WRONG_STATE
                )
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            except Exception as exc:
                raise MediaError(f"the subscribe answer could not be applied: {exc}") from None
            self._awaiting_answer = False
        if self._renegotiate:
            self._renegotiate = False
            self._schedule_negotiation()

    async def _candidate(self, message: Candidate) -> None:
        pc = self.publish_pc if message.pc == "publish" else self.subscribe_pc
        if pc is None or pc.remoteDescription is None:
            raise MediaError(
                f"no {message.pc} connection to add a candidate to",
                code=ErrorCode.WRONG_STATE,
                ref=message.id,
            )
        if not message.candidate:
            return  # end of candidates: aioice does not need to be told
        if self._candidates[message.pc] >= self.config.max_candidates:
            raise MediaError(
                f"at most {self.config.max_candidates} candidates per connection",
                code=ErrorCode.RATE_LIMITED,
                ref=message.id,
            )
        text = message.candidate.removeprefix("candidate:")
        try:
            candidate = candidate_from_sdp(text)
        except (AssertionError, ValueError, IndexError):
            raise MediaError("the ICE candidate could not be parsed", ref=message.id) from None
        if not candidate_address_allowed(
            candidate.ip, allow_local=self.config.allow_local_candidates
        ):
            return  # refused quietly: loopback, link-local, metadata or an unresolved name
        self._candidates[message.pc] += 1
        candidate.sdpMid = message.sdp_mid
        candidate.sdpMLineIndex = message.sdp_mline_index
        if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
            candidate.sdpMLineIndex = 0
        try:
            await pc.addIceCandidate(candidate)
        except Exception as exc:
            raise MediaError(f"the ICE candidate was refused: {exc}", ref=message.id) from None

    # ---------------------------------------------------------------- forwarding to this peer

    def subscribe(self, uptrack: Uptrack) -> None:
        """Start receiving ``uptrack`` (another participant's track)."""
        if self.closed or uptrack.id in self._downtracks or uptrack.closed:
            return
        pc = self.subscribe_pc
        if pc is None:
            pc = self.subscribe_pc = self._new_pc("subscribe")
        reusable = self._free_feed(uptrack)
        if reusable is None:
            transceiver = pc.addTransceiver(uptrack.kind, direction="sendonly")
            transceiver.setCodecPreferences(_capabilities_for(uptrack.codec))
            feed = SenderFeed(uptrack.kind)
            feed_sender(transceiver.sender, feed.ready, feed.keyframe_requested)
            self._feeds.append((transceiver, feed, uptrack.codec))
        else:
            transceiver, feed = reusable
            transceiver.direction = "sendonly"
        sender: RTCRtpSender = transceiver.sender
        sender._stream_id = uptrack.stream_id  # the subscriber's ontrack: streams[0].id
        sender.replaceTrack(_ForwardedTrack(uptrack.kind, uptrack.id))
        downtrack = Downtrack(uptrack, self.participant_id, feed)
        self._downtracks[uptrack.id] = (transceiver, downtrack)
        self._schedule_negotiation()

    def _free_feed(self, uptrack: Uptrack) -> tuple[RTCRtpTransceiver, SenderFeed] | None:
        """An idle transceiver that can carry ``uptrack``: same kind and same codec (a running
        sender keeps the payload type it started with)."""
        for transceiver, feed, codec in self._feeds:
            if (
                feed.downtrack is None
                and transceiver.kind == uptrack.kind
                and codec.mimeType.lower() == uptrack.codec.mimeType.lower()
                and codec.parameters == uptrack.codec.parameters
            ):
                return transceiver, feed
        return None

    def unsubscribe(self, uptrack: Uptrack) -> None:
        """Stop receiving ``uptrack``; its transceiver goes inactive in the next offer."""
        entry = self._downtracks.pop(uptrack.id, None)
        if entry is None or self.closed:
            return
        transceiver, downtrack = entry
        downtrack.detach()
        transceiver.direction = "inactive"
        self._schedule_negotiation()

    def _schedule_negotiation(self) -> None:
        if self._negotiation is not None and not self._negotiation.done():
            self._renegotiate = True
            return
        self._negotiation = asyncio.create_task(self._negotiate())

    async def _negotiate(self) -> None:
        await asyncio.sleep(0)  # let a burst of track changes land in one offer
        async with self._lock:
            pc = self.subscribe_pc
            if pc is None or self.closed:
                return
            if self._awaiting_answer:
                self._renegotiate = True
                return
            self._renegotiate = False
            try:
                bind_ports(pc, self.config.port_min, self.config.port_max, self.config.public_ip)
                offer = await pc.createOffer()
                await pc.setLocalDescription(offer)
            except Exception:
                log.exception("subscribe offer failed", extra={"participant": self.participant_id})
                self._send(Error(code=ErrorCode.MEDIA_FAILED, message="could not offer media"))
                return
            self._awaiting_answer = True
            self._send(Offer(pc="subscribe", sdp=pc.localDescription.sdp))

    # ---------------------------------------------------------------- lifetime

    def _new_pc(self, role: PeerRole) -> RTCPeerConnection:
        # max-bundle: every transceiver shares the first one's transport from the start, so a
        # renegotiation never gathers new candidates (aiortc's default, balanced, also leaves a
        # later transceiver on a transport that bundling then discards).
        pc = RTCPeerConnection(
            RTCConfiguration(
                iceServers=self.config.ice_servers(),
                bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
                iceTransportPolicy=(
                    RTCIceTransportPolicy.RELAY
                    if self.config.relay_only
                    else RTCIceTransportPolicy.ALL
                ),
            )
        )

        watchdog: asyncio.TimerHandle | None = None

        def fail(reason: str) -> None:
            if self.closed:
                return
            self._send(
                Error(
                    code=ErrorCode.MEDIA_FAILED,
                    message=f"the {role} media connection {reason}",
                )
            )
            self._on_failed()

        def not_connected_in_time() -> None:
            if pc.connectionState in ("new", "connecting"):
                log.info(
                    "media connection timed out",
                    extra={"participant": self.participant_id, "pc": role},
                )
                fail(f"did not connect within {self.config.connect_timeout:g} s (ICE or DTLS)")

        @pc.on("connectionstatechange")
        def on_state() -> None:
            nonlocal watchdog
            state = pc.connectionState
            log.info(
                "media connection state",
                extra={"participant": self.participant_id, "pc": role, "state": state},
            )
            if state in ("connected", "closed", "failed") and watchdog is not None:
                watchdog.cancel()
                watchdog = None
            if state == "failed":
                fail("failed (ICE or DTLS)")

        # aioice can keep checking for a long time (for ever, without remote candidates): a
        # connection that is not up in time is reported and released, never left "checking".
        watchdog = asyncio.get_running_loop().call_later(
            self.config.connect_timeout, not_connected_in_time
        )
        return pc

    async def close(self) -> None:
        """Stop publishing and subscribing, and close both connections (bounded in time)."""
        if self.closed:
            return
        self.closed = True
        if self._negotiation is not None:
            self._negotiation.cancel()
        for uptrack in self.uptracks:
            uptrack.close()
        for _, downtrack in self._downtracks.values():
            downtrack.detach()
        self._downtracks.clear()
        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is None:
                continue
            try:
                await asyncio.wait_for(pc.close(), CLOSE_TIMEOUT)
            except TimeoutError:
                log.warning(
                    "peer connection close timed out", extra={"participant": self.participant_id}
                )
        if self._negotiation is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._negotiation


def _capabilities_for(codec: RTCRtpCodecParameters) -> list[RTCRtpCodecCapability]:
    """Codec preferences that pin a subscriber leg to the publisher's ``codec`` (plus RTX for
    video, so lost packets are resent on their own stream)."""
    kind = codec.mimeType.split("/", 1)[0].lower()
    capabilities = RTCRtpSender.getCapabilities(kind).codecs
    chosen = [
        cap
        for cap in capabilities
        if cap.mimeType.lower() == codec.mimeType.lower() and cap.parameters == codec.parameters
    ][:1]
    if not chosen:
        raise MediaError(f"cannot forward {codec.mimeType} {codec.parameters}")
    rtx = [cap for cap in capabilities if cap.mimeType.lower() == "video/rtx"][:1]
    return chosen + (rtx if kind == "video" else [])
