"""The pipe broker: which of a room's tracks this node pipes to which other node, and the keys.

Each node with ``pipes`` on has one :class:`~veche.media.pipe.PipeEndpoint` and, per other
node its rooms' media share, one :class:`~veche.media.pipe.PipeLink`. The owner of a room says
which nodes have members of its media (``room_media``, see :mod:`veche.cluster.placement`);
each of those nodes then offers every track published to it in that room to each of the others
(``track_piped``), which stand it in for their own members. Only the layers someone views
travel (the link's feedback says which), so a track nobody on a node shows costs nothing there
but the offer.

Keys: a node makes one SRTP key per other node for what it sends there and tells it, with its
pipe address, in a ``pipe_key`` envelope (over the bus: the internal network). The relay posts
to each node in order, so a ``pipe_key`` reaches the other node before the ``track_piped``
that will use it. A stalled link (nothing heard for 1.5 s, see :mod:`veche.media.pipe`) is
keyed afresh: this node sends under a new key from then on and tells the other node. Each
``pipe_key`` is answered with the key the receiver sends under (an answer is not answered), so
that both ends agree again even if one was lost on the way while the network was in trouble.
The tracks stay offered and stood in, so that a blip on the internal network costs the viewers
a pause, not their tiles and a renegotiation; when the link is heard again its viewers' layers
ask for keyframes.

Where a node receives pipes (``pipe_host``) defaults to the address it reaches Redis from
(:func:`default_pipe_host`): the interface on the network the nodes share, which is loopback
for the workers of one machine and the container's own address in compose, so that the
cluster needs no setting of its own for pipes.

What this node publishes is compared with what it has offered every :data:`SCAN_INTERVAL`
seconds (a track started, replaced or ended), which needs no hook in the media code.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, assert_never
from urllib.parse import urlsplit

from veche.cluster.envelopes import PipeKey, RoomMedia, ToMedia, TrackPiped, TrackUnpiped
from veche.ids import RoomName
from veche.media.counters import MediaCounters
from veche.media.pipe import PipedIn, PipedOut, PipeEndpoint, PipeLink, TrackDescription, new_key
from veche.media.rooms import MediaRooms
from veche.media.tracks import Uptrack
from veche.tasks import cancel_and_wait, every

__all__ = ["SCAN_INTERVAL", "PipeBroker", "default_pipe_host"]

log = logging.getLogger(__name__)

SCAN_INTERVAL: Final = 0.1
"""Seconds between two looks at which tracks this node should offer to others."""


async def default_pipe_host(redis_url: str | None) -> str:
    """The address to receive pipes on when ``pipe_host`` is not set: the one this host
    reaches the Redis at ``redis_url`` from (no packet is sent: the kernel picks the route).
    Loopback for a Redis on a Unix socket (the workers of one machine) or on loopback, or when
    the route cannot be found (then said in a warning: other machines cannot reach it)."""
    parts = urlsplit(redis_url or "")
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        return "127.0.0.1"
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(
            parts.hostname, parts.port or 6379, family=socket.AF_INET, type=socket.SOCK_DGRAM
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(found[0][4])
            host: str = probe.getsockname()[0]
    except (OSError, IndexError) as exc:
        log.warning(
            "no route to Redis to choose pipe_host by; pipes on loopback only",
            extra={"error": str(exc)},
        )
        return "127.0.0.1"
    return host


@dataclass(eq=False)
class _Peer:
    """Another node this node's rooms share media with."""

    send_key: bytes
    receive_key: bytes | None = None
    """The key the other node last said it sends under."""
    link: PipeLink | None = None
    """Made once the other node's ``pipe_key`` has come."""
    offered: dict[tuple[RoomName, Uptrack], PipedOut] = field(default_factory=dict)
    received: dict[int, tuple[RoomName, PipedIn, bool]] = field(default_factory=dict)
    """By base SSRC: the room, the stand-in, and whether the room here has it yet."""


class PipeBroker:
    """The pipes of this node. ``post(node, envelope)`` sends a media envelope to another
    node, in order (:meth:`veche.cluster.relay.Relay.post`)."""

    def __init__(
        self,
        node_id: str,
        media: MediaRooms,
        endpoint: PipeEndpoint,
        post: Callable[[str, ToMedia], None],
        *,
        counters: MediaCounters | None = None,
    ) -> None:
        self.node_id = node_id
        self.media = media
        self.endpoint = endpoint
        self._post = post
        self._counters = counters
        self.peers: dict[str, _Peer] = {}
        self.rooms: dict[RoomName, set[str]] = {}
        """The other nodes of each room's media that has members here."""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(
            every(SCAN_INTERVAL, self._scan, "pipe scan"), name="pipe-broker"
        )

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        for peer in self.peers.values():
            if peer.link is not None:
                peer.link.close()
        self.endpoint.close()

    @property
    def links(self) -> dict[str, PipeLink]:
        """The links up, by the other node's id."""
        return {node: p.link for node, p in self.peers.items() if p.link is not None}

    # ------------------------------------------------------------------ envelopes

    def handle(self, envelope: RoomMedia | PipeKey | TrackPiped | TrackUnpiped) -> None:
        match envelope:
            case RoomMedia():
                self.room_media(RoomName(envelope.room), set(envelope.nodes))
            case PipeKey():
                self._keyed(envelope)
            case TrackPiped():
                self._piped(envelope)
            case TrackUnpiped():
                peer = self.peers.get(envelope.node)
                if peer is not None:
                    self._drop_received(peer, envelope.ssrc)
            case _:
                assert_never(envelope)

    def room_media(self, room: RoomName, nodes: set[str]) -> None:
        """``room``'s media is on ``nodes`` now (told by its owner)."""
        others = nodes - {self.node_id} if self.node_id in nodes else set()
        before = self.rooms.get(room, set())
        if others:
            self.rooms[room] = others
        else:
            self.rooms.pop(room, None)
        for node in before - others:
            peer = self.peers.get(node)
            if peer is None:
                continue
            for key in [k for k in peer.offered if k[0] == room]:
                self._withdraw(node, peer, key)
            for ssrc in [s for s, item in peer.received.items() if item[0] == room]:
                self._drop_received(peer, ssrc)
            if not self._shares_media(node):
                self._forget(node, peer)
        for node in others - before:
            self._peer(node)
        self._scan()

    def _shares_media(self, node: str) -> bool:
        return any(node in others for others in self.rooms.values())

    def _forget(self, node: str, peer: _Peer) -> None:
        """No room here has media on ``node`` any more (its members left, or it died): close
        the link, so that a node gone for good does not count as a stalled pipe for ever. A
        room that brings them together again keys a new one."""
        del self.peers[node]
        if peer.link is not None:
            peer.link.close()
            log.info("pipe down", extra={"node": node})

    def _peer(self, node: str) -> _Peer:
        peer = self.peers.get(node)
        if peer is None:
            peer = self.peers[node] = _Peer(new_key())
            self._tell_key(node, peer)
        return peer

    def _tell_key(self, node: str, peer: _Peer, *, answer: bool = False) -> None:
        host, port = self.endpoint.address
        key = base64.b64encode(peer.send_key).decode()
        self._post(node, PipeKey(node=self.node_id, host=host, port=port, key=key, answer=answer))

    def _keyed(self, envelope: PipeKey) -> None:
        node = envelope.node
        if node not in self.peers and not self._shares_media(node):
            # Early (this node hears of the room later, and its own key then asks for the
            # other's again) or late (the pipe was just closed): no link for it.
            return
        peer = self._peer(node)
        key = base64.b64decode(envelope.key)
        remote = (envelope.host, envelope.port)
        link = peer.link
        if link is not None and link.remote != remote:
            link.close()
            peer.received.clear()
            peer.offered.clear()
            link = peer.link = None
        if link is None:
            peer.link = PipeLink(self.endpoint, remote, peer.send_key, key, on_stall=self._stalled)
            log.info("pipe up", extra={"node": node, "remote": f"{remote[0]}:{remote[1]}"})
        elif key != peer.receive_key:
            # Only a new key makes a new SRTP session: a fresh one under the same key would
            # guess the streams' rollover counters anew, wrongly after 65,536 packets.
            link.set_receive_key(key)
        peer.receive_key = key
        if not envelope.answer:
            self._tell_key(node, peer, answer=True)
        self._scan()

    def _piped(self, envelope: TrackPiped) -> None:
        peer = self.peers.get(envelope.node)
        link = peer.link if peer is not None else None
        room = RoomName(envelope.room)
        if peer is None or link is None or envelope.node not in self.rooms.get(room, set()):
            return
        description = TrackDescription(
            track=envelope.track,
            owner=envelope.owner,
            kind=envelope.kind,
            source=envelope.source,
            mime_type=envelope.mime_type,
            clock_rate=envelope.clock_rate,
            channels=envelope.channels,
            payload_type=envelope.payload_type,
            parameters=dict(envelope.parameters),
            rids=tuple(envelope.rids),
            ssrc=envelope.ssrc,
        )
        if envelope.ssrc in peer.received:
            self._drop_received(peer, envelope.ssrc)
        piped = link.receive_track(description, counters=self._counters)
        added = self.media.add_piped(room, piped.uptrack)
        peer.received[envelope.ssrc] = (room, piped, added)

    def _drop_received(self, peer: _Peer, ssrc: int) -> None:
        item = peer.received.pop(ssrc, None)
        if item is None:
            return
        room, piped, added = item
        if added:
            self.media.remove_piped(room, piped.uptrack)
        if peer.link is not None:
            peer.link.drop_track(ssrc)

    def _stalled(self, link: PipeLink) -> None:
        """Nothing came over ``link`` for a while: key what this node sends afresh and tell the
        other node with its address (a node that restarted on another port, or lost its end,
        takes the link up again from it). A dead node's tracks go when the cluster notices it
        (``room_media`` without it), not here."""
        node = next((n for n, p in self.peers.items() if p.link is link), None)
        if node is None:
            return
        peer = self.peers[node]
        peer.send_key = new_key()
        link.set_send_key(peer.send_key)
        self._tell_key(node, peer)
        log.info("pipe keyed afresh", extra={"node": node})

    # ------------------------------------------------------------------ offering

    def _scan(self) -> None:
        """Offer each room's new tracks to the room's other nodes, withdraw ended ones, and
        hand stand-ins to rooms that have media here now."""
        for node, peer in self.peers.items():
            link = peer.link
            if link is None:
                continue
            for ssrc, (room, piped, added) in list(peer.received.items()):
                if not added and self.media.add_piped(room, piped.uptrack):
                    peer.received[ssrc] = (room, piped, True)
            wanted = {
                (room, uptrack)
                for room, others in self.rooms.items()
                if node in others
                for uptrack in self.media.local_uptracks(room)
            }
            for key in [k for k in peer.offered if k not in wanted]:
                self._withdraw(node, peer, key)
            for room, uptrack in wanted:
                if (room, uptrack) not in peer.offered:
                    self._offer(node, peer, link, room, uptrack)

    def _offer(self, node: str, peer: _Peer, link: PipeLink, room: RoomName, u: Uptrack) -> None:
        piped = link.send_track(u)
        peer.offered[(room, u)] = piped
        d = piped.describe()
        kind = "audio" if d.kind == "audio" else "video"
        self._post(
            node,
            TrackPiped(
                node=self.node_id,
                room=room,
                track=d.track,
                owner=d.owner,
                kind=kind,
                source=d.source,
                mime_type=d.mime_type,
                clock_rate=d.clock_rate,
                channels=d.channels,
                payload_type=d.payload_type,
                parameters=d.parameters,
                rids=list(d.rids),
                ssrc=d.ssrc,
            ),
        )

    def _withdraw(self, node: str, peer: _Peer, key: tuple[RoomName, Uptrack]) -> None:
        piped = peer.offered.pop(key, None)
        if piped is None:
            return
        piped.link.stop_track(piped.uptrack)
        self._post(node, TrackUnpiped(node=self.node_id, room=key[0], ssrc=piped.ssrc))
