"""Placement: a participant's media runs on the process its WebSocket reached, not on its
room's owner (with ``pipes`` on).

A room's state (participants, moderation, chat) stays with its owner, as without pipes: the
owner's hub decides who is in the room and what each one forwards. What changes is where the
*media* of a participant whose signalling is relayed (see :mod:`veche.cluster.relay`) runs: on
its edge node, which spreads one large meeting over every process its clients reached (the
kernel's ``SO_REUSEPORT`` spreads them over the workers of a machine; a load balancer over
nodes) instead of piling it on the owner's one core.

The owner's :class:`~veche.media.rooms.MediaRooms` asks :meth:`Placement.node_of` for each
participant joining its media; for a relayed one it sends the edge ``media_join`` (and later
``media_forwarding``, ``media_leave``) instead of starting the media itself. The edge runs it as
a *guest* and keeps the client's ``offer`` / ``answer`` / ``candidate`` / ``view`` frames
(:meth:`Placement.take`) instead of relaying them; the replies go straight to the client. The
owner tells every node of the room's media which nodes those are (``room_media``), and the
nodes pipe the room's tracks to each other (:class:`~veche.cluster.pipes.PipeBroker`).

The admin API answers on the owner, which does not run a guest's media: the edge tells it what
each guest is sent (``media_report``): within :data:`REPORT_INTERVAL` seconds when its tracks or
layers change, and every :data:`REPORT_REFRESH` seconds for its frame count and bitrates, which
always change (a lecture's hundreds of viewers must not keep the bus busy for an admin view), so
that ``veche admin room`` shows ``receiving`` and ``layers`` wherever the media runs.

A node that dies takes its own participants' media with it: the owner's relay treats their
sessions as lost (they resume, through any node, as without pipes) and the other nodes drop
the tracks that came from it. When the owner dies, its relayed clients are closed with 1012 and
their media here ends with their connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from veche.cluster.envelopes import (
    MediaForwarding,
    MediaJoin,
    MediaLeave,
    MediaReport,
    PipeKey,
    RoomMedia,
    ToMedia,
    TrackPiped,
    TrackUnpiped,
)
from veche.cluster.pipes import PipeBroker
from veche.cluster.relay import Relay, RemoteOutlet
from veche.errors import VecheError
from veche.hub import Hub
from veche.ids import ParticipantId, RoomName
from veche.protocol import Answer, Candidate, Offer, View, parse_client_message
from veche.session import Session
from veche.tasks import cancel_and_wait

__all__ = ["REPORT_INTERVAL", "REPORT_REFRESH", "Placement"]

log = logging.getLogger(__name__)

REPORT_INTERVAL: Final = 1.0
"""Seconds between two looks at what the guests here are sent, for their rooms' owners."""
REPORT_REFRESH: Final = 5.0
"""Seconds after which a guest's report is sent again though only counts and rates changed."""


class Placement:
    """Where this node's participants' media run, both as a room's owner and as an edge."""

    def __init__(self, relay: Relay, hub: Hub, broker: PipeBroker) -> None:
        self.relay = relay
        self.hub = hub
        self.broker = broker
        self.node_id = relay.node_id
        self._guests: dict[str, ParticipantId] = {}
        """Relayed sessions whose participant's media runs here, by relayed session id."""
        self._told: dict[RoomName, set[str]] = {}
        """The nodes each room's media was last said to be on (owner side)."""
        self._reported: dict[ParticipantId, tuple[MediaReport, float]] = {}
        """What was last reported of each guest, and when (edge side)."""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._report_forever(), name="media-reports")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    # ------------------------------------------------------------------ owner side

    def node_of(self, participant_id: ParticipantId) -> str | None:
        session = self.hub.session_of(participant_id)
        outlet = session.outlet if session is not None else None
        return outlet.edge_node if isinstance(outlet, RemoteOutlet) else None

    def join(
        self,
        node: str,
        room: RoomName,
        participant_id: ParticipantId,
        receive_codecs: list[str] | None,
        address: str | None,
    ) -> None:
        session = self.hub.session_of(participant_id)
        outlet = session.outlet if session is not None else None
        if not isinstance(outlet, RemoteOutlet):
            return
        self.relay.post(
            node,
            MediaJoin(
                session=outlet.session_id,
                room=room,
                participant=participant_id,
                receive_codecs=receive_codecs,
                address=address,
            ),
        )

    def leave(self, node: str, participant_id: ParticipantId) -> None:
        self.relay.post(node, MediaLeave(participant=participant_id))

    def forwarding(
        self, node: str, participant_id: ParticipantId, *, audio: bool, video: bool, screen: bool
    ) -> None:
        self.relay.post(
            node,
            MediaForwarding(participant=participant_id, audio=audio, video=video, screen=screen),
        )

    def changed(self, room: RoomName) -> None:
        """Tell every node of ``room``'s media (and those that were, but no longer are) which
        nodes it is on now."""
        media = self.hub.media
        nodes = media.nodes_of(room)
        local = media.rooms.get(room)
        if local is not None and local.members and room in self.hub.rooms.names:
            nodes.add(self.node_id)
        before = self._told.get(room, set())
        if nodes == before:
            return
        if nodes:
            self._told[room] = nodes
        else:
            self._told.pop(room, None)
        message = RoomMedia(room=room, nodes=sorted(nodes))
        for node in nodes | before:
            if node == self.node_id:
                self.broker.room_media(room, set(nodes))
            else:
                self.relay.post(node, message)

    # ------------------------------------------------------------------ edge side

    async def take(self, session: Session, session_id: str, text: str) -> bool:
        """Handle a relayed client's media frame here if its media runs here; whether it did."""
        participant_id = self._guests.get(session_id)
        if participant_id is None:
            return False
        try:
            message = parse_client_message(text)
        except VecheError:
            return False  # its room's node answers it, as any bad frame
        media = self.hub.media
        match message:
            case Offer() | Answer() | Candidate():
                try:
                    await media.handle(participant_id, message)
                except VecheError as exc:
                    self.hub.refuse(session, exc)
                return True
            case View():
                shown: dict[tuple[str, str], tuple[int, int]] = {
                    (t.participant_id, t.source): (t.width, t.height) for t in message.tiles
                }
                media.set_view(participant_id, shown)
                return True
            case _:
                return False

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            try:
                self.report()
            except Exception:  # one bad round must not end the reports
                log.exception("media report failed")

    def report(self) -> None:
        """Tell each guest's room owner what the guest is sent now, if its tracks or layers
        changed or the last report is :data:`REPORT_REFRESH` seconds old."""
        media = self.hub.media
        now = asyncio.get_running_loop().time()
        for session_id, participant_id in self._guests.items():
            owner = self.relay.owner_of(session_id)
            if owner is None:
                continue
            report = MediaReport(
                participant=participant_id,
                receiving=media.receiving(participant_id),
                layers=media.layers(participant_id),
            )
            last = self._reported.get(participant_id)
            if last is None or _shape(last[0]) != _shape(report) or now - last[1] >= REPORT_REFRESH:
                self._reported[participant_id] = (report, now)
                self.relay.post(owner, report)
        for gone in self._reported.keys() - set(self._guests.values()):
            del self._reported[gone]

    def ended(self, session_id: str) -> None:
        """A relayed client's connection ended: its media here ends with it."""
        participant_id = self._guests.pop(session_id, None)
        if participant_id is not None:
            self.hub.media.leave(participant_id)

    # ------------------------------------------------------------------ both

    def handle(self, envelope: ToMedia) -> None:
        media = self.hub.media
        match envelope:
            case MediaJoin():
                link = self.relay.outlet_of(envelope.session)
                if link is None:
                    return  # the client left meanwhile
                participant_id = ParticipantId(envelope.participant)
                previous = next((s for s, p in self._guests.items() if p == participant_id), None)
                if previous is not None:
                    self._guests.pop(previous)
                    media.leave(participant_id)
                self._guests[envelope.session] = participant_id
                media.join_guest(
                    RoomName(envelope.room),
                    participant_id,
                    envelope.receive_codecs,
                    envelope.address,
                    link.send,
                )
                log.info(
                    "media placed here",
                    extra={"room": envelope.room, "participant": envelope.participant},
                )
            case MediaLeave():
                participant_id = ParticipantId(envelope.participant)
                for session_id, guest in list(self._guests.items()):
                    if guest == participant_id:
                        del self._guests[session_id]
                        media.leave(participant_id)
            case MediaForwarding():
                media.set_forwarding(
                    ParticipantId(envelope.participant),
                    audio=envelope.audio,
                    video=envelope.video,
                    screen=envelope.screen,
                )
            case MediaReport():
                media.report(
                    ParticipantId(envelope.participant), envelope.receiving, envelope.layers
                )
            case RoomMedia() | PipeKey() | TrackPiped() | TrackUnpiped():
                self.broker.handle(envelope)


def _shape(report: MediaReport) -> tuple[object, ...]:
    """What of a report is news: the tracks sent and each video's layer, not the frame count
    or bitrates (they change all the time)."""
    receiving = report.receiving
    return (
        receiving.get("audio"),
        receiving.get("video"),
        tuple(
            (v.get("from"), v.get("source"), v.get("layer"), v.get("width")) for v in report.layers
        ),
    )
