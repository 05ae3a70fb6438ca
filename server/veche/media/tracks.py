"""Published tracks (uptracks) and their per-subscriber copies (downtracks).

An :class:`Uptrack` turns a publisher's RTP packets into whole frames and hands each frame to
every :class:`Downtrack`; a downtrack passes them to the :class:`SenderFeed` of one subscriber's
RTP sender, which sends them as they are. Nothing is decoded or encoded. A new or recovering
video downtrack holds back everything until a keyframe and asks the publisher for one;
keyframe requests to a publisher are rate-limited but never lost (a request inside the quiet
interval is sent when it ends).
"""

from __future__ import annotations

import asyncio
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
from veche.media.rewriter import StreamRewriter
from veche.protocol import Source

__all__ = ["Downtrack", "FrameWriter", "SenderFeed", "TrackStats", "Uptrack"]

log = logging.getLogger(__name__)

KEYFRAME_INTERVAL: Final = 0.3
"""Least seconds between two keyframe requests to one publisher track."""

_track_numbers = itertools.count(1)


class FrameWriter(Protocol):
    """Sends one frame's RTP payloads on a subscriber's connection
    (:class:`~veche.media.internals.PacketWriter`; a fake in tests)."""

    def write_frame(
        self, payloads: list[bytes], sequence: int, timestamp: int, audio_level: int | None
    ) -> None: ...


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


class Uptrack:
    """One track a participant publishes: ``kind`` is ``audio`` or ``video``.

    ``ask_keyframe(ssrc)`` sends the publisher a keyframe request (a PLI) for the stream
    ``ssrc``; ``clock`` and ``schedule`` (``loop.call_later`` by default) time the requests.
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
        self._on_level = on_level
        self.stats = TrackStats()
        self._counters = counters or MediaCounters()
        self.sinks: list[Callable[[AssembledFrame], None]] = []
        """Also given every forwarded frame (a recording)."""
        self.downtracks: set[Downtrack] = set()
        self._ask_keyframe = ask_keyframe
        self._clock = clock
        self._schedule = schedule
        self._assembler = FrameAssembler(codec.name, video=kind == "video", clock=clock)
        self._ssrc: int | None = None
        self._last_request = -KEYFRAME_INTERVAL
        self._pending_request: asyncio.TimerHandle | None = None
        self.closed = False

    @property
    def stream_id(self) -> str:
        """The stream id subscribers see: the owner's participant id, with ``~screen`` for a
        shared screen."""
        return f"{self.owner}~screen" if self.source == "screen" else self.owner

    def set_enabled(self, enabled: bool) -> None:
        """Forward or hold back this track (a muted microphone, a camera turned off, a screen
        not being shared). A video track turned back on restarts from a keyframe."""
        if enabled == self.enabled:
            return
        self.enabled = enabled
        if enabled and self.kind == "video":
            for downtrack in self.downtracks:
                downtrack.hold_until_keyframe()
            self.request_keyframe()

    def on_packet(self, packet: RtpPacket, codec: RTCRtpCodecParameters) -> None:
        """Receive one RTP packet from the publisher (the receiver tap calls this)."""
        if codec.payloadType != self.codec.payloadType or self.closed:
            return
        self.stats.packets_in += 1
        arrived = self._clock()
        self._ssrc = packet.ssrc
        level = packet.extensions.audio_level
        if level is not None and self._on_level is not None and self.enabled:
            self._on_level(level[1])
        frames, lost = self._assembler.push(
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
            for downtrack in self.downtracks:
                downtrack.hold_until_keyframe()
            self.request_keyframe()
        for frame in frames:
            self.stats.frames_in += 1
            if not self.enabled:
                continue
            sent = 0
            if self.audible:
                for downtrack in self.downtracks:
                    sent += downtrack.push(frame)
            for sink in self.sinks:
                sink(frame)
            if sent:
                counters = self._counters
                counters.packets_forwarded += sent * len(frame.payloads)
                counters.bytes_forwarded += sent * sum(map(len, frame.payloads))
                counters.forwarding_delay.observe(self._clock() - arrived)

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe, at most once per ``KEYFRAME_INTERVAL``."""
        if self.kind != "video" or self.closed or self._pending_request is not None:
            return
        wait = self._last_request + KEYFRAME_INTERVAL - self._clock()
        if wait > 0:
            schedule = self._schedule or asyncio.get_running_loop().call_later
            self._pending_request = schedule(wait, self._send_request)
        else:
            self._send_request()

    def _send_request(self) -> None:
        self._pending_request = None
        if self._ssrc is None or self.closed:
            # Nothing received yet: the first frame of a new stream is a keyframe anyway.
            return
        self._last_request = self._clock()
        self.stats.keyframe_requests += 1
        self._counters.keyframe_requests += 1
        self._ask_keyframe(self._ssrc)

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
        if self._pending_request is not None:
            self._pending_request.cancel()
            self._pending_request = None
        for downtrack in list(self.downtracks):
            downtrack.detach()


class SenderFeed:
    """What one subscriber's RTP sender sends: the frames of its current downtrack, written
    the moment they are complete (no queue, no task switch).

    A sender outlives the tracks it carries: when a publisher leaves, its transceiver on each
    subscriber goes inactive and is reused for the next track of the same kind and codec. The
    feed's :class:`~veche.media.rewriter.StreamRewriter` keeps sequence numbers and timestamps
    continuous across such switches.
    """

    def __init__(self, kind: str, rewriter: StreamRewriter | None = None) -> None:
        self.kind = kind
        self.downtrack: Downtrack | None = None
        self._writer: FrameWriter | None = None
        self._rewriter = rewriter or StreamRewriter(kind)

    def ready(self, writer: FrameWriter) -> None:
        """The sender's connection is up: frames can be written from now on."""
        self._writer = writer
        if self.downtrack is not None:
            self.downtrack.start()

    def attach(self, downtrack: Downtrack) -> None:
        """Carry ``downtrack`` from now on."""
        self.downtrack = downtrack
        self._rewriter.switch()
        if self._writer is not None:
            downtrack.start()

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
        if self.downtrack is not None:
            self.downtrack.uptrack.stats.frames_forwarded += 1
        writer.write_frame(frame.payloads, sequence, timestamp, frame.audio_level)
        return True

    def keyframe_requested(self) -> None:
        """The subscriber lost the picture: pass the request on to the publisher."""
        if self.downtrack is not None:
            self.downtrack.uptrack.request_keyframe()


class Downtrack:
    """One subscriber's copy of an uptrack, carried by one :class:`SenderFeed`."""

    def __init__(self, uptrack: Uptrack, subscriber: ParticipantId, feed: SenderFeed) -> None:
        self.uptrack = uptrack
        self.subscriber = subscriber
        self.feed = feed
        self._started = False
        self._waiting_for_keyframe = uptrack.kind == "video"
        self.paused = False
        """Not shown by the subscriber (see ``view``): nothing is sent until it is again."""
        self.frames_sent = 0
        uptrack.downtracks.add(self)
        feed.attach(self)

    def start(self) -> None:
        """The sender runs: from now on frames are passed on, beginning with a keyframe."""
        self._started = True
        if not self.paused:
            self.uptrack.request_keyframe()

    def push(self, frame: AssembledFrame) -> bool:
        """Pass a frame from the uptrack on to the sender; whether it was sent."""
        if not self._started or self.paused:
            return False  # the sender is not running yet; it asks for a keyframe when it is
        if self._waiting_for_keyframe:
            if not frame.keyframe:
                return False
            self._waiting_for_keyframe = False
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
                self.uptrack.request_keyframe()

    def hold_until_keyframe(self) -> None:
        """Send nothing more until the next keyframe (after a loss or a stall)."""
        if self.uptrack.kind == "video":
            self._waiting_for_keyframe = True

    def detach(self) -> None:
        """Stop receiving frames from the uptrack and free the feed."""
        self.uptrack.downtracks.discard(self)
        self.feed.release(self)
