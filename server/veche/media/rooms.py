"""Every room's media on this server (:class:`MediaRoom` each), found by room or participant.

With pipes between processes (:mod:`veche.media.pipe`, placed by
:mod:`veche.cluster.placement`), a participant of a room this process owns may have its media
on another process (:class:`Elsewhere` says where and carries the calls there), and this process
may run the media of a *guest*: a participant of a room owned elsewhere whose WebSocket reached
this process."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final, Protocol

from veche.ids import ParticipantId, RoomName
from veche.media.codecs import Decoders
from veche.media.internals import lighten_aiortc, patient_consent, read_in_bursts
from veche.media.peer import MediaConfig, MediaPeer
from veche.media.recorder import Recording
from veche.media.recvbuf import waiting_seconds
from veche.media.room import MediaRoom
from veche.media.subscribe import ShownVideos
from veche.media.tracks import Uptrack
from veche.media.udpstats import READS, UdpStats
from veche.protocol import Answer, Candidate, Offer, ServerMessage, View
from veche.tasks import cancel_and_wait

__all__ = ["Elsewhere", "Layers", "MediaRooms"]

Layers = dict[str, str | int | None]
"""One simulcast video a participant is sent: whose, its source, the layer's rid, width and
bitrate (see :attr:`veche.media.subscribe.SubscribeLeg.layers`)."""

log = logging.getLogger(__name__)

SPEAKER_INTERVAL: Final = 0.25
"""Seconds between two looks at who is speaking."""


class Elsewhere(Protocol):
    """The media of participants on other processes (see
    :class:`veche.cluster.placement.Placement`)."""

    def node_of(self, room: RoomName, participant_id: ParticipantId) -> str | None:
        """The other process that is to run this participant's media; ``None``: this one."""

    def join(
        self,
        node: str,
        room: RoomName,
        participant_id: ParticipantId,
        receive_codecs: list[str] | None,
        address: str | None,
    ) -> None: ...

    def leave(self, node: str, participant_id: ParticipantId) -> None: ...

    def forwarding(
        self, node: str, participant_id: ParticipantId, *, audio: bool, video: bool, screen: bool
    ) -> None: ...

    def frame(
        self, node: str, participant_id: ParticipantId, message: Offer | Answer | Candidate | View
    ) -> None:
        """A media frame of a participant whose media runs on ``node``: pass it on."""

    def changed(self, room: RoomName) -> None:
        """Who is in ``room``'s media here or elsewhere changed."""


class MediaRooms:
    """The media rooms of this server.

    ``send(participant_id, message)`` delivers a server message to one participant;
    ``on_speaker(room, participant_id)`` is called when a room's active speaker changes.
    """

    def __init__(
        self,
        config: MediaConfig,
        send: Callable[[ParticipantId, ServerMessage], None],
        *,
        on_speaker: Callable[[RoomName, str | None], None] = lambda room, participant: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        lighten_aiortc()
        patient_consent()
        read_in_bursts()
        self._send = send
        self._on_speaker = on_speaker
        self._clock = clock
        self.rooms: dict[RoomName, MediaRoom] = {}
        self._room_of: dict[ParticipantId, RoomName] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._speaker_task: asyncio.Task[None] | None = None
        self._udp = UdpStats()
        self.elsewhere: Elsewhere | None = None
        self.placed: dict[ParticipantId, tuple[RoomName, str]] = {}
        """Participants of this process's rooms whose media runs on another process (node)."""
        self._guests: dict[ParticipantId, Callable[[ServerMessage], None]] = {}
        """Participants of rooms owned elsewhere whose media runs here, and how to reach them."""
        self._reports: dict[ParticipantId, tuple[dict[str, int], list[Layers]]] = {}
        """What each placed participant is sent, as the process running its media last said."""

    @property
    def peers(self) -> list[MediaPeer]:
        """Every participant's media."""
        return [peer for room in self.rooms.values() for peer in room.members.values()]

    @property
    def peer_connection_count(self) -> int:
        """Peer connections open or still closing."""
        return sum(
            pc is not None for peer in self.peers for pc in (peer.publish_pc, peer.subscribe_pc)
        ) + len(self._closing)

    def join(
        self,
        room: RoomName,
        participant_id: ParticipantId,
        receive_codecs: list[str] | None = None,
        *,
        address: str | None = None,
    ) -> None:
        """Add a participant to ``room``'s media; ``receive_codecs`` are the MIME types it
        decodes (``None``: whatever is forwarded), ``address`` the client's network address
        (see ``max_pending_per_address``)."""
        elsewhere = self.elsewhere
        node = elsewhere.node_of(room, participant_id) if elsewhere is not None else None
        if elsewhere is not None and node is not None:
            self.placed[participant_id] = (room, node)
            elsewhere.join(node, room, participant_id, receive_codecs, address)
            elsewhere.changed(room)
            return
        media = self._room(room)
        self._room_of[participant_id] = room
        media.add(participant_id, Decoders.named(receive_codecs), address)
        if self._speaker_task is None or self._speaker_task.done():
            self._speaker_task = asyncio.ensure_future(self._watch_speakers())
        if elsewhere is not None:
            elsewhere.changed(room)

    def join_guest(
        self,
        room: RoomName,
        participant_id: ParticipantId,
        receive_codecs: list[str] | None,
        address: str | None,
        send: Callable[[ServerMessage], None],
    ) -> None:
        """Run the media of a participant of a room owned by another process here; ``send``
        reaches its client."""
        self._guests[participant_id] = send
        media = self._room(room)
        self._room_of[participant_id] = room
        media.add(participant_id, Decoders.named(receive_codecs), address)
        if self._speaker_task is None or self._speaker_task.done():
            self._speaker_task = asyncio.ensure_future(self._watch_speakers())

    def _deliver(self, participant_id: ParticipantId, message: ServerMessage) -> None:
        guest = self._guests.get(participant_id)
        if guest is not None:
            guest(message)
        else:
            self._send(participant_id, message)

    def where(self, participant_id: ParticipantId) -> str | None:
        """The other process (node) that runs a participant's media; ``None``: this one."""
        placed = self.placed.get(participant_id)
        return placed[1] if placed is not None else None

    def nodes_of(self, room: RoomName) -> set[str]:
        """The other processes that run media of ``room``'s participants."""
        return {node for name, node in self.placed.values() if name == room}

    def nodes_of_all(self) -> set[str]:
        """The other processes that run media of this process's rooms."""
        return {node for _, node in self.placed.values()}

    @property
    def member_count(self) -> int:
        """Participants whose media runs here (guests included)."""
        return len(self._room_of)

    def local_uptracks(self, room: RoomName) -> list[Uptrack]:
        """The tracks published to this process by members of ``room``."""
        media = self.rooms.get(room)
        if media is None:
            return []
        return [u for peer in media.members.values() for u in peer.uptracks if not u.closed]

    def add_piped(self, room: RoomName, uptrack: Uptrack) -> bool:
        """Offer a track piped from another process to ``room``'s members here; False if the
        room has no media here (yet)."""
        media = self.rooms.get(room)
        if media is None:
            return False
        media.add_piped(uptrack)
        return True

    def remove_piped(self, room: RoomName, uptrack: Uptrack) -> None:
        """A piped track ends: its viewers here lose it."""
        media = self.rooms.get(room)
        if media is not None:
            media.remove_piped(uptrack)

    def leave(self, participant_id: ParticipantId) -> None:
        """Remove a participant: its tracks leave every other member; its connections close in
        the background (see :meth:`close`)."""
        placed = self.placed.pop(participant_id, None)
        self._reports.pop(participant_id, None)
        if placed is not None and self.elsewhere is not None:
            self.elsewhere.leave(placed[1], participant_id)
            self.elsewhere.changed(placed[0])
            return
        self._guests.pop(participant_id, None)
        name = self._room_of.pop(participant_id, None)
        media = self.rooms.get(name) if name is not None else None
        if media is None:
            return
        media.remove(participant_id)
        self._drop_if_idle(media)
        if self.elsewhere is not None and name is not None:
            self.elsewhere.changed(name)

    def _room(self, name: RoomName) -> MediaRoom:
        media = self.rooms.get(name)
        if media is None:
            media = self.rooms[name] = MediaRoom(
                name,
                self.config,
                send=self._deliver,
                on_closed=self._close_later,
                clock=self._clock,
            )
        return media

    def _drop_if_idle(self, media: MediaRoom) -> None:
        if not media.members and media.recording is None:
            media.close()
            self.rooms.pop(media.name, None)

    def _close_later(self, peer: MediaPeer) -> None:
        task = asyncio.ensure_future(peer.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _member(self, participant_id: ParticipantId) -> tuple[MediaRoom, MediaPeer] | None:
        name = self._room_of.get(participant_id)
        media = self.rooms.get(name) if name is not None else None
        peer = media.members.get(participant_id) if media is not None else None
        return (media, peer) if media is not None and peer is not None else None

    async def handle(
        self, participant_id: ParticipantId, message: Offer | Answer | Candidate
    ) -> None:
        """Apply a participant's offer, answer or candidate."""
        placed = self.placed.get(participant_id)
        if placed is not None and self.elsewhere is not None:
            self.elsewhere.frame(placed[1], participant_id, message)
            return
        found = self._member(participant_id)
        if found is not None:
            await found[1].handle(message)

    def set_forwarding(
        self, participant_id: ParticipantId, *, audio: bool, video: bool, screen: bool
    ) -> None:
        """See :meth:`MediaRoom.set_forwarding`."""
        placed = self.placed.get(participant_id)
        if placed is not None and self.elsewhere is not None:
            self.elsewhere.forwarding(
                placed[1], participant_id, audio=audio, video=video, screen=screen
            )
            return
        found = self._member(participant_id)
        if found is not None:
            found[0].set_forwarding(participant_id, audio=audio, video=video, screen=screen)

    def set_view(self, participant_id: ParticipantId, shown: ShownVideos | None) -> None:
        """See :meth:`MediaRoom.set_view`."""
        placed = self.placed.get(participant_id)
        if placed is not None and self.elsewhere is not None:
            if shown is not None:
                tiles = [
                    {"participant_id": p, "source": s, "width": w, "height": h}
                    for (p, s), (w, h) in shown.items()
                ]
                view = View.model_validate({"tiles": tiles})
                self.elsewhere.frame(placed[1], participant_id, view)
            return
        found = self._member(participant_id)
        if found is not None:
            found[0].set_view(participant_id, shown)

    def receiving(self, participant_id: ParticipantId) -> dict[str, int]:
        """What a participant is sent now: audio and video tracks, and frames in all (for one
        whose media runs on another process, as that process last reported it)."""
        report = self._reports.get(participant_id)
        if report is not None:
            return report[0]
        found = self._member(participant_id)
        if found is None:
            return {"audio": 0, "video": 0, "frames": 0}
        return found[1].subscribing.receiving

    def layers(self, participant_id: ParticipantId) -> list[Layers]:
        """The simulcast layer a participant is sent of each simulcast video (reported, as
        :meth:`receiving`, for one whose media runs elsewhere)."""
        report = self._reports.get(participant_id)
        if report is not None:
            return report[1]
        found = self._member(participant_id)
        if found is None:
            return []
        return found[1].subscribing.layers

    def report(
        self, participant_id: ParticipantId, receiving: dict[str, int], layers: list[Layers]
    ) -> None:
        """What a participant whose media runs on another process is sent there now (that
        process tells, see :class:`veche.cluster.placement.Placement`)."""
        if participant_id in self.placed:
            self._reports[participant_id] = (receiving, layers)

    def guests(self) -> list[ParticipantId]:
        """Participants of rooms owned elsewhere whose media runs here."""
        return list(self._guests)

    def speaker(self, room: RoomName) -> str | None:
        """Who is speaking in ``room`` now, if anyone."""
        media = self.rooms.get(room)
        return media.speakers.current if media is not None else None

    async def _watch_speakers(self) -> None:
        """Every :data:`SPEAKER_INTERVAL`: choose the forwarded microphones and the active
        speakers, and feed the load governor how late this timer ran (the event loop's lag:
        every packet waits for the same loop), what its UDP sockets dropped and how long what
        waits in them would take to read."""
        loop = asyncio.get_running_loop()
        governor = self.config.governor
        drops: int | None = None
        while self.rooms:
            started = loop.time()
            read = READS.total
            await asyncio.sleep(SPEAKER_INTERVAL)
            ended = loop.time()
            lag = max(0.0, ended - started - SPEAKER_INTERVAL)
            now = self._clock()
            backlog = self._udp.read(ended)
            dropped = 0 if drops is None else max(0, backlog.drops - drops)
            drops = backlog.drops
            rate = (READS.total - read) / max(ended - started, 1e-3)
            changed = governor.observe(
                lag,
                now,
                dropped=dropped,
                queued=backlog.queued,
                waiting=waiting_seconds(backlog.queued, rate),
            )
            if changed:
                log.info(
                    "load governor",
                    extra={"level": governor.level, "lag": round(lag, 3), "dropped": dropped},
                )
            for name, media in list(self.rooms.items()):
                media.select_audio(now=now)
                before = media.speakers.current
                after = media.speakers.speaker(now=now)
                if after != before:
                    for peer in media.members.values():
                        peer.subscribing.set_speaker(after)
                    self._on_speaker(name, after)
                if changed or (after != before and governor.level):
                    media.govern()

    # ---------------------------------------------------------------- recording

    def start_recording(self, room: RoomName, recording: Recording) -> None:
        """Spool every track of ``room``, those published later included, to ``recording``."""
        self._room(room).start_recording(recording)

    def recording(self, room: RoomName) -> Recording | None:
        """The recording of ``room`` under way, if any."""
        media = self.rooms.get(room)
        return media.recording if media is not None else None

    @property
    def recorded_rooms(self) -> list[RoomName]:
        """Rooms being recorded."""
        return [name for name, media in self.rooms.items() if media.recording is not None]

    def stop_recording(self, room: RoomName) -> Recording | None:
        """Stop spooling ``room``; the recording, if there was one."""
        media = self.rooms.get(room)
        if media is None:
            return None
        recording = media.stop_recording()
        self._drop_if_idle(media)
        return recording

    async def close(self) -> None:
        """Close every participant's media and wait for all closes to finish."""
        for media in list(self.rooms.values()):
            media.close()
        self.rooms.clear()
        self._room_of.clear()
        self._guests.clear()
        await cancel_and_wait(self._speaker_task)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
