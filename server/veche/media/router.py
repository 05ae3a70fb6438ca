"""The SFU's routing table: in each room, every participant receives every other's tracks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from aiortc import RTCIceServer

from veche.media.codecs import Decoders
from veche.media.peer import MediaConfig, MediaPeer
from veche.media.recorder import Recording
from veche.media.speaker import SpeakerDetector
from veche.media.tracks import Uptrack
from veche.protocol import Answer, Candidate, Offer, ServerMessage, Source
from veche.settings import Settings
from veche.turn import turn_credentials

__all__ = ["MediaRouter", "media_config"]

log = logging.getLogger(__name__)

_DEFAULT_FORWARDING: Final[dict[Source, bool]] = {
    "microphone": True,
    "camera": True,
    "screen": False,
}
"""What a participant forwards until its state says otherwise (a screen needs a grant)."""

SPEAKER_INTERVAL: Final = 0.25
"""Seconds between two looks at who is speaking."""

SWITCH_WAIT: Final = 5.0
"""Seconds a publisher asked for another codec has before the participant who cannot decode
the current one is told (a client that ignores ``renegotiate`` still works)."""


def media_config(settings: Settings) -> MediaConfig:
    """Peer connection settings. The server uses the STUN servers; TURN only when every
    connection must be relayed (``ice_transport_policy=relay``), with credentials made for each
    new connection. An empty list means no STUN server is ever contacted."""
    stun = [url for url in settings.ice_servers if url.startswith(("stun:", "stuns:"))]
    turn = [url for url in settings.ice_servers if url.startswith(("turn:", "turns:"))]
    relay = settings.ice_transport_policy == "relay"
    secret = settings.turn_secret

    def ice_servers() -> list[RTCIceServer]:
        servers = [RTCIceServer(urls=stun)] if stun and not relay else []
        if relay and turn and secret is not None:
            username, password = turn_credentials(
                secret.get_secret_value(), "veche-server", ttl=settings.turn_ttl, now=time.time()
            )
            # aiortc uses one TURN server: the first URL.
            servers.append(RTCIceServer(urls=turn[0], username=username, credential=password))
        return servers

    return MediaConfig(
        ice_servers=ice_servers,
        relay_only=relay,
        allow_local_candidates=settings.allow_local_candidates,
        max_candidates=settings.max_candidates,
        max_sdp=settings.max_sdp_length,
        connect_timeout=settings.media_connect_timeout,
        port_min=settings.media_port_min,
        port_max=settings.media_port_max,
        public_ip=settings.public_ip,
        video_codecs=tuple(settings.video_codecs),
    )


class MediaRouter:
    """Media peers by participant, grouped by room.

    ``send(participant_id, message)`` delivers a server message to one participant;
    ``on_speaker(room, participant_id)`` is called when a room's active speaker changes.
    """

    def __init__(
        self,
        config: MediaConfig,
        send: Callable[[str, ServerMessage], None],
        *,
        on_speaker: Callable[[str, str | None], None] = lambda room, participant: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._send = send
        self._on_speaker = on_speaker
        self._clock = clock
        self._speakers: dict[str, SpeakerDetector] = {}
        self._forwarding: dict[str, dict[Source, bool]] = {}
        self._speaker_task: asyncio.Task[None] | None = None
        self._peers: dict[str, MediaPeer] = {}
        self._rooms: dict[str, set[str]] = {}
        self._room_of: dict[str, str] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._switch_waits: set[asyncio.TimerHandle] = set()
        self._recordings: dict[str, Recording] = {}
        self._recorded: dict[str, list[tuple[Uptrack, Callable[[Any], None]]]] = {}

    @property
    def peers(self) -> list[MediaPeer]:
        """Every participant's media."""
        return list(self._peers.values())

    @property
    def peer_connection_count(self) -> int:
        """Peer connections open or still closing."""
        return sum(
            pc is not None
            for peer in self._peers.values()
            for pc in (peer.publish_pc, peer.subscribe_pc)
        ) + len(self._closing)

    def join(self, room: str, participant_id: str, receive_codecs: list[str] | None = None) -> None:
        """Add a participant that can decode ``receive_codecs`` (MIME types; ``None``: whatever
        is forwarded): it will receive every track already published in the room that it can
        decode; a publisher whose codec it cannot decode is asked for another, if it offered
        one that suits the whole room."""
        self._add(room, participant_id, Decoders.named(receive_codecs))

    def _add(self, room: str, participant_id: str, decoders: Decoders) -> None:
        detector = self._speakers.setdefault(room, SpeakerDetector())
        peer = MediaPeer(
            participant_id,
            self.config,
            send=lambda message: self._send(participant_id, message),
            on_publish=self._published,
            on_unpublish=self._unpublished,
            on_failed=lambda: self.reset(participant_id),
            on_level=lambda level: detector.add(participant_id, level, now=self._clock()),
            on_refused=lambda uptrack: self._offer(participant_id, uptrack),
            decoders=decoders,
            audience=lambda: self._audience(participant_id),
        )
        self._ensure_speaker_task()
        members = self._rooms.setdefault(room, set())
        others = list(members)
        members.add(participant_id)
        self._peers[participant_id] = peer
        self._room_of[participant_id] = room
        for other in others:
            for uptrack in list(self._peers[other].uptracks):
                self._offer(participant_id, uptrack)

    def _audience(self, participant_id: str) -> list[Decoders]:
        """What everyone else in ``participant_id``'s room can decode."""
        members = self._rooms.get(self._room_of.get(participant_id, ""), set())
        return [self._peers[m].decoders for m in members if m != participant_id]

    def _offer(self, participant_id: str, uptrack: Uptrack) -> None:
        """Forward ``uptrack`` to a participant if it can decode it; otherwise ask the publisher
        for a codec the whole room can decode, or, if it has none, tell the participant."""
        peer = self._peers.get(participant_id)
        if peer is None or uptrack.closed:
            return
        if peer.subscribing.can_receive(uptrack):
            peer.subscribe(uptrack)
            return
        publisher = self._peers.get(uptrack.owner)
        if publisher is not None and publisher.publishing.ask_for_codec_all_can_decode(uptrack):
            # The track comes back in the new codec (see _published); if it does not in time,
            # say so.
            def not_switched() -> None:
                self._switch_waits.discard(handle)
                waiting = self._peers.get(participant_id)
                if waiting is not None and not uptrack.closed:
                    waiting.subscribing.unavailable(uptrack)

            handle = asyncio.get_running_loop().call_later(SWITCH_WAIT, not_switched)
            self._switch_waits.add(handle)
            return
        peer.subscribing.unavailable(uptrack)

    def leave(self, participant_id: str) -> None:
        """Remove a participant: its tracks leave every subscriber; its connections close in the
        background (see :meth:`close`)."""
        peer = self._peers.pop(participant_id, None)
        room = self._room_of.pop(participant_id, None)
        self._forwarding.pop(participant_id, None)
        if peer is None or room is None:
            return
        members = self._rooms.get(room, set())
        members.discard(participant_id)
        if room in self._speakers:
            self._speakers[room].forget(participant_id)
        if not members:
            self._rooms.pop(room, None)
            self._speakers.pop(room, None)
        for other in members:
            for uptrack in peer.uptracks:
                self._peers[other].unsubscribe(uptrack)
        task = asyncio.ensure_future(peer.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def reset(self, participant_id: str) -> None:
        """Start a participant's media afresh after a failure: its tracks leave every subscriber
        and its connections are released; it may publish again, and is offered the others'
        tracks on a new subscribe connection."""
        room = self._room_of.get(participant_id)
        if room is None:
            return
        log.info("media reset after failure", extra={"participant": participant_id})
        forwarding = self._forwarding.get(participant_id)
        decoders = self._peers[participant_id].decoders
        self.leave(participant_id)
        self._add(room, participant_id, decoders)
        if forwarding is not None:
            self._forwarding[participant_id] = forwarding

    async def handle(self, participant_id: str, message: Offer | Answer | Candidate) -> None:
        """Apply a participant's offer, answer or candidate."""
        peer = self._peers.get(participant_id)
        if peer is not None:
            await peer.handle(message)

    def set_forwarding(
        self, participant_id: str, *, audio: bool, video: bool, screen: bool
    ) -> None:
        """Forward a participant's microphone, camera and screen only while they are on (a
        moderator's mute holds back whatever the client still sends); tracks it publishes
        later follow the same state."""
        peer = self._peers.get(participant_id)
        if peer is None:
            return
        self._forwarding[participant_id] = {
            "microphone": audio,
            "camera": video,
            "screen": screen,
        }
        for uptrack in peer.uptracks:
            self._follow_state(uptrack)

    def _follow_state(self, uptrack: Uptrack) -> None:
        wanted = self._forwarding.get(uptrack.owner, _DEFAULT_FORWARDING)
        uptrack.set_enabled(wanted[uptrack.source])

    def _ensure_speaker_task(self) -> None:
        if self._speaker_task is None or self._speaker_task.done():
            self._speaker_task = asyncio.ensure_future(self._watch_speakers())

    async def _watch_speakers(self) -> None:
        while self._speakers:
            await asyncio.sleep(SPEAKER_INTERVAL)
            now = self._clock()
            for room, detector in list(self._speakers.items()):
                before = detector.current
                after = detector.speaker(now=now)
                if after != before:
                    self._on_speaker(room, after)

    # ---------------------------------------------------------------- recording

    def start_recording(self, room: str, recording: Recording) -> None:
        """Spool every track of ``room``, those published later included, to ``recording``."""
        self._recordings[room] = recording
        self._recorded[room] = []
        for member in self._rooms.get(room, ()):
            for uptrack in self._peers[member].uptracks:
                self._record(room, uptrack)

    def recording(self, room: str) -> Recording | None:
        """The recording of ``room`` under way, if any."""
        return self._recordings.get(room)

    @property
    def recorded_rooms(self) -> list[str]:
        """Rooms being recorded."""
        return list(self._recordings)

    def stop_recording(self, room: str) -> Recording | None:
        """Stop spooling ``room``; the recording, if there was one (its files are not written
        yet: see :meth:`Recording.stop`)."""
        recording = self._recordings.pop(room, None)
        for uptrack, sink in self._recorded.pop(room, []):
            with contextlib.suppress(ValueError):
                uptrack.sinks.remove(sink)
        return recording

    def _record(self, room: str, uptrack: Uptrack) -> None:
        recording = self._recordings.get(room)
        if recording is None or uptrack.closed:
            return
        sink = recording.sink_for(uptrack.owner, uptrack.kind, uptrack.codec)
        if sink is not None:
            uptrack.sinks.append(sink)
            self._recorded[room].append((uptrack, sink))
            uptrack.request_keyframe()  # a recorded video starts at a keyframe

    def _published(self, uptrack: Uptrack) -> None:
        self._follow_state(uptrack)
        room = self._room_of.get(uptrack.owner)
        if room is None:
            return
        self._record(room, uptrack)
        for other in list(self._rooms.get(room, ())):
            if other != uptrack.owner:
                self._offer(other, uptrack)

    def _unpublished(self, uptrack: Uptrack) -> None:
        """A publisher replaced ``uptrack`` (a codec switch): nobody receives it any more."""
        for other in self._rooms.get(self._room_of.get(uptrack.owner, ""), ()):
            if other != uptrack.owner:
                self._peers[other].unsubscribe(uptrack)

    async def close(self) -> None:
        """Close every participant's media and wait for all closes to finish."""
        for participant_id in list(self._peers):
            self.leave(participant_id)
        for handle in self._switch_waits:
            handle.cancel()
        if self._speaker_task is not None:
            self._speaker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._speaker_task
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
