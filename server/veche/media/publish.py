"""The publish leg of a participant's media: the connection its client offers, carrying the
participant's own tracks to the server.

Every offer is answered with one codec per section, chosen for the room by
:func:`~veche.media.codecs.choose_codec`. When someone joins who cannot decode what a section
sends, and the publisher offered a codec that would suit everyone, the leg asks the client for a
new offer (``renegotiate``) and answers it with that codec: the section's uptrack is replaced by
one in the new codec, on the same connection (nothing is torn down).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from veche.errors import MediaError
from veche.ids import ParticipantId
from veche.media.codecs import AUDIO_PREFERENCE, Decoders, choose_codec
from veche.media.counters import MediaCounters
from veche.media.internals import (
    accept_simulcast,
    negotiated_codecs,
    pin_codecs,
    receive_codec,
    request_keyframe,
    tap_receiver,
)
from veche.media.simulcast import OfferedLayers, answer_layers, offered_layers
from veche.media.tracks import Uptrack
from veche.protocol import Answer, Renegotiate, ServerMessage, Source

__all__ = ["PublishLeg"]

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class _Section:
    """One section (transceiver) of the publish connection."""

    offered: list[RTCRtpCodecParameters]
    """The codecs the client offered for it last, in its order (no RTX)."""
    source: Source | None
    uptrack: Uptrack | None = None


def same_codec(a: RTCRtpCodecParameters, b: RTCRtpCodecParameters) -> bool:
    """Whether two negotiated codecs are the same one (payload type included)."""
    return a.payloadType == b.payloadType and a.mimeType.lower() == b.mimeType.lower()


class PublishLeg:
    """The connection a participant publishes on, and its uptracks: at most ``max_tracks``
    sections carry one, the sections after them are answered inactive.

    ``audience()`` gives the decoders of everyone else in the room; ``on_publish`` and
    ``on_unpublish`` are called with each uptrack that starts and with each one replaced after
    a codec switch.
    """

    def __init__(
        self,
        participant_id: ParticipantId,
        *,
        video_codecs: tuple[str, ...],
        max_tracks: int,
        counters: MediaCounters,
        new_pc: Callable[[], RTCPeerConnection],
        bind: Callable[[RTCPeerConnection], None],
        send: Callable[[ServerMessage], None],
        audience: Callable[[], list[Decoders]],
        on_publish: Callable[[Uptrack], None],
        on_unpublish: Callable[[Uptrack], None],
        on_level: Callable[[int], None] | None,
    ) -> None:
        self.participant_id = participant_id
        self._video_codecs = video_codecs
        self._max_tracks = max_tracks
        self._counters = counters
        self._new_pc = new_pc
        self._bind = bind
        self._send = send
        self._audience = audience
        self._on_publish = on_publish
        self._on_unpublish = on_unpublish
        self._on_level = on_level
        self.pc: RTCPeerConnection | None = None
        self.uptracks: list[Uptrack] = []
        self._sections: dict[RTCRtpTransceiver, _Section] = {}
        self._layers: dict[str, OfferedLayers] = {}
        """Simulcast layers of video sections, by MID."""
        self._lock = asyncio.Lock()
        self._asked = False
        """A new offer was asked for and has not come yet."""
        self._requests: set[asyncio.Task[None]] = set()
        self.closed = False

    async def offer(self, sdp: str, sources: dict[str, Source]) -> None:
        """Apply the client's offer and answer it, one codec per section."""
        if not any(line.startswith(("m=audio", "m=video")) for line in sdp.splitlines()):
            raise MediaError("the publish offer has no audio or video section")
        async with self._lock:
            if self.closed:
                return
            pc = self.pc
            if pc is None:
                pc = self.pc = self._new_pc()
                pc.on("track", lambda track: self._tap(pc, track))
            layers = offered_layers(sdp)
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except Exception as exc:
                raise MediaError(f"the publish offer could not be applied: {exc}") from None
            self._asked = False
            layers = self._accept_layers(pc, layers)
            started, ended = self._choose_codecs(pc, sources)
            self._bind(pc)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
            self._send(
                Answer.from_server("publish", answer_layers(pc.localDescription.sdp, layers))
            )
        for uptrack in ended:
            self._on_unpublish(uptrack)
        for uptrack in started:
            self._on_publish(uptrack)

    def _accept_layers(
        self, pc: RTCPeerConnection, layers: dict[str, OfferedLayers]
    ) -> dict[str, OfferedLayers]:
        """Receive the simulcast layers offered for video sections; those accepted, by MID."""
        accepted: dict[str, OfferedLayers] = {}
        for transceiver in pc.getTransceivers():
            offered = layers.get(transceiver.mid or "")
            if offered is None or transceiver.kind != "video":
                continue
            accept_simulcast(transceiver, offered.extensions)
            accepted[transceiver.mid or ""] = offered
        self._layers.update(accepted)
        return accepted

    def _choose_codecs(
        self, pc: RTCPeerConnection, sources: dict[str, Source]
    ) -> tuple[list[Uptrack], list[Uptrack]]:
        """Pin every section to the codec the room needs (aiortc renegotiates every section's
        codecs on each offer); the uptracks started and those ended by a switch."""
        started: list[Uptrack] = []
        ended: list[Uptrack] = []
        audience = self._audience()
        for transceiver in pc.getTransceivers():
            if transceiver.receiver.track is None:
                continue
            offered = [c for c in negotiated_codecs(transceiver) if not is_rtx(c)]
            if not offered:
                continue
            section = self._sections.get(transceiver)
            if section is None and len(self._sections) >= self._max_tracks:
                # A client cannot remove sections, only add them: one that re-offers with
                # fresh ones would publish without bound. Beyond the limit a section is
                # answered inactive (the client keeps working) and nothing is received on it.
                transceiver.direction = "inactive"
                log.info(
                    "section refused: too many tracks",
                    extra={"participant": self.participant_id, "mid": transceiver.mid},
                )
                continue
            if section is None:
                source = sources.get(transceiver.mid or "")
                if source is not None and (source == "microphone") != (transceiver.kind == "audio"):
                    source = None  # a microphone must be audio, a camera or screen video
                section = self._sections[transceiver] = _Section(offered, source)
            section.offered = offered
            codec = offered[self._choose(transceiver.kind, offered, audience)]
            pin_codecs(transceiver, codec)
            current = section.uptrack
            if current is not None and same_codec(current.codec, codec):
                continue
            if current is not None:
                receive_codec(transceiver, codec)
                current.close()
                self.uptracks.remove(current)
                ended.append(current)
            section.uptrack = self._uptrack_for(transceiver, codec, section.source)
            if current is not None:
                # Same streams in another codec: a browser does not name a layer's stream
                # again (its rid) once the server has heard it.
                section.uptrack.inherit_streams(current)
            started.append(section.uptrack)
        return started, ended

    def _choose(
        self, kind: str, offered: list[RTCRtpCodecParameters], audience: list[Decoders]
    ) -> int:
        preference = self._video_codecs if kind == "video" else AUDIO_PREFERENCE
        return choose_codec([c.mimeType for c in offered], audience, preference)

    def ask_for_codec_all_can_decode(self, uptrack: Uptrack) -> bool:
        """Someone cannot decode ``uptrack``: if the client offered a codec that would suit the
        room better, ask it for a new offer (answered with that codec) and return True."""
        if self.closed or uptrack.closed:
            return False
        section = next((s for s in self._sections.values() if s.uptrack is uptrack), None)
        if section is None:
            return False
        best = section.offered[self._choose(uptrack.kind, section.offered, self._audience())]
        if same_codec(best, uptrack.codec):
            return False
        if not self._asked:
            self._asked = True
            log.info(
                "asking for another codec",
                extra={
                    "participant": self.participant_id,
                    "track": uptrack.id,
                    "codec": best.mimeType,
                },
            )
            self._send(Renegotiate())
        return True

    def _tap(self, pc: RTCPeerConnection, track: MediaStreamTrack) -> None:
        for transceiver in pc.getTransceivers():
            if transceiver.receiver.track is track:

                def sink(
                    packet: RtpPacket,
                    codec: RTCRtpCodecParameters,
                    *,
                    t: RTCRtpTransceiver = transceiver,
                ) -> None:
                    section = self._sections.get(t)
                    if section is not None and section.uptrack is not None:
                        section.uptrack.on_packet(packet, codec)

                def max_bitrate(*, t: RTCRtpTransceiver = transceiver) -> int | None:
                    section = self._sections.get(t)
                    uptrack = section.uptrack if section is not None else None
                    return uptrack.remb_cap() if uptrack is not None else None

                tap_receiver(
                    transceiver.receiver, sink, on_nack=self._count_nack, max_bitrate=max_bitrate
                )

    def _count_nack(self) -> None:
        self._counters.nacks_sent += 1

    def _uptrack_for(
        self, transceiver: RTCRtpTransceiver, codec: RTCRtpCodecParameters, source: Source | None
    ) -> Uptrack:
        receiver = transceiver.receiver
        layers = self._layers.get(transceiver.mid or "")

        def ask_keyframe(ssrc: int) -> None:
            task = asyncio.ensure_future(request_keyframe(receiver, ssrc))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)

        uptrack = Uptrack(
            self.participant_id,
            transceiver.kind,
            codec,
            ask_keyframe,
            source=source,
            on_level=self._on_level if transceiver.kind == "audio" else None,
            counters=self._counters,
            rids=layers.rids if layers is not None else (),
        )
        self.uptracks.append(uptrack)
        log.info(
            "track published",
            extra={
                "participant": self.participant_id,
                "track": uptrack.id,
                "codec": codec.name,
                "layers": [layer.rid for layer in uptrack.layers if layer.rid],
            },
        )
        return uptrack

    def stop(self) -> None:
        """Stop every uptrack (the connection is closed by the peer)."""
        self.closed = True
        for uptrack in self.uptracks:
            uptrack.close()
