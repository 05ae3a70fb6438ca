"""Published tracks (uptracks) and their per-subscriber copies (downtracks).

An :class:`Uptrack` turns a publisher's RTP packets into whole frames and hands each frame to
every :class:`Downtrack`; a downtrack passes them to the :class:`SenderFeed` of one subscriber's
RTP sender, which sends them as they are. Nothing is decoded or encoded. A new or recovering
video downtrack holds back everything until a keyframe and asks the publisher for one;
keyframe requests to a publisher are rate-limited but never lost (a request inside the quiet
interval is sent when it ends). Of a video in temporal layers a downtrack may be sent only the
lower ones (:mod:`veche.media.temporal`): fewer frames a second, no keyframe needed.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from veche.ids import ParticipantId
from veche.media.assembler import AssembledFrame, FrameAssembler, Packet
from veche.media.counters import MediaCounters
from veche.media.payloads import Vp8Temporal, vp8_picture_ids, vp8_temporal, vp8_width
from veche.media.rewriter import PictureIdRewriter, StreamRewriter
from veche.media.temporal import TemporalFilter
from veche.protocol import Source

__all__ = ["Downtrack", "FrameWriter", "Layer", "SenderFeed", "TrackStats", "Uptrack"]

log = logging.getLogger(__name__)

KEYFRAME_INTERVAL: Final = 0.3
"""Least seconds between two keyframe requests to one publisher track."""

MAX_PICTURE_GAP: Final = 1000
"""VP8 picture ids missing between two frames of a stream above which the publisher is taken
to have started a new run of ids rather than to have lost frames."""

RTP_OVERHEAD: Final = 12 + 8 + 20 + 10
"""Bytes a forwarded packet adds to its payload on the wire: RTP, UDP and IPv4 headers and the
SRTP tag (header extensions not counted)."""

_track_numbers = itertools.count(1)


class FrameWriter(Protocol):
    """Sends one frame's RTP payloads on a subscriber's connection
    (:class:`~veche.media.internals.PacketWriter`; a fake in tests)."""

    def write_frame(
        self, payloads: list[bytes], sequence: int, timestamp: int, audio_level: int | None
    ) -> None: ...

    def forget(self) -> None:
        """Resend nothing written so far when the subscriber reports it lost."""


class Scheduler(Protocol):
    """``loop.call_later``, or a fake clock's in tests."""

    def __call__(self, delay: float, callback: Callable[[], None], /) -> asyncio.TimerHandle: ...


@dataclass(slots=True)
class TrackStats:
    """Counters of one uptrack, for benchmarks, metrics and tests."""

    packets_in: int = 0
    frames_in: int = 0
    frames_dropped: int = 0
    frames_forwarded: int = 0
    keyframe_requests: int = 0
    frames_thinned: int = 0
    """Frames of a temporal layer above what a viewer was to be sent, left out (per viewer)."""


RATE_WINDOW: Final = 0.5
"""Seconds over which a layer's arriving bits are counted before they update its bitrate."""


SIMULCAST_LAYER_REMB: Final = (250_000, 800_000)
"""Bits per second a simulcast publisher is told it may send when viewers want at most its
lowest layer, its middle one: what the browser client asks of those layers (150 and 500 kbps)
and the microphone, below what the next layer up would need."""


@dataclass(slots=True, eq=False)
class Layer:
    """One RTP stream of an uptrack: the only one, or one simulcast layer (``rid``)."""

    rid: str | None
    assembler: FrameAssembler
    ssrc: int | None = None
    last_packet: float = -1.0
    last_request: float = -KEYFRAME_INTERVAL
    pending_request: asyncio.TimerHandle | None = None
    width: int | None = None
    """Picture width of its last keyframe (VP8), for the admin API and tests."""
    bitrate: float = 0.0
    """Bits per second of its whole frames (RTP payloads and headers: what a viewer is sent of
    it; a publisher's padding and the retransmissions it probes its bandwidth with are left
    out), smoothed over a few seconds; 0 until measured. A viewer's bandwidth is shared out
    by it (see ``bandwidth``)."""
    window_start: float = -1.0
    window_bytes: int = 0
    picture: int | None = None
    """The VP8 picture id of its last whole frame, and below its TL0PICIDX (temporal layers
    only): a frame lost on the way in shows as a gap in them (see :meth:`Uptrack._after`)."""
    tl0: int | None = None

    def count(self, size: int, now: float) -> None:
        """Note a frame of ``size`` bytes arriving at ``now``; every ``RATE_WINDOW`` seconds
        the window's rate is folded into :attr:`bitrate` (keyframes make single windows
        uneven)."""
        if self.window_start < 0 or now - self.window_start > 4 * RATE_WINDOW:
            self.window_start, self.window_bytes = now, size  # first frame, or after a pause
            return
        self.window_bytes += size
        elapsed = now - self.window_start
        if elapsed >= RATE_WINDOW:
            rate = self.window_bytes * 8 / elapsed
            self.bitrate = rate if self.bitrate == 0 else self.bitrate + 0.3 * (rate - self.bitrate)
            self.window_start, self.window_bytes = now, 0


LAYER_TIMEOUT: Final = 1.0
"""Seconds without a packet after which a simulcast layer counts as stopped (a browser stops its
higher layers when bandwidth or CPU run short)."""


class Uptrack:
    """One track a participant publishes: ``kind`` is ``audio`` or ``video``.

    ``ask_keyframe(ssrc)`` sends the publisher a keyframe request (a PLI) for the stream
    ``ssrc``; ``clock`` and ``schedule`` (``loop.call_later`` by default) time the requests.
    ``rids`` names a simulcast publisher's layers from the lowest up; each is assembled on its
    own and each downtrack is sent one of them (see :meth:`Downtrack.want_layer`).
    """

    def __init__(
        self,
        owner: ParticipantId,
        kind: str,
        codec: RTCRtpCodecParameters,
        ask_keyframe: Callable[[int], None],
        *,
        source: Source | None = None,
        clock: Callable[[], float] = time.monotonic,
        schedule: Scheduler | None = None,
        on_level: Callable[[int], None] | None = None,
        counters: MediaCounters | None = None,
        rids: tuple[str, ...] = (),
    ) -> None:
        self.owner = owner
        self.kind = kind
        self.codec = codec
        self.source: Source = source or ("microphone" if kind == "audio" else "camera")
        self.id = f"{owner}-{self.source}-{next(_track_numbers)}"
        self.enabled = True
        self.audible = True
        """Among the microphones a large room forwards (see ``max_audio_streams``); a
        microphone left out still reaches a recording."""
        self.max_bitrate: int | None = None
        """Bits per second the load governor lets a single-layer publisher send (told it by
        REMB); ``None``: what its link allows."""
        self.governed = False
        """The load governor is engaged: a simulcast publisher is told (REMB) to send only the
        layers somebody is sent (see :meth:`remb_cap`)."""
        self._keyframes_only = False
        self.max_temporal: int | None = None
        """The highest temporal layer (TID) the load governor lets viewers be sent of a video
        encoded in temporal layers; ``None``: all (see :mod:`veche.media.temporal`)."""
        self.temporal_layers = False
        """Whether the publisher encodes this video in temporal layers (its VP8 frames carry a
        TID): then the governor thins it by frame rate, never to keyframes only."""
        self._on_level = on_level
        self.stats = TrackStats()
        self._counters = counters or MediaCounters()
        self.sinks: list[Callable[[AssembledFrame], None]] = []
        """Also given every forwarded frame (a recording)."""
        self.taps: list[Callable[[RtpPacket, int], None]] = []
        """Also given every packet of an enabled track as it arrives, with its layer's index
        (a pipe to another process: see :mod:`veche.media.pipe`)."""
        self.downtracks: set[Downtrack] = set()
        self._ask_keyframe = ask_keyframe
        self._clock = clock
        self._schedule = schedule
        video = kind == "video"
        self.layers: list[Layer] = [
            Layer(rid, FrameAssembler(codec.name, video=video, clock=clock))
            for rid in (rids if len(rids) > 1 and video else (None,))
        ]
        self._by_ssrc: dict[int, Layer] = {}
        self._active: tuple[int, ...] = tuple(range(len(self.layers)))
        self._checked = clock()  # every layer counts as flowing until its first check
        self._recorded = 0 if len(self.layers) == 1 else -1
        self.closed = False

    def remb_cap(self) -> int | None:
        """The most this track's publisher is to be told (REMB) it may send, ``None``: no cap.
        A single-layer track: :attr:`max_bitrate`. A simulcast one while :attr:`governed`:
        enough for the highest layer a viewer wants, not for the layers above it, so that the
        browser stops encoding them and the overloaded server stops receiving them (without
        a governor every layer is kept flowing, for a viewer to switch up to at once)."""
        if not self.simulcast:
            return self.max_bitrate
        if not self.governed or self.taps:
            return None  # a pipe to another process may want any layer
        wanted = max((d.wanted for d in self.downtracks if not d.paused), default=0)
        if self.sinks:  # a recording keeps the layer it took (any, before it took one)
            wanted = max(wanted, self._recorded if self._recorded >= 0 else len(self.layers))
        if wanted >= len(SIMULCAST_LAYER_REMB):
            return None
        return SIMULCAST_LAYER_REMB[wanted]

    @property
    def stream_id(self) -> str:
        """The stream id subscribers see: the owner's participant id, with ``~screen`` for a
        shared screen."""
        return f"{self.owner}~screen" if self.source == "screen" else self.owner

    @property
    def simulcast(self) -> bool:
        """Whether the publisher sends this track in several layers."""
        return len(self.layers) > 1

    def _layer_of(self, packet: RtpPacket) -> Layer | None:
        if len(self.layers) == 1:
            return self.layers[0]
        layer = self._by_ssrc.get(packet.ssrc)
        if layer is None:
            rid = packet.extensions.rtp_stream_id
            layer = next((x for x in self.layers if x.rid == rid), None)
            if layer is None:
                return None  # not yet told which layer this stream is
            if layer.ssrc is not None:
                self._by_ssrc.pop(layer.ssrc, None)
            layer.ssrc = packet.ssrc
            self._by_ssrc[packet.ssrc] = layer
        return layer

    def inherit_streams(self, previous: Uptrack) -> None:
        """Know the streams (SSRCs) of ``previous``'s layers, by rid: this track replaces it on
        the same connection (a codec switch), and the publisher keeps its streams."""
        for layer in self.layers:
            old = next((x for x in previous.layers if x.rid == layer.rid), None)
            if old is not None and old.ssrc is not None:
                layer.ssrc = old.ssrc
                self._by_ssrc[old.ssrc] = layer

    def assign_stream(self, index: int, ssrc: int) -> None:
        """Know layer ``index``'s stream by its SSRC before its first packet (a piped track's
        streams are named by the pipe, not by RTP stream id extensions)."""
        layer = self.layers[index]
        if layer.ssrc is not None:
            self._by_ssrc.pop(layer.ssrc, None)
        layer.ssrc = ssrc
        self._by_ssrc[ssrc] = layer

    def best_layer(self, wanted: int) -> int:
        """The layer to send a viewer who wants layer ``wanted``: the highest flowing one not
        above it, else the lowest flowing one (or ``wanted`` if none flows)."""
        active = self._active
        below = [i for i in active if i <= wanted]
        if below:
            return below[-1]
        return active[0] if active else min(wanted, len(self.layers) - 1)

    def _check_layers(self, now: float) -> None:
        """Note which layers flow; retarget downtracks when that changed."""
        self._checked = now
        active = tuple(i for i, x in enumerate(self.layers) if now - x.last_packet < LAYER_TIMEOUT)
        if active != self._active:
            self._active = active
            log.info(
                "simulcast layers",
                extra={"track": self.id, "active": [self.layers[i].rid for i in active]},
            )
            for downtrack in self.downtracks:
                downtrack.want_layer(downtrack.wanted)

    def set_enabled(self, enabled: bool) -> None:
        """Forward or hold back this track (a muted microphone, a camera turned off, a screen
        not being shared). A video track turned back on restarts from a keyframe."""
        if enabled == self.enabled:
            return
        self.enabled = enabled
        if enabled and self.kind == "video":
            for downtrack in self.downtracks:
                downtrack.hold_until_keyframe()
            for index in range(len(self.layers)):
                self.request_keyframe(index)

    @property
    def keyframes_only(self) -> bool:
        """Whether only keyframes are forwarded now: the load governor's last resort for a
        single-layer video without temporal layers (see :meth:`set_keyframes_only`)."""
        return self._keyframes_only and not self.temporal_layers

    def set_keyframes_only(self, keyframes_only: bool) -> None:
        """Forward only keyframes (a few a second, each one decodable on its own: VP8 without
        temporal layers cannot skip a delta frame without breaking the frames after it), or
        every frame again from the next keyframe, asked for at once (a delta frame refers to
        frames the viewers did not get). A video in temporal layers is never cut to keyframes:
        :attr:`max_temporal` thins it, and every frame it sends still decodes."""
        if keyframes_only == self._keyframes_only or self.kind != "video":
            return
        was = self.keyframes_only
        self._keyframes_only = keyframes_only
        if was != self.keyframes_only:
            self._resume_all_frames(was)

    def _resume_all_frames(self, was_keyframes_only: bool) -> None:
        """Keyframes only began or ended: ask for a keyframe (to send, or to start again from:
        a delta frame refers to frames the viewers did not get)."""
        if was_keyframes_only:
            for downtrack in self.downtracks:
                downtrack.hold_until_keyframe()
        self.request_keyframe()

    def on_packet(self, packet: RtpPacket, codec: RTCRtpCodecParameters) -> None:
        """Receive one RTP packet from the publisher (the receiver tap calls this)."""
        if codec.payloadType != self.codec.payloadType or self.closed:
            return
        layer = self._layer_of(packet)
        if layer is None:
            return
        self.stats.packets_in += 1
        arrived = self._clock()
        layer.ssrc = packet.ssrc
        layer.last_packet = arrived
        index = 0
        if len(self.layers) > 1:
            index = self.layers.index(layer)
            if arrived - self._checked >= LAYER_TIMEOUT / 2:
                self._check_layers(arrived)
        if self.taps and self.enabled:
            for tap in self.taps:
                tap(packet, index)
        level = packet.extensions.audio_level
        if level is not None and self._on_level is not None and self.enabled:
            self._on_level(level[1])
        frames, lost = layer.assembler.push(
            Packet(
                packet.sequence_number,
                packet.timestamp,
                bool(packet.marker),
                packet.payload,
                level[1] if level is not None else None,
            )
        )
        if lost and self.kind == "video":
            self.stats.frames_dropped += 1
            if not self.temporal_layers:
                self._lost_base(index)
            # In temporal layers the next whole frame tells which layers lost frames.
        for frame in frames:
            self.stats.frames_in += 1
            size = sum(map(len, frame.payloads)) + RTP_OVERHEAD * len(frame.payloads)
            layer.count(size, arrived)
            temporal = self._temporal(frame)
            if frame.keyframe and self.kind == "video":
                layer.width = vp8_width(self.codec.name, frame.payloads[0]) or layer.width
            if temporal is not None:
                self._after(layer, index, frame, temporal)
            if not self.enabled:
                continue
            sent = 0
            if temporal is not None and not self.temporal_layers:
                # The first frame with a TID: thinned by frame rate from now on (a keyframe
                # starts every frame again by itself).
                was = self.keyframes_only
                self.temporal_layers = True
                if was and not frame.keyframe:
                    self._resume_all_frames(was)
            if self.keyframes_only and not frame.keyframe:
                # Coalesced and rate-limited: one request per KEYFRAME_INTERVAL at most.
                self.request_keyframe(index)
            elif self.audible:
                for downtrack in self.downtracks:
                    sent += downtrack.push(frame, index, temporal)
            if self.sinks and self._recorded_layer(index, frame):
                for sink in self.sinks:
                    sink(frame)
            if sent:
                counters = self._counters
                counters.packets_forwarded += sent * len(frame.payloads)
                counters.bytes_forwarded += sent * sum(map(len, frame.payloads))
                counters.forwarding_delay.observe(self._clock() - arrived)

    def _lost_base(self, index: int) -> None:
        """Frames of layer ``index`` that later ones refer to were lost: its viewers wait for
        a keyframe, asked for now."""
        for downtrack in self.downtracks:
            if downtrack.layer == index:
                downtrack.hold_until_keyframe()
        self.request_keyframe(index)

    def _after(
        self, layer: Layer, index: int, frame: AssembledFrame, temporal: Vp8Temporal
    ) -> None:
        """Follow the picture ids of a layer in temporal layers: frames missing between the
        last one and ``frame`` were lost. If none of them was a base layer frame (TL0PICIDX,
        which counts those, did not skip one), the viewers keep the base layer and take the
        layers above up again at their next sync frames, without a keyframe: under a load
        that drops packets at random most frames lost are of the upper layers, and a keyframe
        request for each would snowball. Otherwise they wait for a keyframe."""
        picture, _ = vp8_picture_ids(frame.payloads[0])
        last_picture, last_tl0 = layer.picture, layer.tl0
        layer.picture, layer.tl0 = picture, temporal.tl0
        if frame.keyframe or picture is None or last_picture is None:
            return
        missing = (picture - last_picture - 1) & 0x7FFF
        if missing == 0 or missing > MAX_PICTURE_GAP:
            return  # in order, or another run of ids (the publisher started again)
        base_lost = -1
        if temporal.tl0 is not None and last_tl0 is not None:
            base_lost = ((temporal.tl0 - last_tl0) & 0xFF) - (1 if temporal.tid == 0 else 0)
        if base_lost != 0:
            self._lost_base(index)
            return
        for downtrack in self.downtracks:
            if downtrack.layer == index:
                downtrack.lost_upper_layers()

    def thinned(self) -> None:
        """Count a frame left out for a viewer (a temporal layer above its own)."""
        self.stats.frames_thinned += 1
        self._counters.frames_thinned += 1

    def _temporal(self, frame: AssembledFrame) -> Vp8Temporal | None:
        """The temporal layer fields of a VP8 frame (read once for every downtrack)."""
        if self.kind != "video" or self.codec.name.upper() != "VP8":
            return None
        return vp8_temporal(frame.payloads[0])

    def _recorded_layer(self, index: int, frame: AssembledFrame) -> bool:
        """Whether a frame of layer ``index`` goes to the recording: the highest layer flowing
        when the recording starts, taken up at one of its keyframes (asked for until one
        comes), and kept while it flows, so that the recorded picture keeps its size; if it
        stops, the highest one flowing then."""
        recorded = self._recorded
        if recorded >= 0 and (recorded in self._active or not self._active):
            target = recorded
        else:
            target = self._active[-1] if self._active else 0
        if index == target and index != recorded:
            if frame.keyframe:
                self._recorded = index
            else:
                self.request_keyframe(index)
        return index == self._recorded

    def request_keyframe(self, layer: int | None = None) -> None:
        """Ask the publisher for a keyframe of ``layer`` (every layer if ``None``), at most once
        per ``KEYFRAME_INTERVAL`` per layer."""
        if self.kind != "video" or self.closed:
            return
        indices = range(len(self.layers)) if layer is None else (layer,)
        for index in indices:
            target = self.layers[index]
            if target.pending_request is not None:
                continue
            wait = target.last_request + KEYFRAME_INTERVAL - self._clock()
            if wait > 0:
                schedule = self._schedule or asyncio.get_running_loop().call_later
                send = functools.partial(self._send_request, target)
                target.pending_request = schedule(wait, send)
            else:
                self._send_request(target)

    def _send_request(self, layer: Layer) -> None:
        layer.pending_request = None
        if layer.ssrc is None or self.closed:
            # Nothing received yet: the first frame of a new stream is a keyframe anyway.
            return
        layer.last_request = self._clock()
        self.stats.keyframe_requests += 1
        self._counters.keyframe_requests += 1
        self._ask_keyframe(layer.ssrc)

    def close(self) -> None:
        """Stop forwarding: detach every downtrack and cancel pending requests."""
        self.closed = True
        log.info(
            "track ended",
            extra={
                "track": self.id,
                "packets": self.stats.packets_in,
                "frames": self.stats.frames_in,
                "dropped": self.stats.frames_dropped,
                "forwarded": self.stats.frames_forwarded,
                "keyframe_requests": self.stats.keyframe_requests,
            },
        )
        for layer in self.layers:
            if layer.pending_request is not None:
                layer.pending_request.cancel()
                layer.pending_request = None
        for downtrack in list(self.downtracks):
            downtrack.detach()


class SenderFeed:
    """What one subscriber's RTP sender sends: the frames of its current downtrack, written
    the moment they are complete (no queue, no task switch).

    A sender outlives the tracks it carries: when a publisher leaves, its transceiver on each
    subscriber goes inactive and is reused for the next track of the same kind and codec. The
    feed's :class:`~veche.media.rewriter.StreamRewriter` keeps sequence numbers and timestamps
    continuous across such switches and across simulcast layer switches, and its
    :class:`~veche.media.rewriter.PictureIdRewriter` does the same for VP8 picture ids.
    """

    def __init__(self, kind: str, rewriter: StreamRewriter | None = None) -> None:
        self.kind = kind
        self.downtrack: Downtrack | None = None
        self._writer: FrameWriter | None = None
        self._rewriter = rewriter or StreamRewriter(kind)
        self._pictures = PictureIdRewriter()

    def ready(self, writer: FrameWriter) -> None:
        """The sender's connection is up: frames can be written from now on."""
        self._writer = writer
        if self.downtrack is not None:
            self.downtrack.start()

    def attach(self, downtrack: Downtrack) -> None:
        """Carry ``downtrack`` from now on."""
        self.downtrack = downtrack
        self.switch()
        if self._writer is not None:
            downtrack.start()

    def switch(self) -> None:
        """The next frame comes from another stream (another track, or another layer)."""
        self._rewriter.switch()
        self._pictures.switch()

    def renumber_pictures(self) -> None:
        """The next frame follows the last one sent, though frames were skipped between them
        (VP8 picture ids continue; sequence numbers and timestamps keep their meaning)."""
        self._pictures.switch()

    def skip(self) -> None:
        """A frame of a temporal layer above the viewer's was left out: the next one's picture
        id follows the last one sent (TL0PICIDX runs on by itself)."""
        self._pictures.skip()

    def release(self, downtrack: Downtrack) -> None:
        """Stop carrying ``downtrack`` (if it is the current one)."""
        if self.downtrack is downtrack:
            self.downtrack = None

    def put(self, frame: AssembledFrame) -> bool:
        """Send a frame now; False if the sender is not running yet."""
        writer = self._writer
        if writer is None:
            return False
        sequence, timestamp = self._rewriter.frame(frame.timestamp, len(frame.payloads))
        payloads = frame.payloads
        if self.downtrack is not None:
            uptrack = self.downtrack.uptrack
            uptrack.stats.frames_forwarded += 1
            if uptrack.codec.name.upper() == "VP8":
                payloads = self._pictures.frame(payloads)
        writer.write_frame(payloads, sequence, timestamp, frame.audio_level)
        return True

    def forget(self) -> None:
        """What was sent so far is not worth resending (a layer cut off on a full link: its
        retransmissions would hold up the keyframe that replaces it)."""
        if self._writer is not None:
            self._writer.forget()

    def keyframe_requested(self) -> None:
        """The subscriber lost the picture: pass the request on to the publisher."""
        if self.downtrack is not None:
            self.downtrack.request_keyframe()


class Downtrack:
    """One subscriber's copy of an uptrack, carried by one :class:`SenderFeed`.

    Of a simulcast uptrack it is sent one layer, :attr:`layer`; another one it is switched to
    (:meth:`want_layer`) takes over at that layer's next keyframe, asked for at once, and the
    current one is sent until then, so the picture never stops. Of a layer encoded in temporal
    layers it is sent the frames up to the uptrack's :attr:`Uptrack.max_temporal` (its
    :attr:`temporal` filter follows a change without a keyframe).
    """

    def __init__(
        self, uptrack: Uptrack, subscriber: ParticipantId, feed: SenderFeed, *, layer: int = 1
    ) -> None:
        self.uptrack = uptrack
        self.subscriber = subscriber
        self.feed = feed
        self._started = False
        self._waiting_for_keyframe = uptrack.kind == "video"
        self.paused = False
        """Not shown by the subscriber (see ``view``): nothing is sent until it is again."""
        self.frames_sent = 0
        self.layer: int | None = None
        """The layer being sent (``None`` before the first frame)."""
        self.wanted = layer
        """The layer the subscriber's view asks for."""
        self.target = uptrack.best_layer(layer) if uptrack.simulcast else 0
        """The layer to send: the wanted one, or the nearest one that flows."""
        self.switches = 0
        self.temporal = TemporalFilter()
        """The temporal layers this subscriber is sent now."""
        self._cut = False
        """The current layer stops before the target's keyframe (see :meth:`want_layer`)."""
        uptrack.downtracks.add(self)
        feed.attach(self)

    def start(self) -> None:
        """The sender runs: from now on frames are passed on, beginning with a keyframe."""
        self._started = True
        if not self.paused:
            self.uptrack.request_keyframe(self.target)

    def want_layer(self, layer: int, *, at_once: bool = False) -> None:
        """Send layer ``layer`` (or the nearest that flows) from its next keyframe on.

        ``at_once``: a lower layer is wanted because the subscriber's link is full; the current
        one stops now, not at the lower layer's keyframe (more of it would only queue up and be
        lost, and the keyframe that switches with it), so the picture pauses until then.
        """
        self.wanted = layer
        if not self.uptrack.simulcast:
            return
        target = self.uptrack.best_layer(layer)
        if self.layer is None or target >= self.layer:
            self._cut = False
        elif at_once and not self._cut:
            self._cut = True
            self.feed.forget()
        if target == self.target:
            return
        self.target = target
        if target != self.layer and self._started and not self.paused:
            self.uptrack.request_keyframe(target)

    def request_keyframe(self) -> None:
        """Ask for a keyframe of the layer this subscriber needs next."""
        self.uptrack.request_keyframe(self.target)

    def push(
        self, frame: AssembledFrame, layer: int = 0, temporal: Vp8Temporal | None = None
    ) -> bool:
        """Pass a frame of ``layer`` (in temporal layer ``temporal``, if it has any) from the
        uptrack on to the sender; whether it was sent."""
        if not self._started or self.paused:
            return False  # the sender is not running yet; it asks for a keyframe when it is
        if layer != self.layer:
            if layer != self.target:
                return False
            if not frame.keyframe:
                # Ask again (at most every KEYFRAME_INTERVAL) until it comes: a publisher may
                # drop a request, and its next keyframe of its own may be minutes away.
                self.uptrack.request_keyframe(layer)
                return False
            if self.layer is not None:
                self.feed.switch()
                self.switches += 1
            self.layer = layer
            self._waiting_for_keyframe = False
            self._cut = False
        elif self._cut:
            return False
        elif self._waiting_for_keyframe:
            if not frame.keyframe:
                return False
            self._waiting_for_keyframe = False
        if not self.temporal.admit(temporal, frame.keyframe, self.uptrack.max_temporal):
            self.uptrack.thinned()
            self.feed.skip()
            return False
        if self.uptrack.keyframes_only:
            self.feed.renumber_pictures()  # the viewer must not take skipped frames for lost
        sent = self.feed.put(frame)
        self.frames_sent += sent
        return sent

    def set_paused(self, paused: bool) -> None:
        """Stop sending (the subscriber does not show this video), or start again from the
        next keyframe, asked for at once."""
        if paused == self.paused:
            return
        self.paused = paused
        if not paused and self.uptrack.kind == "video":
            self._waiting_for_keyframe = True
            if self._started:
                self.uptrack.request_keyframe(self.target)

    def lost_upper_layers(self) -> None:
        """Frames of the upper temporal layers were lost on the way in: send the base layer
        on, the others again from their next sync frames (see :meth:`TemporalFilter.lost_above`),
        numbered so that the viewer sees no gap."""
        if not self._waiting_for_keyframe:
            self.temporal.lost_above(0)
            self.feed.skip()

    def hold_until_keyframe(self) -> None:
        """Send nothing more until the next keyframe (after a loss or a stall)."""
        if self.uptrack.kind == "video":
            self._waiting_for_keyframe = True

    def detach(self) -> None:
        """Stop receiving frames from the uptrack and free the feed."""
        self.uptrack.downtracks.discard(self)
        self.feed.release(self)
