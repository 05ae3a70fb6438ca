"""The subscribe leg of a participant's media: the connection the server offers, carrying
everyone else's tracks to the participant.

Each simulcast video is sent at one layer: the lowest of three, taken in one place
(:meth:`SubscribeLeg._layer_for`): the layer for the size the participant shows it at, the layer
its own bandwidth allows (:mod:`~veche.media.bandwidth`, from the feedback its browser sends
on this connection) and a server-wide :attr:`SubscribeLeg.ceiling`.

It is renegotiated whenever tracks come or go; changes that arrive while an offer is
outstanding are folded into one new offer after the answer, and offers are spaced out by the
square of their size (:func:`offer_gap`): a renegotiation costs the server (and the client)
about a quarter of a millisecond of CPU per section, and a room of N members has N subscribe
connections of about 2N sections each, so offered one by one a burst of joins to a 50-person
room cost the event loop over a second per join. Spaced so, a room's renegotiations take at
most about 15% of a core however large it is, and a newcomer reaches the others in well under
a second in a small room, within about 8 s in a 50-person one.

A section the client declines (it cannot decode the codec) is left inactive and the participant
is told, while every other section keeps flowing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Final

from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters

from veche.errors import ErrorCode, MediaError
from veche.ids import ParticipantId
from veche.media.allocator import ViewerBandwidth
from veche.media.codecs import Decoders
from veche.media.internals import (
    accept_declined_sections,
    feed_sender,
    set_stream_id,
    watch_feedback,
)
from veche.media.simulcast import layer_for_width
from veche.media.tracks import Downtrack, SenderFeed, Uptrack
from veche.protocol import Offer, ServerMessage, TrackUnavailable
from veche.tasks import cancel_and_wait

__all__ = ["ShownVideos", "SubscribeLeg", "offer_gap"]

log = logging.getLogger(__name__)

OFFER_GAP_FACTOR: Final = 0.0008
"""Seconds between two subscribe offers, times the square of the last one's sections."""
OFFER_GAP_MAX: Final = 10.0
"""The longest wait between two subscribe offers."""


def offer_gap(sections: int) -> float:
    """Seconds a subscribe connection of ``sections`` media sections waits after an offer
    before the next one: 3 ms for 2, 0.2 s for 16, 3 s for 62, 7.7 s for 98 (a 50-person
    room's)."""
    return min(OFFER_GAP_MAX, OFFER_GAP_FACTOR * sections * sections)


class _ForwardedTrack(MediaStreamTrack):
    """Stands in for a forwarded track on a subscriber's sender; never read (the sender is fed
    by a downtrack), its id names the track in the subscriber's SDP."""

    def __init__(self, kind: str, track_id: str) -> None:
        super().__init__()
        self.kind = kind
        self._id = track_id

    async def recv(self) -> None:  # type: ignore[override]
        raise RuntimeError("forwarded tracks are fed, not read")


ShownVideos = Mapping[tuple[str, str], tuple[int, int]]
"""The videos a subscriber shows, ``(owner, source)`` to the size it shows them at (CSS
pixels); ``None`` in its place means every video."""


class SubscribeLeg:
    """The connection a participant receives everyone else's tracks on.

    ``decoders`` is what the participant can decode (updated when it declines a section);
    ``on_refused`` is called with an uptrack it turned down, so the publisher may be asked for
    another codec; ``on_failed(reason)`` when the connection can no longer be offered on (it
    closed, or an offer failed): the leg is to be renewed; ``ceiling(uptrack)`` is the highest
    simulcast layer the server's load governor allows for ``uptrack`` now (``None``: any).
    """

    def __init__(
        self,
        participant_id: ParticipantId,
        decoders: Decoders,
        *,
        new_pc: Callable[[], RTCPeerConnection],
        bind: Callable[[RTCPeerConnection], None],
        send: Callable[[ServerMessage], None],
        on_refused: Callable[[Uptrack], None],
        on_failed: Callable[[str], None] = lambda reason: None,
        clock: Callable[[], float] = time.monotonic,
        ceiling: Callable[[Uptrack], int | None] = lambda uptrack: None,
    ) -> None:
        self.participant_id = participant_id
        self.decoders = decoders
        self._new_pc = new_pc
        self._bind = bind
        self._send = send
        self._on_refused = on_refused
        self._on_failed = on_failed
        self.pc: RTCPeerConnection | None = None
        self._downtracks: dict[str, tuple[RTCRtpTransceiver, Downtrack]] = {}
        self._feeds: list[tuple[RTCRtpTransceiver, SenderFeed, RTCRtpCodecParameters]] = []
        self._awaiting_answer = False
        """An offer is out: a change waits for its answer to be offered."""
        self._answerable = False
        """The last offer may still be answered (also after an answer to it was refused: that
        one may have been meant for an earlier offer, or a connection renewed since)."""
        self._offered = ""
        """The outstanding offer's SDP (aiortc writes its local description anew each time it
        is read: a long one costs milliseconds)."""
        self._next_offer = 0.0
        """When the next offer may be sent (``clock`` time)."""
        self._clock = clock
        self._renegotiate = False
        self._negotiation: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._shown: ShownVideos | None = None
        self.bandwidth = ViewerBandwidth(
            participant_id,
            sent=self._sent,
            wanted=lambda uptrack: min(self._layer_for_size(uptrack), self.ceiling(uptrack)),
            area=self._shown_area,
            move=lambda at_once: self.update_layers(at_once=at_once),
            clock=clock,
        )
        self.budget = self.bandwidth.budget
        """What this participant's link carries, from its feedback."""
        self.ceiling: Callable[[Uptrack], int] = lambda uptrack: _highest(uptrack, ceiling(uptrack))
        """The highest layer the server sends anyone of a track now (the load governor's say);
        call :meth:`update_layers` after it changes."""
        self.closed = False

    def can_receive(self, uptrack: Uptrack) -> bool:
        """Whether this participant can decode ``uptrack``'s codec."""
        return self.decoders.can_decode(uptrack.codec.mimeType)

    # ---------------------------------------------------------------- tracks

    def subscribe(self, uptrack: Uptrack) -> None:
        """Start receiving ``uptrack`` (another participant's track)."""
        if self.closed or uptrack.id in self._downtracks or uptrack.closed:
            return
        pc = self.pc
        if pc is None:
            pc = self.pc = self._new_pc()
        if self._closed_under_the_leg(pc):
            return  # renewed with this track among the others; the publisher hears nothing
        reusable = self._free_feed(uptrack)
        if reusable is None:
            transceiver = pc.addTransceiver(uptrack.kind, direction="sendonly")
            transceiver.setCodecPreferences(_capabilities_for(uptrack.codec))
            feed = SenderFeed(uptrack.kind)
            feed_sender(transceiver.sender, feed.ready, feed.keyframe_requested)
            watch_feedback(transceiver.sender, self.bandwidth.on_estimate, self.bandwidth.on_report)
            self._feeds.append((transceiver, feed, uptrack.codec))
        else:
            transceiver, feed = reusable
            transceiver.direction = "sendonly"
        set_stream_id(transceiver.sender, uptrack.stream_id)
        transceiver.sender.replaceTrack(_ForwardedTrack(uptrack.kind, uptrack.id))
        downtrack = Downtrack(uptrack, self.participant_id, feed, layer=self._layer_for(uptrack))
        downtrack.set_paused(not self._shows(uptrack))
        self._downtracks[uptrack.id] = (transceiver, downtrack)
        if self.budget.limit is not None:
            self.update_layers()
        self._schedule_negotiation()

    def set_view(self, shown: ShownVideos | None) -> None:
        """Forward only the videos in ``shown`` (``None``: all); audio is always forwarded.
        A video shown again starts at a keyframe; one hidden stops at once. Nothing is
        renegotiated: a hidden video's sender just falls silent."""
        self._shown = shown
        self.bandwidth.share()
        for _, downtrack in self._downtracks.values():
            downtrack.want_layer(self._layer_for(downtrack.uptrack))
            downtrack.set_paused(not self._shows(downtrack.uptrack))

    def set_speaker(self, participant: str | None) -> None:
        """The room's active speaker is ``participant`` now: its camera comes first after a
        shared screen when the budget does not fit everything."""
        self.bandwidth.speaker = participant
        if self.budget.limit is not None:
            self.update_layers()

    def update_layers(self, *, at_once: bool = False) -> None:
        """Share the bandwidth out again and move each video to the layer that follows (at
        its next keyframe; ``at_once``: a video moved down stops its current layer now, as the
        link is full)."""
        if self.closed:
            return
        self.bandwidth.share()
        for _, downtrack in self._downtracks.values():
            downtrack.want_layer(self._layer_for(downtrack.uptrack), at_once=at_once)

    def _layer_for(self, uptrack: Uptrack) -> int:
        """The simulcast layer to send of ``uptrack``: the lowest of the one for the size this
        subscriber shows it at, the one its bandwidth allows and the server's ceiling."""
        return min(
            self._layer_for_size(uptrack),
            self.bandwidth.allowed(uptrack),
            self.ceiling(uptrack),
        )

    def _layer_for_size(self, uptrack: Uptrack) -> int:
        """The simulcast layer that suits the size this subscriber shows ``uptrack`` at."""
        size = self._shown_size(uptrack)
        return layer_for_width(size[0] if size is not None else None, len(uptrack.layers))

    def _shown_size(self, uptrack: Uptrack) -> tuple[int, int] | None:
        return None if self._shown is None else self._shown.get((uptrack.owner, uptrack.source))

    def _shown_area(self, uptrack: Uptrack) -> int:
        size = self._shown_size(uptrack)
        return size[0] * size[1] if size is not None else 0

    def _sent(self) -> list[Downtrack]:
        return [d for _, d in self._downtracks.values() if not d.paused and d.uptrack.audible]

    def _shows(self, uptrack: Uptrack) -> bool:
        if uptrack.kind != "video" or self._shown is None:
            return True
        return (uptrack.owner, uptrack.source) in self._shown

    @property
    def layers(self) -> list[dict[str, str | int | None]]:
        """The simulcast videos this subscriber is sent: whose, which source, the layer (its
        rid, ``None`` before the first frame), that layer's picture width if known and its
        measured bitrate (bits per second)."""
        found: list[dict[str, str | int | None]] = []
        for _, downtrack in self._downtracks.values():
            uptrack = downtrack.uptrack
            if not uptrack.simulcast:
                continue
            layer = uptrack.layers[downtrack.layer] if downtrack.layer is not None else None
            found.append(
                {
                    "from": uptrack.owner,
                    "source": uptrack.source,
                    "layer": layer.rid if layer is not None else None,
                    "width": layer.width if layer is not None else None,
                    "bitrate": round(layer.bitrate) if layer is not None else None,
                }
            )
        return found

    @property
    def receiving(self) -> dict[str, int]:
        """Tracks this subscriber is sent now, by kind, and frames sent to it in all."""
        counts = {"audio": 0, "video": 0, "frames": 0}
        for _, downtrack in self._downtracks.values():
            counts["frames"] += downtrack.frames_sent
            if not downtrack.paused and downtrack.uptrack.audible:
                counts[downtrack.uptrack.kind] += 1
        return counts

    def _free_feed(self, uptrack: Uptrack) -> tuple[RTCRtpTransceiver, SenderFeed] | None:
        """An idle transceiver that can carry ``uptrack``: same kind and same codec (a running
        sender keeps the payload type it started with), and not kept for a track that is to
        be handed over to its successor (see :meth:`hand_over`)."""
        kept = {id(carrier) for carrier, _ in self._downtracks.values()}
        for transceiver, feed, codec in self._feeds:
            if (
                feed.downtrack is None
                and id(transceiver) not in kept
                and transceiver.kind == uptrack.kind
                and codec.mimeType.lower() == uptrack.codec.mimeType.lower()
                and codec.parameters == uptrack.codec.parameters
            ):
                return transceiver, feed
        return None

    def hand_over(self, old: Uptrack, new: Uptrack) -> bool:
        """Let ``new`` (its publisher's track published again on a renewed connection) take
        over the sender that carried ``old``, with no renegotiation: the same stream id, kind
        and codec, numbered on from where ``old`` stopped, starting at a keyframe. False (and
        nothing changed) if this leg did not receive ``old`` or cannot carry ``new`` on its
        sender."""
        entry = self._downtracks.get(old.id)
        if self.closed or entry is None or new.closed or new.id in self._downtracks:
            return False
        transceiver, downtrack = entry
        codec = next((c for t, _, c in self._feeds if t is transceiver), None)
        if (
            codec is None
            or new.kind != old.kind
            or new.stream_id != old.stream_id
            or codec.mimeType.lower() != new.codec.mimeType.lower()
            or codec.parameters != new.codec.parameters
        ):
            return False
        del self._downtracks[old.id]
        feed = downtrack.feed
        downtrack.detach()
        successor = Downtrack(new, self.participant_id, feed, layer=self._layer_for(new))
        successor.set_paused(not self._shows(new))
        self._downtracks[new.id] = (transceiver, successor)
        if self.budget.limit is not None:
            self.update_layers()
        return True

    def unsubscribe(self, uptrack: Uptrack) -> None:
        """Stop receiving ``uptrack``; its transceiver goes inactive in the next offer."""
        entry = self._downtracks.pop(uptrack.id, None)
        if entry is None or self.closed:
            return
        transceiver, downtrack = entry
        downtrack.detach()
        transceiver.direction = "inactive"
        self._schedule_negotiation()

    # ---------------------------------------------------------------- negotiation

    async def answer(self, sdp: str) -> None:
        """Apply the client's answer to the last subscribe offer."""
        async with self._lock:
            pc = self.pc
            if pc is None or not self._answerable:
                raise MediaError(
                    "no subscribe offer is waiting for an answer", code=ErrorCode.WRONG_STATE
                )
            failed: str | None = None
            declined: list[str] = []
            try:
                sdp, declined = accept_declined_sections(sdp, self._offered)
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            except Exception as exc:
                failed = str(exc)
            self._awaiting_answer = False
            refused: list[Uptrack] = []
            if failed is None:
                self._answerable = False
                refused = [u for mid in declined if (u := self._declined(mid)) is not None]
        for uptrack in refused:
            self._on_refused(uptrack)
        if self._renegotiate:
            self._renegotiate = False
            self._schedule_negotiation()
        if failed is not None:
            # The offer may still be answered; a change, pending or to come, offers again.
            raise MediaError(f"the subscribe answer could not be applied: {failed}")

    def _declined(self, mid: str) -> Uptrack | None:
        """The client declined section ``mid``: its transceiver is retired (never reused) and
        the track it carried, if any, is no longer forwarded; that track."""
        for index, (transceiver, _feed, _codec) in enumerate(self._feeds):
            if transceiver.mid == mid:
                del self._feeds[index]
                break
        else:
            return None
        transceiver.direction = "inactive"
        for track_id, (carrier, downtrack) in list(self._downtracks.items()):
            if carrier is transceiver:
                del self._downtracks[track_id]
                downtrack.detach()
                uptrack = downtrack.uptrack
                self.decoders = self.decoders.refusing(uptrack.codec.mimeType)
                log.info(
                    "section declined",
                    extra={
                        "participant": self.participant_id,
                        "track": uptrack.id,
                        "codec": uptrack.codec.mimeType,
                    },
                )
                return uptrack
        return None

    def unavailable(self, uptrack: Uptrack) -> None:
        """Tell the participant that ``uptrack`` cannot reach it (its codec does not play)."""
        self._send(
            TrackUnavailable(
                participant_id=uptrack.owner, source=uptrack.source, codec=uptrack.codec.mimeType
            )
        )

    def _schedule_negotiation(self) -> None:
        if self._negotiation is not None and not self._negotiation.done():
            self._renegotiate = True
            return
        self._negotiation = asyncio.create_task(self._negotiate())

    async def _negotiate(self) -> None:
        await asyncio.sleep(0)  # let a burst of track changes land in one offer
        wait = self._next_offer - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)  # and the changes of the last while too
        async with self._lock:
            pc = self.pc
            if pc is None or self.closed:
                return
            if self._awaiting_answer:
                self._renegotiate = True
                return
            self._renegotiate = False
            try:
                self._bind(pc)
                offer = await pc.createOffer()
                await pc.setLocalDescription(offer)
                self._offered = pc.localDescription.sdp
                self._send(Offer.from_server("subscribe", self._offered))
            except Exception:
                # The connection is renewed, and offered afresh with every track.
                if self._closed_under_the_leg(pc):
                    return  # not a failure of the offer: nothing to log
                log.exception("subscribe offer failed", extra={"participant": self.participant_id})
                self._on_failed("the subscribe media connection could not be offered")
                return
            self._awaiting_answer = self._answerable = True
            self._next_offer = self._clock() + offer_gap(len(pc.getTransceivers()))

    def _closed_under_the_leg(self, pc: RTCPeerConnection) -> bool:
        """Whether ``pc`` was closed under the leg (aiortc closes a connection whose DTLS
        closed: its client left, or the link broke), even while an offer was being made; if so
        the leg is to be renewed (``on_failed``)."""
        if pc.signalingState != "closed":
            return False
        self._on_failed("the subscribe media connection closed")
        return True

    async def drop_offer(self) -> None:
        """The client's answer to the outstanding offer was refused: stop holding changes back
        for it (an answer to it is still taken), and offer again at once if tracks changed
        meanwhile (else at the next change)."""
        async with self._lock:
            if not self._awaiting_answer:
                return
            self._awaiting_answer = False
        if self._renegotiate:
            self._renegotiate = False
            self._schedule_negotiation()

    # ---------------------------------------------------------------- lifetime

    def stop(self) -> None:
        """Stop forwarding to this participant and any negotiation under way (the connection
        is closed by the peer)."""
        self.closed = True
        if self._negotiation is not None:
            self._negotiation.cancel()
        for _, downtrack in self._downtracks.values():
            downtrack.detach()
        self._downtracks.clear()

    async def settled(self) -> None:
        """Wait for a cancelled negotiation to finish."""
        await cancel_and_wait(self._negotiation)


def _highest(uptrack: Uptrack, ceiling: int | None) -> int:
    """The highest of ``uptrack``'s layers under ``ceiling`` (``None``: its top layer)."""
    top = len(uptrack.layers) - 1
    return top if ceiling is None else min(top, ceiling)


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
