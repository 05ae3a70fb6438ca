"""One room's media: its members' peers, who receives what, the active speaker, the recording.

In a room every member receives every other member's tracks that it can decode (mediasoup
calls this object a *router*; Galène a *group*). The room asks a publisher for another codec
when a member cannot decode the one it sends, holds back what a participant's state says is off
(a moderator's mute), and feeds a recording when one runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection
from typing import Any, Final

from veche.errors import ErrorCode
from veche.ids import ParticipantId, RoomName
from veche.media.backoff import ResetBackoff
from veche.media.codecs import Decoders
from veche.media.governor import governed
from veche.media.peer import MediaConfig, MediaPeer
from veche.media.recorder import Recording
from veche.media.speaker import SpeakerDetector
from veche.media.subscribe import ShownVideos
from veche.media.tracks import Uptrack
from veche.protocol import Error, PeerRole, ServerMessage, Source

__all__ = ["MediaRoom"]

log = logging.getLogger(__name__)

_DEFAULT_FORWARDING: Final[dict[Source, bool]] = {
    "microphone": True,
    "camera": True,
    "screen": False,
}
"""What a participant forwards until its state says otherwise (a screen needs a grant)."""

HANDOVER_WAIT: Final = 10.0
"""Seconds the others keep a renewed publish connection's tracks (their senders, silent) for
the tracks it publishes again (see :meth:`MediaRoom.reset`)."""
SWITCH_WAIT: Final = 5.0
"""Seconds a publisher asked for another codec has before the member who cannot decode the
current one is told (a client that ignores ``renegotiate`` still works)."""


class MediaRoom:
    """The media of one room's members.

    ``send(participant_id, message)`` delivers a server message to one member;
    ``on_closed(peer)`` is handed each peer that left, to be closed in the background.
    """

    def __init__(
        self,
        name: RoomName,
        config: MediaConfig,
        *,
        send: Callable[[ParticipantId, ServerMessage], None],
        on_closed: Callable[[MediaPeer], None],
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self.config = config
        self._send = send
        self._on_closed = on_closed
        self._clock = clock
        self.members: dict[ParticipantId, MediaPeer] = {}
        self.speakers = SpeakerDetector()
        self._forwarding: dict[str, dict[Source, bool]] = {}
        self._views: dict[ParticipantId, ShownVideos | None] = {}
        self._switch_waits: set[asyncio.TimerHandle] = set()
        self.recording: Recording | None = None
        self._recorded: list[tuple[Uptrack, Callable[[Any], None]]] = []
        self._backoffs: dict[ParticipantId, ResetBackoff] = {}
        self._resets: dict[ParticipantId, tuple[asyncio.TimerHandle, set[PeerRole]]] = {}
        """Resets waiting for their member's back-off (see :mod:`veche.media.backoff`), with
        the connections to renew."""
        self._handovers: dict[ParticipantId, tuple[asyncio.TimerHandle, dict[Source, Uptrack]]] = {}
        """Tracks of a renewed publish connection, by source, waiting for the tracks that
        replace them (see :meth:`reset`), with the timer that gives up waiting."""
        self.piped: list[Uptrack] = []
        """Tracks published on another process of this room, stood in here by a pipe (see
        :mod:`veche.media.pipe`): every member receives them as a local publisher's."""

    # ---------------------------------------------------------------- members

    def add(
        self, participant_id: ParticipantId, decoders: Decoders, address: str | None = None
    ) -> None:
        """A member that can play ``decoders``, connecting from ``address``: it receives every
        track of the room it can decode; a publisher whose codec it cannot decode is asked for
        another, if it offered one that suits the whole room."""
        peer = MediaPeer(
            participant_id,
            self.config,
            send=lambda message: self._send(participant_id, message),
            on_publish=self._published,
            on_unpublish=self._unpublished,
            on_failed=lambda role, reason: self._failed(participant_id, peer, role, reason),
            on_level=lambda level: self.speakers.add(participant_id, level, now=self._clock()),
            on_refused=lambda uptrack: self._offer(participant_id, uptrack),
            decoders=decoders,
            audience=lambda: [p.decoders for m, p in self.members.items() if m != participant_id],
            address=address,
            ceiling=self._ceiling,
        )
        peer.subscribing.set_view(self._views.get(participant_id))
        peer.subscribing.set_speaker(self.speakers.current)
        others = list(self.members.values())
        self.members[participant_id] = peer
        for other in others:
            for uptrack in list(other.uptracks):
                self._offer(participant_id, uptrack)
        for uptrack in list(self.piped):
            self._offer(participant_id, uptrack)

    def remove(self, participant_id: ParticipantId) -> MediaPeer | None:
        """Take a member out: its tracks leave every other member; its peer is handed to
        ``on_closed``. The peer, if it was a member."""
        waiting = self._resets.pop(participant_id, None)
        if waiting is not None:
            waiting[0].cancel()
        self._backoffs.pop(participant_id, None)
        return self._detach(participant_id)

    def _detach(self, participant_id: ParticipantId) -> MediaPeer | None:
        peer = self.members.pop(participant_id, None)
        self._forwarding.pop(participant_id, None)
        self._views.pop(participant_id, None)
        if peer is None:
            return None
        self.speakers.forget(participant_id)
        self._give_up_handover(participant_id)
        for other in self.members.values():
            for uptrack in peer.uptracks:
                other.unsubscribe(uptrack)
        self._on_closed(peer)
        return peer

    def _failed(
        self, participant_id: ParticipantId, peer: MediaPeer, role: PeerRole, reason: str
    ) -> None:
        """The ``role`` connection of ``peer`` failed: renew it now, or once the member's
        back-off has passed if it was reset shortly before. Until then nothing changes for the
        others (a publish connection that still carries media keeps being forwarded); further
        failures meanwhile only add their connection to the reset."""
        if self.members.get(participant_id) is not peer:
            return
        waiting = self._resets.get(participant_id)
        if waiting is not None:
            waiting[1].add(role)
            return
        backoff = self._backoffs.setdefault(participant_id, ResetBackoff())
        wait = backoff.wait(asyncio.get_running_loop().time())
        if wait <= 0:
            self.reset(participant_id, reason, {role})
            return
        roles = {role}
        handle = asyncio.get_running_loop().call_later(
            wait, self.reset, participant_id, reason, roles
        )
        self._resets[participant_id] = (handle, roles)

    def reset(
        self,
        participant_id: ParticipantId,
        reason: str = "failed",
        roles: Collection[PeerRole] = ("publish", "subscribe"),
    ) -> None:
        """Start a member's ``roles`` connections afresh after a failure, and tell it
        ``media_failed`` (with ``reason``, and the connection when only one is renewed).

        A renewed subscribe connection is offered every track again; the member's own tracks
        keep going to everyone. A renewed publish connection takes the member's tracks away
        from the others until it publishes again; what it receives keeps coming. Its
        forwarding state, view, decoders and back-off are kept.

        The others keep a renewed publish connection's tracks (their senders idle) for up to
        :data:`HANDOVER_WAIT` seconds: a track it publishes again of the same source takes
        over the same sender on each of them (:meth:`SubscribeLeg.hand_over`), with no
        renegotiation of anyone's subscribe connection. Under load, when consent or DTLS
        fails on many publish connections at once, this is what spares every viewer two
        renegotiations of up to a hundred sections per failure."""
        self._resets.pop(participant_id, None)
        peer = self.members.get(participant_id)
        if peer is None:
            return
        backoff = self._backoffs.setdefault(participant_id, ResetBackoff())
        count = backoff.reset_at(asyncio.get_running_loop().time())
        log.info(
            "media reset after failure",
            extra={
                "participant": participant_id,
                "reason": reason,
                "connections": sorted(roles),
                "resets": count,
                "next_wait": backoff.gap(),
            },
        )
        renewed: PeerRole | None = None if len(set(roles)) > 1 else next(iter(roles))
        # The client hears of it before the new subscribe offer: it answers on a new connection.
        self._send(participant_id, Error(code=ErrorCode.MEDIA_FAILED, message=reason, pc=renewed))
        if "publish" in roles:
            self._await_handover(participant_id, list(peer.uptracks))
            peer.renew("publish")
        if "subscribe" in roles:
            peer.renew("subscribe")
            peer.subscribing.set_view(self._views.get(participant_id))
            peer.subscribing.set_speaker(self.speakers.current)
            for member, other in list(self.members.items()):
                if member != participant_id:
                    for uptrack in list(other.uptracks):
                        self._offer(participant_id, uptrack)
            for uptrack in list(self.piped):
                self._offer(participant_id, uptrack)

    def set_forwarding(
        self, participant_id: ParticipantId, *, audio: bool, video: bool, screen: bool
    ) -> None:
        """Forward a member's microphone, camera and screen only while they are on (a
        moderator's mute holds back whatever the client still sends); tracks it publishes
        later follow the same state."""
        peer = self.members.get(participant_id)
        if peer is None:
            return
        self._forwarding[participant_id] = {"microphone": audio, "camera": video, "screen": screen}
        for uptrack in peer.uptracks:
            self._follow_state(uptrack)

    def set_view(self, participant_id: ParticipantId, shown: ShownVideos | None) -> None:
        """A member shows only these videos (see :meth:`SubscribeLeg.set_view`); kept across
        a reset of its media."""
        peer = self.members.get(participant_id)
        if peer is None:
            return
        self._views[participant_id] = shown
        peer.subscribing.set_view(shown)

    def select_audio(self, *, now: float) -> None:
        """With more microphones than ``max_audio_streams``, forward only the loudest of
        late (see :meth:`SpeakerDetector.loudest`): 50 open microphones must not become 2,450
        streams. Audio needs no keyframe, so a voice is forwarded from its next packet."""
        limit = self.config.max_audio_streams
        microphones = [
            uptrack
            for peer in self.members.values()
            for uptrack in peer.uptracks
            if uptrack.kind == "audio"
        ]
        chosen: set[str] | None = None
        if 0 < limit < len(microphones):
            chosen = self.speakers.loudest(limit, now=now)
        for uptrack in microphones:
            uptrack.audible = chosen is None or uptrack.owner in chosen

    def _important(self, uptrack: Uptrack) -> bool:
        speaker = self.speakers.current
        return not governed(uptrack.kind, uptrack.source, uptrack.owner, speaker)

    def _ceiling(self, uptrack: Uptrack) -> int | None:
        return self.config.governor.ceiling(self._important(uptrack))

    def govern(self) -> None:
        """Apply the load governor's level (or a new active speaker) to every video of the
        room: simulcast ones through each viewer's layer ceiling, single-layer ones through
        the bitrate their publisher is told it may send, and both through the temporal layers
        (frame rate) they are sent; at the last level a single-layer video without temporal
        layers is sent as keyframes only."""
        for peer in self.members.values():
            for uptrack in peer.uptracks:
                self._govern(uptrack)
        for peer in self.members.values():
            peer.subscribing.update_layers()

    def _govern(self, uptrack: Uptrack) -> None:
        governor, important = self.config.governor, self._important(uptrack)
        if uptrack.kind != "video":
            return
        uptrack.max_temporal = governor.temporal(important)
        uptrack.governed = governor.level > 0
        if not uptrack.simulcast:
            uptrack.max_bitrate = governor.bitrate(important)
            # Applies only while its frames carry no TID (see Uptrack.keyframes_only).
            uptrack.set_keyframes_only(governor.keyframes_only(important))

    def _follow_state(self, uptrack: Uptrack) -> None:
        wanted = self._forwarding.get(uptrack.owner, _DEFAULT_FORWARDING)
        uptrack.set_enabled(wanted[uptrack.source])

    # ---------------------------------------------------------------- who receives what

    def _offer(self, participant_id: ParticipantId, uptrack: Uptrack) -> None:
        """Forward ``uptrack`` to a member if it can decode it; otherwise ask the publisher for
        a codec the whole room can decode, or, if it has none, tell the member."""
        peer = self.members.get(participant_id)
        if peer is None or uptrack.closed:
            return
        if peer.subscribing.can_receive(uptrack):
            peer.subscribe(uptrack)
            return
        publisher = self.members.get(uptrack.owner)
        if publisher is not None and publisher.publishing.ask_for_codec_all_can_decode(uptrack):
            # The track comes back in the new codec (see _published); if not in time, say so.
            def not_switched() -> None:
                self._switch_waits.discard(handle)
                waiting = self.members.get(participant_id)
                if waiting is not None and not uptrack.closed:
                    waiting.subscribing.unavailable(uptrack)

            handle = asyncio.get_running_loop().call_later(SWITCH_WAIT, not_switched)
            self._switch_waits.add(handle)
            return
        peer.subscribing.unavailable(uptrack)

    def _await_handover(self, participant_id: ParticipantId, uptracks: list[Uptrack]) -> None:
        """Keep ``uptracks`` at the others until the member publishes their successors, or
        :data:`HANDOVER_WAIT` has passed."""
        loop = asyncio.get_running_loop()
        waiting = self._handovers.pop(participant_id, None)
        orphans: dict[Source, Uptrack] = {}
        if waiting is not None:
            waiting[0].cancel()
            orphans = waiting[1]
        for uptrack in uptracks:
            replaced = orphans.pop(uptrack.source, None)
            if replaced is not None:
                self._unsubscribe_others(replaced)
            orphans[uptrack.source] = uptrack
        if orphans:
            handle = loop.call_later(HANDOVER_WAIT, self._give_up_handover, participant_id)
            self._handovers[participant_id] = (handle, orphans)

    def _give_up_handover(self, participant_id: ParticipantId) -> None:
        waiting = self._handovers.pop(participant_id, None)
        if waiting is None:
            return
        waiting[0].cancel()
        for uptrack in waiting[1].values():
            self._unsubscribe_others(uptrack)

    def _unsubscribe_others(self, uptrack: Uptrack) -> None:
        for member, peer in self.members.items():
            if member != uptrack.owner:
                peer.unsubscribe(uptrack)

    def _published(self, uptrack: Uptrack) -> None:
        self._follow_state(uptrack)
        self._govern(uptrack)
        self._record(uptrack)
        replaced: Uptrack | None = None
        waiting = self._handovers.get(ParticipantId(uptrack.owner))
        if waiting is not None:
            replaced = waiting[1].pop(uptrack.source, None)
            if not waiting[1]:
                waiting[0].cancel()
                del self._handovers[ParticipantId(uptrack.owner)]
        for other in list(self.members):
            if other != uptrack.owner:
                try:
                    if replaced is not None:
                        viewer = self.members[other]
                        if viewer.subscribing.hand_over(replaced, uptrack):
                            continue
                        viewer.unsubscribe(replaced)
                    self._offer(other, uptrack)
                except Exception:
                    # One member's broken connection is its own: never the publisher's error.
                    log.exception("a new track could not be offered", extra={"member": other})
                    peer = self.members.get(other)
                    if peer is not None:
                        reason = "the subscribe media connection could not take a track"
                        self._failed(other, peer, "subscribe", reason)

    def _unpublished(self, uptrack: Uptrack) -> None:
        """A publisher replaced ``uptrack`` (a codec switch): nobody receives it any more."""
        for member, peer in self.members.items():
            if member != uptrack.owner:
                peer.unsubscribe(uptrack)

    def add_piped(self, uptrack: Uptrack) -> None:
        """A track of this room published on another process arrives over a pipe: offer it
        to every member (its publisher's process applies the moderation state)."""
        self.piped.append(uptrack)
        self._record(uptrack)
        for member in list(self.members):
            self._offer(member, uptrack)

    def remove_piped(self, uptrack: Uptrack) -> None:
        """A piped track ends: nobody here receives it any more."""
        if uptrack in self.piped:
            self.piped.remove(uptrack)
            self._unpublished(uptrack)

    # ---------------------------------------------------------------- recording

    def start_recording(self, recording: Recording) -> None:
        """Spool every track of the room, those published later included, to ``recording``."""
        self.recording = recording
        self._recorded = []
        for peer in self.members.values():
            for uptrack in peer.uptracks:
                self._record(uptrack)

    def stop_recording(self) -> Recording | None:
        """Stop spooling; the recording, if there was one (its files are not written yet: see
        :meth:`Recording.stop`)."""
        recording, self.recording = self.recording, None
        for uptrack, sink in self._recorded:
            with contextlib.suppress(ValueError):
                uptrack.sinks.remove(sink)
        self._recorded = []
        return recording

    def _record(self, uptrack: Uptrack) -> None:
        if self.recording is None or uptrack.closed:
            return
        sink = self.recording.sink_for(uptrack.owner, uptrack.kind, uptrack.codec)
        if sink is not None:
            uptrack.sinks.append(sink)
            self._recorded.append((uptrack, sink))
            uptrack.request_keyframe()  # a recorded video starts at a keyframe

    # ---------------------------------------------------------------- lifetime

    def close(self) -> None:
        """Every member leaves; pending codec-switch waits and resets are dropped."""
        for participant_id in list(self.members):
            self.remove(participant_id)
        for handle in self._switch_waits:
            handle.cancel()
        self._switch_waits.clear()
        for participant_id in list(self._handovers):
            self._give_up_handover(participant_id)
