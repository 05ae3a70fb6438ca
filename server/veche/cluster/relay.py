"""The relay: signalling between the node a client is connected to and the node that owns its
room.

A client may reach any node (the load balancer picks); its room lives on one node (see
:mod:`veche.cluster.membership`). The WebSocket edge hands every text frame to
:meth:`Relay.accept`, which decides at the client's ``hello`` where its room is. When that is
another node, this *edge* node keeps the WebSocket (limits, rate, keepalive stay here) and
forwards every frame from ``hello`` on to the *owner* node over the bus; the owner runs them
through its hub exactly as for a local client, behind a :class:`RemoteOutlet`, and sends every
reply back. Media never takes this path: the client's peer connections go straight to the
owner's address (with ``pipes``, to the process :mod:`veche.cluster.placement` chose, which
answers the client's media frames through the edge the same way).

Envelopes (:mod:`veche.cluster.envelopes`) travel in batches on the channel
``veche:to:<node id>``: ``open_session`` / ``client_frame`` / ``session_closed`` from edge to
owner, ``server_frame`` / ``close_session`` from owner to edge. Each node publishes to each other
node in order, from one queue. A node that stops sending heartbeats is noticed within a few
seconds: an edge closes the clients whose room was there with 1012 (they reconnect, and the room
starts again on a live node); an owner treats the sessions relayed by a dead edge as lost
connections (their participants may resume through another node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol, assert_never

from veche.cluster.bus import Bus, BusUnavailable, Subscription
from veche.cluster.envelopes import (
    ClientFrame,
    CloseSession,
    MediaForwarding,
    MediaFrame,
    MediaJoin,
    MediaLeave,
    MediaReport,
    MediaRoute,
    OpenSession,
    PipeKey,
    RelayedIdentity,
    RoomMedia,
    ServerFrame,
    SessionClosed,
    ToEdge,
    ToMedia,
    ToOwner,
    TrackPiped,
    TrackUnpiped,
    decode_batch,
    encode_batch,
)
from veche.cluster.membership import Cluster
from veche.errors import ErrorCode, VecheError
from veche.hub import Hub
from veche.logs import CONNECTION
from veche.outlet import Outlet
from veche.protocol import (
    CloseCode,
    Error,
    Hello,
    LeaveReason,
    ServerMessage,
    encode,
    parse_client_message,
)
from veche.rooms import normalize_room_name
from veche.session import Session

__all__ = ["MediaHandler", "Relay", "RemoteOutlet", "channel"]

log = logging.getLogger(__name__)

WATCH_INTERVAL: Final = 2.0
"""Seconds between checks that the nodes at the other end of relayed sessions are alive."""

MAX_BATCH: Final = 512
"""Most envelopes published to one node in one message."""

UNAVAILABLE_TEXT: Final = "the meeting's server cannot be reached right now; try again shortly"


def channel(node_id: str) -> str:
    """The bus channel a node listens on."""
    return f"veche:to:{node_id}"


_Posted = tuple[ToOwner | ToEdge | ToMedia, Callable[[], None] | None]


class MediaHandler(Protocol):
    """Where a relayed participant's media runs, and the pipes (see
    :class:`veche.cluster.placement.Placement`): the relay hands it media envelopes, and the
    frames of relayed clients first (it keeps those of a participant whose media is here)."""

    def handle(self, envelope: ToMedia) -> None: ...

    async def take(self, session: Session, session_id: str, text: str) -> bool: ...

    def ended(self, session_id: str) -> None: ...

    def watched(self) -> set[str]: ...

    def lost(self, node: str) -> None: ...


"""An envelope waiting to be published, and what to do if it cannot be (if anything)."""


@dataclass(eq=False)
class _Link:
    """A client connected here whose room is on ``owner``."""

    owner: str
    outlet: Outlet


@dataclass(eq=False)
class RemoteOutlet:
    """The hub's outlet for a client connected to another node."""

    relay: Relay
    edge_node: str
    session_id: str

    def send(self, message: ServerMessage) -> None:
        self.send_text(encode(message))

    def send_text(self, text: str) -> None:
        self.relay._post(self.edge_node, ServerFrame(session=self.session_id, text=text))

    def close(self, code: CloseCode, reason: str) -> None:
        self.relay._post(
            self.edge_node, CloseSession(session=self.session_id, code=code, reason=reason)
        )


@dataclass(eq=False)
class _Remote:
    """A session relayed to this node: its hub session and its messages, handled in order."""

    session: Session
    inbox: asyncio.Queue[str | tuple[LeaveReason]] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


class Relay:
    """Both ends of relayed signalling for this node. ``watch_interval``: seconds between
    checks that the nodes at the other end of relayed sessions still send heartbeats (missing
    at two checks in a row: dead)."""

    def __init__(
        self, bus: Bus, cluster: Cluster, hub: Hub, *, watch_interval: float = WATCH_INTERVAL
    ) -> None:
        self.bus = bus
        self.cluster = cluster
        self.hub = hub
        self.node_id = cluster.node_id
        self._links: dict[str, _Link] = {}
        """Clients connected here whose room is elsewhere, by relayed session id."""
        self._relayed: dict[Session, str] = {}
        """The same clients' hub sessions on this node, with their relayed session ids."""
        self._remotes: dict[tuple[str, str], _Remote] = {}
        self._queues: dict[str, asyncio.Queue[_Posted]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._subscription: Subscription | None = None
        self._watch: asyncio.Task[None] | None = None
        self._watch_interval = watch_interval
        self._next_session = 0
        self._dead: set[str] = set()
        """Nodes found dead: nothing is sent to them any more (a restarted node has a new id)."""
        self._missing: set[str] = set()
        """Nodes found without a heartbeat at the last check (two checks in a row: dead)."""
        self.media: MediaHandler | None = None
        """With ``pipes`` on: media of relayed participants run here, and pipes."""

    async def start(self) -> None:
        self._subscription = self.bus.subscribe(channel(self.node_id), self._receive)
        self._watch = asyncio.create_task(self._watch_forever(), name="relay-watch")

    async def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.cancel()
        tasks = [t for t in (self._watch, *self._senders.values()) if t is not None]
        tasks += [r.task for r in self._remotes.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ edge side

    async def accept(self, session: Session, text: str) -> None:
        """Act on one text frame of a client connected to this node.

        A ``hello`` (the first one that joins) decides where the client's room is: on this node,
        its frames go to this node's hub; on another, this and every later frame goes there
        (``unavailable`` when the cluster cannot say where). A refused frame is answered with
        an ``error`` by the node that refused it.
        """
        relayed = self._relayed.get(session)
        if relayed is not None:
            if self.media is None or not await self.media.take(session, relayed, text):
                self._forward(relayed, text)
            return
        try:
            message = parse_client_message(text)
            if isinstance(message, Hello) and session.participant is None:
                owner = await self._route(normalize_room_name(message.room))
                if owner != self.node_id:
                    self._forward(self._open(session, owner), text)
                    return
            await self.hub.handle(session, message)
        except VecheError as exc:
            self.hub.refuse(session, exc)

    def carries(self, session: Session) -> bool:
        """Whether ``session``'s signalling goes to another node (its room is there)."""
        return session in self._relayed

    def disconnect(self, session: Session, reason: LeaveReason) -> None:
        """A client connected to this node is gone; its room's node hears why, if it is
        another."""
        session_id = self._relayed.pop(session, None)
        if session_id is not None:
            if self.media is not None:
                self.media.ended(session_id)
            owner = self._links.pop(session_id).owner
            self._post(owner, SessionClosed(session=session_id, edge=self.node_id, reason=reason))

    async def _route(self, room: str) -> str:
        """The node that owns ``room`` (this one, or another). Raises
        :class:`~veche.errors.VecheError` with ``unavailable`` when the cluster cannot say."""
        try:
            return await self.cluster.owner_of(room)
        except BusUnavailable:
            raise VecheError(UNAVAILABLE_TEXT, code=ErrorCode.UNAVAILABLE) from None

    def _open(self, session: Session, owner: str) -> str:
        """Start carrying ``session``'s signalling to ``owner``; the relayed session id."""
        self._next_session += 1
        session_id = f"{self.node_id}/{self._next_session}"
        self._links[session_id] = _Link(owner, session.outlet)
        self._relayed[session] = session_id
        identity = session.identity
        self._post(
            owner,
            OpenSession(
                session=session_id,
                edge=self.node_id,
                remote=session.remote,
                browser_session=session.browser_session,
                identity=None if identity is None else RelayedIdentity.of(identity),
            ),
        )
        return session_id

    def _forward(self, session_id: str, text: str) -> None:
        """Pass one text frame of a relayed client on to its room's node."""
        link = self._links.get(session_id)
        if link is None:
            return

        def failed() -> None:
            link.outlet.send(Error(code=ErrorCode.UNAVAILABLE, message=UNAVAILABLE_TEXT))

        self._post(
            link.owner, ClientFrame(session=session_id, edge=self.node_id, text=text), failed
        )

    # ------------------------------------------------------------------ both sides

    def _receive(self, data: bytes) -> None:
        for envelope in decode_batch(data):
            self._handle(envelope)

    def link_local(self, outlet: Outlet) -> str:
        """A relayed session id for a client connected here whose room is here too, so that
        another node running its media can reach it (``server_frame``)."""
        self._next_session += 1
        session_id = f"{self.node_id}/{self._next_session}"
        self._links[session_id] = _Link(self.node_id, outlet)
        return session_id

    def unlink_local(self, session_id: str) -> None:
        """Forget a session id given by :meth:`link_local`."""
        self._links.pop(session_id, None)

    def outlet_of(self, session_id: str) -> Outlet | None:
        """The connection of a client on this node whose room is elsewhere."""
        link = self._links.get(session_id)
        return link.outlet if link is not None else None

    def owner_of(self, session_id: str) -> str | None:
        """The node owning the room of a client on this node whose room is elsewhere."""
        link = self._links.get(session_id)
        return link.owner if link is not None else None

    def _handle(self, envelope: ToOwner | ToEdge | ToMedia) -> None:
        match envelope:
            case ServerFrame() | CloseSession():
                link = self._links.get(envelope.session)
                if link is None:
                    return  # the client's connection ended meanwhile
                if isinstance(envelope, ServerFrame):
                    link.outlet.send_text(envelope.text)
                else:
                    link.outlet.close(envelope.code, envelope.reason)
            case OpenSession():
                self._open_remote(envelope)
            case ClientFrame() | SessionClosed():
                remote = self._remotes.get((envelope.edge, envelope.session))
                if remote is None:
                    return  # its session ended here already (or never started: a lost open)
                if isinstance(envelope, ClientFrame):
                    remote.inbox.put_nowait(envelope.text)
                else:
                    remote.inbox.put_nowait((envelope.reason,))
            case (
                MediaJoin()
                | MediaLeave()
                | MediaForwarding()
                | MediaRoute()
                | MediaFrame()
                | RoomMedia()
                | PipeKey()
                | TrackPiped()
                | TrackUnpiped()
                | MediaReport()
            ):
                if self.media is not None:
                    self.media.handle(envelope)
            case _:
                assert_never(envelope)

    # ------------------------------------------------------------------ owner side

    def _open_remote(self, envelope: OpenSession) -> None:
        key = (envelope.edge, envelope.session)
        session = self.hub.connect(
            RemoteOutlet(self, envelope.edge, envelope.session),
            remote=envelope.remote,
            browser_session=envelope.browser_session,
            identity=None if envelope.identity is None else envelope.identity.identity(),
        )
        remote = _Remote(session)
        remote.task = asyncio.create_task(self._serve_remote(key, remote))
        self._remotes[key] = remote

    async def _serve_remote(self, key: tuple[str, str], remote: _Remote) -> None:
        CONNECTION.set(key[1])  # the relayed session id names the edge node's connection
        session = remote.session
        try:
            while True:
                item = await remote.inbox.get()
                if isinstance(item, tuple):
                    self.hub.disconnect(session, item[0])
                    return
                try:
                    await self.hub.handle(session, parse_client_message(item))
                except VecheError as exc:
                    self.hub.refuse(session, exc)
        finally:
            self._remotes.pop(key, None)

    def _lose(self, edge_node: str, session_id: str | None = None) -> None:
        """Sessions relayed here by ``edge_node`` (all, or one) lost their connection: the
        node died, or an update to it could not be sent."""
        for (node, sid), remote in list(self._remotes.items()):
            if node == edge_node and session_id in (None, sid):
                remote.inbox.put_nowait(("timeout",))

    # ------------------------------------------------------------------ sending

    def post(self, node: str, envelope: ToMedia) -> None:
        """Send a media envelope to ``node``, in order with everything else sent there."""
        self._post(node, envelope)

    def _post(
        self,
        node: str,
        envelope: ToOwner | ToEdge | ToMedia,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        if node in self._dead:
            return
        queue = self._queues.get(node)
        if queue is None:
            queue = self._queues[node] = asyncio.Queue()
            self._senders[node] = asyncio.create_task(self._send_forever(node, queue))
        queue.put_nowait((envelope, on_failure))

    async def _send_forever(self, node: str, queue: asyncio.Queue[_Posted]) -> None:
        """Publish what is queued for ``node``, in order; whatever piled up meanwhile (a chat
        message fanned out to a room, say) goes as one batch, one round trip to Redis."""
        target = channel(node)
        while True:
            items = [await queue.get()]
            while not queue.empty() and len(items) < MAX_BATCH:
                items.append(queue.get_nowait())
            try:
                await self.bus.publish(target, encode_batch([e for e, _ in items]))
            except BusUnavailable:
                for envelope, on_failure in items:
                    if on_failure is not None:
                        on_failure()
                    elif isinstance(envelope, ServerFrame):
                        # The client misses an update: its connection is treated as lost, so
                        # it resumes and gets the whole state again once the bus is back.
                        self._lose(node, envelope.session)

    # ------------------------------------------------------------------ liveness

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(self._watch_interval)
            with contextlib.suppress(BusUnavailable):
                await self._check_peers()

    async def _check_peers(self) -> None:
        if not self.cluster.settled:
            self._missing.clear()
            return
        peers = {link.owner for link in self._links.values()} | {key[0] for key in self._remotes}
        if self.media is not None:
            peers |= self.media.watched()
        peers.discard(self.node_id)
        missing = {node for node in peers if not await self.cluster.alive(node)}
        dead, self._missing = missing & self._missing, missing
        for node in dead:
            self._missing.discard(node)
            log.warning("node went away", extra={"node": node})
            for link in [link for link in self._links.values() if link.owner == node]:
                link.outlet.close(CloseCode.SERVICE_RESTART, "the meeting's server went away")
            self._lose(node)
            if self.media is not None:
                self.media.lost(node)
            self._dead.add(node)
            sender = self._senders.pop(node, None)
            if sender is not None:
                sender.cancel()
            self._queues.pop(node, None)
