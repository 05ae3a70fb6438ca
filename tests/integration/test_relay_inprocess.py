"""Two nodes in one process: hubs, clusters and relays sharing one LocalBus, no sockets.

Node ``n-a`` and node ``n-b`` are whole Veche nodes minus the WebSocket edge: a client is a
hub session whose outlet records what it is sent, and its text frames go to the node's
:meth:`~veche.cluster.relay.Relay.accept` as the edge hands them over. The room is placed on
``n-b`` (its first client joins there), so a client of ``n-a`` is relayed. Timers are
shortened: a lost node is noticed within a few hundredths of a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from veche.cluster.bus import LocalBus
from veche.cluster.membership import Cluster
from veche.cluster.relay import Relay, channel
from veche.hub import Hub
from veche.media import MediaConfig
from veche.protocol import (
    SERVER_ADAPTER,
    ChatPosted,
    CloseCode,
    Error,
    LeaveReason,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    Pong,
    ServerMessage,
    Welcome,
)
from veche.session import Session
from veche.settings import Settings

from .waiting import until

M = TypeVar("M", bound=ServerMessage)

BEAT = 0.05
"""Seconds between heartbeats (2.0 in production)."""
NODE_TTL = 0.2
ROOM_TTL = 0.5
WATCH = 0.05
"""Seconds between the relay's checks that the other nodes are alive."""


@dataclass(eq=False)
class Recorder:
    """A client connection that keeps everything it is sent, in order."""

    messages: list[ServerMessage] = field(default_factory=list)
    closed: tuple[CloseCode, str] | None = None
    _read: int = 0

    def send(self, message: ServerMessage) -> None:
        self.messages.append(message)

    def send_text(self, text: str) -> None:
        self.messages.append(SERVER_ADAPTER.validate_json(text))

    def close(self, code: CloseCode, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)

    async def expect(self, kind: type[M], timeout: float = 2.0) -> M:
        """Skip messages until one of class ``kind`` arrives; that message."""
        async with asyncio.timeout(timeout):
            while True:
                while self._read < len(self.messages):
                    message = self.messages[self._read]
                    self._read += 1
                    if isinstance(message, kind):
                        return message
                await asyncio.sleep(0.005)

    def unread(self, kind: type[ServerMessage]) -> list[ServerMessage]:
        return [m for m in self.messages[self._read :] if isinstance(m, kind)]


@dataclass(eq=False)
class Client:
    """One client connected to ``node``."""

    node: Node
    session: Session
    outlet: Recorder

    async def send(self, message: dict[str, Any]) -> None:
        await self.node.relay.accept(self.session, json.dumps(message))

    async def join(self, room: str, name: str, *, resume: str | None = None) -> Welcome:
        hello: dict[str, Any] = {"type": "hello", "version": 1, "room": room, "name": name}
        if resume is not None:
            hello["resume"] = resume
        await self.send(hello)
        return await self.outlet.expect(Welcome)

    def disconnect(self, reason: LeaveReason) -> None:
        """The connection ended, as the WebSocket edge reports it."""
        self.node.relay.disconnect(self.session, reason)
        self.node.hub.disconnect(self.session, reason)


@dataclass(eq=False)
class Node:
    """A node without its WebSocket edge: hub, cluster and relay on the shared bus."""

    hub: Hub
    cluster: Cluster
    relay: Relay
    running: bool = True

    @classmethod
    async def start(cls, bus: LocalBus, node_id: str, settings: Settings) -> Node:
        hub = Hub(settings, media=MediaConfig())
        cluster = Cluster(
            bus,
            node_id=node_id,
            load=lambda: hub.rooms.participant_count,
            rooms=lambda: hub.rooms.names,
            beat=BEAT,
            node_ttl=NODE_TTL,
            room_ttl=ROOM_TTL,
        )
        relay = Relay(bus, cluster, hub, watch_interval=WATCH)
        await cluster.start()
        await relay.start()
        return cls(hub, cluster, relay)

    def connect(self, remote: str = "192.0.2.1") -> Client:
        outlet = Recorder()
        return Client(self, self.hub.connect(outlet, remote), outlet)

    async def lose(self) -> None:
        """Stop as a killed node does, as far as the others can tell: its heartbeat is gone,
        nothing on its channel is read, nothing more is sent from it."""
        if self.running:
            self.running = False
            await self.relay.stop()
            await self.cluster.stop()


@pytest.fixture
async def nodes(make_settings: Callable[..., Settings]) -> AsyncIterator[tuple[Node, Node]]:
    bus = LocalBus()
    settings = make_settings(resume_grace=5)
    first = await Node.start(bus, "n-a", settings)
    second = await Node.start(bus, "n-b", settings)
    try:
        yield first, second
    finally:
        await first.lose()
        await second.lose()
        await bus.close()


async def _meeting(nodes: tuple[Node, Node]) -> tuple[Client, Client, Welcome]:
    """Ada joins on n-b (the room is placed there), then Bob through n-a; Ada has seen Bob
    join. Returns Ada, Bob and Bob's welcome."""
    first, second = nodes
    ada, bob = second.connect(), first.connect()
    await ada.join("relayed", "Ada")
    welcome = await bob.join("relayed", "Bob")
    await ada.outlet.expect(ParticipantJoined)
    return ada, bob, welcome


async def test_relay_welcomes_a_client_whose_room_is_on_the_other_node(
    nodes: tuple[Node, Node],
) -> None:
    """A client of n-a joining a room of n-b is welcomed through the relay, and n-b's client
    sees it join; the room exists on n-b only."""
    first, second = nodes
    ada, bob = second.connect(), first.connect()
    await ada.join("relayed", "Ada")
    welcome = await bob.join("relayed", "Bob")
    assert {p.name for p in welcome.participants} == {"Ada", "Bob"}
    joined = await ada.outlet.expect(ParticipantJoined)
    assert joined.participant.id == welcome.participant_id
    assert first.relay.carries(bob.session)
    assert (first.hub.rooms.participant_count, second.hub.rooms.participant_count) == (0, 2)


async def test_relay_is_not_used_for_a_room_of_this_node(nodes: tuple[Node, Node]) -> None:
    """A client joining a room its own node owns is served by that node's hub directly."""
    first, _ = nodes
    ada = first.connect()
    await ada.join("at-home", "Ada")
    assert not first.relay.carries(ada.session)
    assert first.hub.rooms.participant_count == 1


async def test_relay_carries_chat_both_ways(nodes: tuple[Node, Node]) -> None:
    """Chat from the relayed client reaches both; chat from the owner's client reaches it."""
    ada, bob, _ = await _meeting(nodes)
    await bob.send({"type": "chat", "text": "from Bob"})
    for client in (ada, bob):
        posted = await client.outlet.expect(ChatPosted)
        assert posted.entry.text == "from Bob"
    await ada.send({"type": "chat", "text": "from Ada"})
    posted = await bob.outlet.expect(ChatPosted)
    assert posted.entry.text == "from Ada"


async def test_relay_answers_a_refused_message_of_a_relayed_client(
    nodes: tuple[Node, Node],
) -> None:
    """A bad message from the relayed client is refused by the room's node, and the error
    (with its ref) comes back through the relay, as does a pong."""
    _, bob, _ = await _meeting(nodes)
    await bob.send({"type": "chat", "id": "c1", "text": ""})
    error = await bob.outlet.expect(Error)
    assert (error.code, error.ref) == ("bad_message", "c1")
    await bob.send({"type": "ping", "id": "p1"})
    assert (await bob.outlet.expect(Pong)).ref == "p1"


async def test_relay_carries_leave_and_its_close(nodes: tuple[Node, Node]) -> None:
    """The relayed client leaves: the others see it go, its connection is asked to close with
    1000, and the end of that connection adds nothing."""
    first, second = nodes
    ada, bob, welcome = await _meeting(nodes)
    await bob.send({"type": "leave"})
    left = await ada.outlet.expect(ParticipantLeft)
    assert (left.participant_id, left.reason) == (welcome.participant_id, "left")
    await until(lambda: bob.outlet.closed is not None, timeout=2)
    assert bob.outlet.closed == (CloseCode.NORMAL, "left")
    bob.disconnect("disconnected")
    await until(lambda: len(second.hub.sessions) == 1, timeout=2)
    assert not first.relay.carries(bob.session)
    assert ada.outlet.unread(ParticipantLeft) == []


async def test_relay_lost_connection_can_resume_through_the_other_node(
    nodes: tuple[Node, Node],
) -> None:
    """The relayed client's connection is lost: the others see it reconnecting; it comes back
    as itself through the room's own node."""
    _, second = nodes
    ada, bob, welcome = await _meeting(nodes)
    bob.disconnect("timeout")
    away = await ada.outlet.expect(ParticipantUpdated)
    assert (away.participant.id, away.participant.reconnecting) == (welcome.participant_id, True)
    again = await second.connect().join("relayed", "Bob", resume=welcome.resume_token)
    assert (again.resumed, again.participant_id) == (True, welcome.participant_id)


async def test_relay_closes_its_clients_when_the_rooms_node_is_lost(
    nodes: tuple[Node, Node],
) -> None:
    """n-b, the room's node, is lost: n-a closes the client it relayed there with 1012 (so it
    reconnects) within a few checks."""
    _, second = nodes
    _, bob, _ = await _meeting(nodes)
    await second.lose()
    took = await until(lambda: bob.outlet.closed is not None, timeout=2, step=0.01)
    assert bob.outlet.closed is not None
    assert bob.outlet.closed[0] is CloseCode.SERVICE_RESTART
    assert took < 10 * WATCH


async def test_relay_treats_the_clients_of_a_lost_edge_node_as_lost(
    nodes: tuple[Node, Node],
) -> None:
    """n-a, the node a relayed client is connected to, is lost: the room's node treats that
    client's connection as lost, so the others see it reconnecting."""
    first, _ = nodes
    ada, _, welcome = await _meeting(nodes)
    await first.lose()
    away = await ada.outlet.expect(ParticipantUpdated)
    assert (away.participant.id, away.participant.reconnecting) == (welcome.participant_id, True)


async def test_relay_drops_a_malformed_envelope_and_goes_on(
    nodes: tuple[Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage on a node's relay channel is logged and dropped; the relayed client's chat
    still flows both ways afterwards."""
    first, second = nodes
    ada, bob, _ = await _meeting(nodes)
    bus = first.relay.bus
    with caplog.at_level(logging.WARNING, logger="veche.cluster"):
        for node in ("n-a", "n-b"):
            await bus.publish(channel(node), b'[{"type": "server_frame"}]')
            await bus.publish(channel(node), b"\xff not json")
        await bob.send({"type": "chat", "text": "still here"})
        for client in (ada, bob):
            assert (await client.outlet.expect(ChatPosted)).entry.text == "still here"
    unreadable = [r for r in caplog.records if r.getMessage().startswith("unreadable relay")]
    assert len(unreadable) == 4
    assert second.hub.rooms.participant_count == 2
