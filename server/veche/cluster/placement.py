"""Placement: where a participant's media runs (with ``pipes`` on): on the least-loaded process
of the machine its WebSocket reached, chosen by its room's owner.

A room's state (participants, moderation, chat) stays with its owner, as without pipes: the
owner's hub decides who is in the room and what each one forwards. What changes is where the
*media* of each participant runs. The owner's :class:`~veche.media.rooms.MediaRooms` asks
:meth:`Placement.node_of` for each participant joining its media, and the owner chooses among
the processes of the *edge*'s host (the edge: the process holding the participant's WebSocket;
a host: the processes one ``--workers`` parent started, or nodes whose ``host_id`` setting says
they share a machine; a node that says nothing is a host of its own, so its participants' media
stays on it). Every process publishes its load with its heartbeat (:mod:`veche.cluster.load`:
the share of its CPU it used lately, and the media it runs); the owner prefers a process that
already carries the room's media (no new pipe) while its load is under
``placement_threshold``, and past it the room *grows* onto the least-loaded process of the host
with room to spare (the least-loaded one of all when none has). Joins come in bursts, faster
than heartbeats: the placements this owner made in the last few seconds count on top of the
load the process last reported, each at what one participant costs there. The edge is
preferred on a near tie: it saves a hop.

Once chosen, the owner posts ``media_join`` to that process (naming the edge, where its
replies go), and later ``media_forwarding`` / ``media_leave``; the process runs the media as a
*guest*. Where the media runs on the edge, the edge keeps the client's ``offer`` / ``answer`` /
``candidate`` / ``view`` frames (:meth:`Placement.take`); where it runs on a third process, the
owner tells the edge so (``media_route``) and the edge passes those frames on to it
(``media_frame``), whose replies travel back to the edge as the owner's do (``server_frame``,
through the relay). A participant connected to the owner itself whose media goes elsewhere is
handled the same way, the owner acting as its edge. Frames that reach the owner anyway (before
the edge heard where to send them) are passed on by the owner. The owner tells every process of
the room's media which processes those are (``room_media``), and they pipe the room's tracks to
each other (:class:`~veche.cluster.pipes.PipeBroker`).

The admin API answers on the owner, which does not run a guest's media: the process running
it tells the owner what each guest is sent (``media_report``): within :data:`REPORT_INTERVAL`
seconds when its tracks or layers change, and every :data:`REPORT_REFRESH` seconds for its
frame count and bitrates, which always change (a lecture's hundreds of viewers must not keep
the bus busy for an admin view), so that ``veche admin room`` shows ``receiving`` and
``layers`` wherever the media runs.

A process that dies takes its own participants' media with it: a participant whose WebSocket
was on it resumes through another (as without pipes); one whose WebSocket is elsewhere is told
to reconnect (1012) by its owner and resumes, its media placed afresh on a live process; the
other processes drop the tracks that came from it. When the owner dies, its relayed clients are
closed with 1012, and the guests it had placed anywhere end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from veche.cluster.bus import BusUnavailable
from veche.cluster.envelopes import (
    MediaForwarding,
    MediaFrame,
    MediaJoin,
    MediaLeave,
    MediaReport,
    MediaRoute,
    PipeKey,
    RoomMedia,
    ToMedia,
    TrackPiped,
    TrackUnpiped,
)
from veche.cluster.membership import NodeInfo
from veche.cluster.pipes import PipeBroker
from veche.cluster.relay import Relay, RemoteOutlet
from veche.errors import VecheError
from veche.hub import Hub
from veche.ids import ParticipantId, RoomName
from veche.protocol import (
    Answer,
    Candidate,
    CloseCode,
    Error,
    Offer,
    ServerMessage,
    View,
    parse_client_message,
)
from veche.session import Session
from veche.tasks import cancel_and_wait, every

__all__ = ["REPORT_INTERVAL", "REPORT_REFRESH", "Placement", "choose", "estimate"]

log = logging.getLogger(__name__)

REPORT_INTERVAL: Final = 1.0
"""Seconds between two looks at what the guests here are sent, for their rooms' owners."""
REPORT_REFRESH: Final = 5.0
"""Seconds after which a guest's report is sent again though only counts and rates changed."""
REFRESH: Final = 1.0
"""Seconds between two reads of the processes' heartbeats (their loads)."""
RECENT: Final = 6.0
"""Seconds a placement counts on top of the load its process reports: a heartbeat's interval
plus the time the smoothed load takes to show a new participant's cost."""
DEFAULT_COST: Final = 0.05
"""What one participant is assumed to cost (a share of a process's CPU) where too few run to
tell: on the high side, so that a burst of joins spreads rather than piles up before the loads
show it."""
EDGE_BONUS: Final = 0.02
"""How much busier than another process the edge may be and still be chosen (no extra hop)."""
STALE: Final = 5.0
"""Seconds after which a process's last heartbeat (sent every 2 s) no longer counts."""
MAX_EARLY: Final = 64
"""Media frames kept for a participant whose ``media_join`` has not arrived yet (and such
participants kept at once)."""

_MEDIA_FRAMES: Final = (Offer, Answer, Candidate, View)


@dataclass(eq=False)
class _Guest:
    """A participant whose media runs here: its relayed session and how to reach its client."""

    participant: ParticipantId
    session: str
    owner: str
    edge: str
    inbox: asyncio.Queue[Offer | Answer | Candidate | View] = field(default_factory=asyncio.Queue)
    """Media frames passed on by its edge or owner, applied one at a time."""
    task: asyncio.Task[None] | None = None


def estimate(node: NodeInfo, recent: int) -> float:
    """``node``'s load with ``recent`` placements on it added that its load does not show yet,
    each at what one participant costs there (measured where enough run, else
    :data:`DEFAULT_COST`)."""
    each = node.cpu / node.media if node.media >= 3 and node.cpu > 0.05 else DEFAULT_COST
    return node.cpu + recent * each


def choose(
    nodes: dict[str, NodeInfo],
    edge: str,
    carrying: set[str],
    recent: dict[str, int],
    threshold: float,
) -> str:
    """The node to run the media of a participant whose WebSocket reached ``edge``: among the
    live ``nodes`` of ``edge``'s host that take new work, the least loaded (:func:`estimate`,
    with ``recent`` placements not shown in their loads yet) of those already ``carrying`` the
    room's media while under ``threshold``; else the least loaded under it; else, when every
    process of the host is past it, the least loaded process of *another* host (a node of the
    cluster) still under it, the same way (those carrying the room first); else the least
    loaded of the edge's host. The edge wins a near tie (:data:`EDGE_BONUS`): it saves a hop.
    An edge not among ``nodes`` (its heartbeat not read yet) keeps the media."""
    home = nodes.get(edge)
    if home is None:
        return edge
    live = [n for n in nodes.values() if not n.draining]
    load = {
        n.id: estimate(n, recent.get(n.id, 0)) - (EDGE_BONUS if n.id == edge else 0.0) for n in live
    }
    candidates = [n for n in live if n.host == home.host]
    if not candidates:
        return edge
    elsewhere = [n for n in live if n.host != home.host]
    for group in (candidates, elsewhere):
        pool = [n for n in group if n.id in carrying and load[n.id] < threshold]
        pool = pool or [n for n in group if load[n.id] < threshold]
        if pool:
            return min(pool, key=lambda n: (load[n.id], n.id != edge, n.id)).id
    return min(candidates, key=lambda n: (load[n.id], n.id != edge, n.id)).id


class Placement:
    """Where this node's participants' media run, both as a room's owner and as an edge or
    host of guests. ``threshold``: see ``placement_threshold``."""

    def __init__(
        self,
        relay: Relay,
        hub: Hub,
        broker: PipeBroker,
        *,
        threshold: float = 0.7,
        refresh: float = REFRESH,
    ) -> None:
        self.relay = relay
        self.hub = hub
        self.broker = broker
        self.cluster = relay.cluster
        self.node_id = relay.node_id
        self.threshold = threshold
        self._refresh = refresh
        self._guests: dict[str, _Guest] = {}
        """Participants whose media runs here, by relayed session id."""
        self._early: dict[str, list[str]] = {}
        """Media frames for a guest whose ``media_join`` is still on its way, by participant."""
        self._routes: dict[str, tuple[str, ParticipantId]] = {}
        """Edge side: relayed sessions whose media runs on a third process: which, and their
        participant (the edge does not know it otherwise: the owner admitted it)."""
        self._told: dict[RoomName, set[str]] = {}
        """The nodes each room's media was last said to be on (owner side)."""
        self._nodes: dict[str, NodeInfo] = {}
        """The live nodes as their last heartbeats said (owner side; read every second)."""
        self._recent: dict[str, list[float]] = {}
        """(Monotonic) times of this owner's placements on each node in the last seconds."""
        self._local: dict[ParticipantId, str] = {}
        """Owner side: participants connected here whose media runs elsewhere, and the
        relayed session id their replies come back under."""
        self._gone: set[str] = set()
        """Nodes found dead: nothing more is placed on them."""
        self.placements: Counter[str] = Counter()
        """Participants' media placed by this owner, by node (its own id included)."""
        self.passed_on: Counter[str] = Counter()
        """Media frames passed on to the process running the media, by who passed them:
        ``edge`` (straight from the WebSocket's process), ``owner`` (through the room's)."""
        self._reported: dict[ParticipantId, tuple[MediaReport, float]] = {}
        """What was last reported of each guest, and when (edge side)."""
        self._task: asyncio.Task[None] | None = None
        self._report_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._read_forever(), name="placement-loads")
        self._report_task = asyncio.create_task(
            every(REPORT_INTERVAL, self.report, "media report"), name="media-reports"
        )

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await cancel_and_wait(self._report_task)
        for guest in self._guests.values():
            await cancel_and_wait(guest.task)

    async def _read_forever(self) -> None:
        while True:
            try:
                self._nodes = await self.cluster.nodes()
            except BusUnavailable:
                pass  # the bus logs it; the loads last read stand until it answers
            except Exception:  # a bad reply must not stop placement for good
                log.exception("reading the processes' loads failed")
            await asyncio.sleep(self._refresh)

    # ------------------------------------------------------------------ owner side

    def node_of(self, room: RoomName, participant_id: ParticipantId) -> str | None:
        """Choose where a participant joining ``room``'s media runs it: another node's id,
        or ``None`` for this one (see the module docstring)."""
        session = self.hub.session_of(participant_id)
        outlet = session.outlet if session is not None else None
        edge = outlet.edge_node if isinstance(outlet, RemoteOutlet) else self.node_id
        node = self._choose(room, edge)
        self.placements[node] += 1
        self._recent.setdefault(node, []).append(time.monotonic())
        return None if node == self.node_id else node

    def _choose(self, room: RoomName, edge: str) -> str:
        # A heartbeat older than STALE: that process may be gone (its key outlives it for a
        # few seconds). The processes of one host share its clock.
        fresh = time.time() - STALE
        nodes = {n.id: n for n in self._nodes.values() if n.at >= fresh and n.id not in self._gone}
        nodes[self.node_id] = self.cluster.describe()
        now = time.monotonic()
        recent = {}
        for node, times in list(self._recent.items()):
            self._recent[node] = [t for t in times if now - t < RECENT]
            recent[node] = len(self._recent[node])
        return choose(nodes, edge, self._carrying(room), recent, self.threshold)

    def _carrying(self, room: RoomName) -> set[str]:
        """The nodes that run some of ``room``'s media now."""
        media = self.hub.media
        nodes = media.nodes_of(room)
        local = media.rooms.get(room)
        if local is not None and local.members:
            nodes.add(self.node_id)
        return nodes

    def join(
        self,
        node: str,
        room: RoomName,
        participant_id: ParticipantId,
        receive_codecs: list[str] | None,
        address: str | None,
    ) -> None:
        session = self.hub.session_of(participant_id)
        if session is None:
            return
        outlet = session.outlet
        if isinstance(outlet, RemoteOutlet):
            edge, session_id = outlet.edge_node, outlet.session_id
            if edge != node:
                self.relay.post(
                    edge, MediaRoute(session=session_id, participant=participant_id, node=node)
                )
        else:
            edge, session_id = self.node_id, self.relay.link_local(outlet)
            self._local[participant_id] = session_id
        self.relay.post(
            node,
            MediaJoin(
                session=session_id,
                room=room,
                participant=participant_id,
                receive_codecs=receive_codecs,
                address=address,
                edge=edge,
                owner=self.node_id,
            ),
        )

    def leave(self, node: str, participant_id: ParticipantId) -> None:
        self.relay.post(node, MediaLeave(participant=participant_id))
        session_id = self._local.pop(participant_id, None)
        if session_id is not None:
            self.relay.unlink_local(session_id)
            return
        session = self.hub.session_of(participant_id)
        outlet = session.outlet if session is not None else None
        if isinstance(outlet, RemoteOutlet) and outlet.edge_node != node:
            self.relay.post(
                outlet.edge_node,
                MediaRoute(session=outlet.session_id, participant=participant_id, node=None),
            )

    def forwarding(
        self, node: str, participant_id: ParticipantId, *, audio: bool, video: bool, screen: bool
    ) -> None:
        self.relay.post(
            node,
            MediaForwarding(participant=participant_id, audio=audio, video=video, screen=screen),
        )

    def frame(
        self, node: str, participant_id: ParticipantId, message: Offer | Answer | Candidate | View
    ) -> None:
        """A media frame of a participant whose media runs on ``node`` reached this owner:
        pass it on."""
        self.passed_on["owner"] += 1
        self.relay.post(
            node, MediaFrame(participant=participant_id, text=message.model_dump_json())
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
        """Handle a relayed client's media frame here if its media runs here, or send it
        straight to the process that runs it; whether it did either."""
        guest = self._guests.get(session_id)
        route = self._routes.get(session_id)
        if guest is None and route is None:
            return False
        try:
            message = parse_client_message(text)
        except VecheError:
            return False  # its room's node answers it, as any bad frame
        if not isinstance(message, _MEDIA_FRAMES):
            return False
        if guest is not None:
            await self._apply(guest.participant, message, session.outlet.send)
        elif route is not None:
            self.passed_on["edge"] += 1
            self.relay.post(route[0], MediaFrame(participant=route[1], text=text))
        return True

    async def _apply(
        self,
        participant_id: ParticipantId,
        message: Offer | Answer | Candidate | View,
        reply: Callable[[ServerMessage], None],
    ) -> None:
        media = self.hub.media
        match message:
            case Offer() | Answer() | Candidate():
                try:
                    await media.handle(participant_id, message)
                except VecheError as exc:
                    reply(Error(code=exc.code, message=exc.message, ref=exc.ref))
            case View():
                shown: dict[tuple[str, str], tuple[int, int]] = {
                    (t.participant_id, t.source): (t.width, t.height) for t in message.tiles
                }
                media.set_view(participant_id, shown)

    def report(self) -> None:
        """Tell each guest's room owner what the guest is sent now, if its tracks or layers
        changed or the last report is :data:`REPORT_REFRESH` seconds old."""
        media = self.hub.media
        now = asyncio.get_running_loop().time()
        for guest in self._guests.values():
            owner, participant_id = guest.owner, guest.participant
            if owner == self.node_id:
                continue  # its room is here: the admin API reads the media directly
            report = MediaReport(
                participant=participant_id,
                receiving=media.receiving(participant_id),
                layers=media.layers(participant_id),
            )
            last = self._reported.get(participant_id)
            if last is None or _shape(last[0]) != _shape(report) or now - last[1] >= REPORT_REFRESH:
                self._reported[participant_id] = (report, now)
                self.relay.post(owner, report)
        for gone in self._reported.keys() - {g.participant for g in self._guests.values()}:
            del self._reported[gone]

    def ended(self, session_id: str) -> None:
        """A relayed client's connection ended: its media here ends with it."""
        self._routes.pop(session_id, None)
        guest = self._guests.get(session_id)
        if guest is not None:
            self._drop(guest)

    # ------------------------------------------------------------------ liveness

    def watched(self) -> set[str]:
        """The other nodes this one depends on for media: those running media of its rooms,
        and the owners and edges of its guests."""
        nodes = set(self.hub.media.nodes_of_all())
        for guest in self._guests.values():
            nodes |= {guest.owner, guest.edge}
        nodes.discard(self.node_id)
        return nodes

    def lost(self, node: str) -> None:
        """``node`` died: nothing more is placed there; its guests here end; the participants
        of this node's rooms whose media ran there but whose WebSocket is elsewhere are told to
        reconnect (their media is placed afresh when they resume)."""
        self._gone.add(node)
        self._nodes.pop(node, None)
        for guest in list(self._guests.values()):
            if node in (guest.owner, guest.edge):
                self._drop(guest)
        for participant_id, where in list(self.hub.media.placed.items()):
            if where[1] != node:
                continue
            session = self.hub.session_of(participant_id)
            outlet = session.outlet if session is not None else None
            if session is None or (isinstance(outlet, RemoteOutlet) and outlet.edge_node == node):
                continue  # its connection went with the node: the relay handles that
            log.warning(
                "media process went away", extra={"participant": participant_id, "node": node}
            )
            session.outlet.close(CloseCode.SERVICE_RESTART, "the meeting's media server went away")

    # ------------------------------------------------------------------ both

    def handle(self, envelope: ToMedia) -> None:
        match envelope:
            case MediaJoin():
                self._join_guest(envelope)
            case MediaLeave():
                participant_id = ParticipantId(envelope.participant)
                self._early.pop(participant_id, None)
                for guest in list(self._guests.values()):
                    if guest.participant == participant_id:
                        self._drop(guest)
            case MediaForwarding():
                self.hub.media.set_forwarding(
                    ParticipantId(envelope.participant),
                    audio=envelope.audio,
                    video=envelope.video,
                    screen=envelope.screen,
                )
            case MediaRoute():
                if envelope.node is None:
                    self._routes.pop(envelope.session, None)
                elif self.relay.outlet_of(envelope.session) is not None:
                    participant = ParticipantId(envelope.participant)
                    self._routes[envelope.session] = (envelope.node, participant)
            case MediaFrame():
                target = self._guest_of(ParticipantId(envelope.participant))
                if target is None:
                    if len(self._early) >= MAX_EARLY and envelope.participant not in self._early:
                        return  # a flood for participants that never come: not kept
                    early = self._early.setdefault(envelope.participant, [])
                    if len(early) < MAX_EARLY:
                        early.append(envelope.text)
                    return
                self._frame(target, envelope.text)
            case MediaReport():
                self.hub.media.report(
                    ParticipantId(envelope.participant), envelope.receiving, envelope.layers
                )
            case RoomMedia() | PipeKey() | TrackPiped() | TrackUnpiped():
                self.broker.handle(envelope)

    def _guest_of(self, participant_id: ParticipantId) -> _Guest | None:
        return next((g for g in self._guests.values() if g.participant == participant_id), None)

    def _reply(self, guest: _Guest) -> Callable[[ServerMessage], None]:
        """How the media here reaches a guest's client."""
        if guest.edge == self.node_id:
            outlet = self.relay.outlet_of(guest.session)
            return outlet.send if outlet is not None else (lambda message: None)
        return RemoteOutlet(self.relay, guest.edge, guest.session).send

    def _join_guest(self, envelope: MediaJoin) -> None:
        edge = envelope.edge or self.node_id
        if edge == self.node_id and self.relay.outlet_of(envelope.session) is None:
            return  # the client left meanwhile
        participant_id = ParticipantId(envelope.participant)
        previous = self._guest_of(participant_id)
        if previous is not None:
            self._drop(previous)
        guest = _Guest(participant_id, envelope.session, envelope.owner or edge, edge)
        self._guests[envelope.session] = guest
        self.hub.media.join_guest(
            RoomName(envelope.room),
            participant_id,
            envelope.receive_codecs,
            envelope.address,
            self._reply(guest),
        )
        log.info(
            "media placed here",
            extra={"room": envelope.room, "participant": envelope.participant, "edge": edge},
        )
        for text in self._early.pop(participant_id, []):
            self._frame(guest, text)

    def _frame(self, guest: _Guest, text: str) -> None:
        """Apply a media frame its edge (or owner) passed on for a guest here, in order."""
        try:
            message = parse_client_message(text)
        except VecheError:
            return
        if not isinstance(message, _MEDIA_FRAMES):
            return
        guest.inbox.put_nowait(message)
        if guest.task is None:
            guest.task = asyncio.create_task(self._serve_guest(guest))

    async def _serve_guest(self, guest: _Guest) -> None:
        reply = self._reply(guest)
        while True:
            message = await guest.inbox.get()
            await self._apply(guest.participant, message, reply)

    def _drop(self, guest: _Guest) -> None:
        """A guest's media here ends."""
        self._guests.pop(guest.session, None)
        if guest.task is not None:
            guest.task.cancel()
        self.hub.media.leave(guest.participant)


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
