"""Several Veche nodes over a real Redis: real processes, clients on different nodes.

The same signalling scenario runs against one node and against two; media crosses nodes (the
client's peer connections go to the room's node, its signalling through whichever node it
reached); the room's node is killed and the room continues on the other; Redis restarts under
a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from veche.client import VecheClient
from veche.protocol import (
    ChatPosted,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    Welcome,
)

from .peers import MediaClient
from .redisproc import REDIS_SERVER, RedisProcess, run_redis
from .serverproc import ServerProcess, run_server
from .waiting import until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
]


def _node(redis: RedisProcess, *args: str) -> contextlib.AbstractContextManager[ServerProcess]:
    return run_server("--redis-url", redis.url, "--resume-grace", "5", *args)


@pytest.fixture(scope="module")
def nodes(redis: RedisProcess) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with _node(redis) as first, _node(redis) as second:
        yield first, second


async def _meeting_scenario(ada_url: str, bob_url: str, room: str) -> None:
    """Join, see each other, chat, a moderator's mute, leave: as any client would."""
    ada = await VecheClient.connect(ada_url)
    bob = await VecheClient.connect(bob_url)
    try:
        ada_welcome = await ada.join(room, "Ada")
        bob_welcome = await bob.join(room, "Bob")
        assert {p.name for p in bob_welcome.participants} == {"Ada", "Bob"}
        joined = await ada.expect("participant_joined")
        assert isinstance(joined, ParticipantJoined)
        assert joined.participant.id == bob_welcome.participant_id

        await bob.send({"type": "chat", "text": "hello from Bob"})
        for client in (ada, bob):
            posted = await client.expect("chat_posted")
            assert isinstance(posted, ChatPosted)
            assert posted.entry.text == "hello from Bob"

        await ada.send(
            {"type": "moderate", "action": "mute", "participant_id": bob_welcome.participant_id}
        )
        muted = await bob.expect("participant_updated")
        assert isinstance(muted, ParticipantUpdated)
        assert muted.participant.audio is False

        await bob.send({"type": "moderate", "action": "mute", "participant_id": "p-x"})
        refused = await bob.expect("error")
        assert refused.type == "error"
        assert refused.code == "forbidden"

        await bob.send({"type": "leave"})
        left = await ada.expect("participant_left")
        assert isinstance(left, ParticipantLeft)
        assert (left.participant_id, left.reason) == (bob_welcome.participant_id, "left")
        assert ada_welcome.participant_id != bob_welcome.participant_id
    finally:
        await ada.ws.close()
        await bob.ws.close()


async def _lobby_scenario(ada_url: str, bob_url: str, room: str) -> None:
    """A moderator turns the lobby on; a newcomer waits until admitted."""
    ada = await VecheClient.connect(ada_url)
    bob = await VecheClient.connect(bob_url)
    try:
        await ada.join(room, "Ada")
        await ada.send({"type": "configure", "lobby": True})
        await ada.expect("room_updated")
        await bob.send({"type": "hello", "version": 1, "room": room, "name": "Bob"})
        assert (await bob.expect("waiting")).type == "waiting"
        lobby = await ada.expect("lobby_updated")
        assert lobby.type == "lobby_updated"
        (waiting,) = lobby.waiting
        await ada.send({"type": "admit", "participant_id": waiting.id})
        welcome = await bob.expect("welcome")
        assert welcome.type == "welcome"
        assert welcome.participant_id == waiting.id
        joined = await ada.expect("participant_joined")
        assert joined.type == "participant_joined"
    finally:
        await ada.ws.close()
        await bob.ws.close()


async def _resume_scenario(ada_url: str, bob_url: str, room: str) -> None:
    """Bob's connection drops; he resumes as himself through Ada's node (the other one, with
    two nodes) and Ada never sees him leave."""
    ada = await VecheClient.connect(ada_url)
    bob = await VecheClient.connect(bob_url)
    try:
        await ada.join(room, "Ada")
        first = await bob.join(room, "Bob")
        bob.drop()
        away = await ada.expect("participant_updated")
        assert isinstance(away, ParticipantUpdated)
        assert away.participant.reconnecting is True
        bob = await VecheClient.connect(ada_url)
        again = await bob.join(room, "Bob", resume=first.resume_token)
        assert again.resumed is True
        assert again.participant_id == first.participant_id
        back = await ada.expect("participant_updated")
        assert isinstance(back, ParticipantUpdated)
        assert back.participant.reconnecting is False
    finally:
        await ada.ws.close()
        await bob.ws.close()


SCENARIOS: dict[str, Callable[[str, str, str], Awaitable[None]]] = {
    "meeting": _meeting_scenario,
    "lobby": _lobby_scenario,
    "resume": _resume_scenario,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("layout", ["one node", "two nodes"])
async def test_the_same_scenarios_on_one_node_and_across_two(
    nodes: tuple[ServerProcess, ServerProcess], layout: str, scenario: str
) -> None:
    first, second = nodes
    other = first if layout == "one node" else second
    await SCENARIOS[scenario](first.ws, other.ws, f"{scenario}-{layout[:3]}")


async def test_a_room_has_one_owner_and_a_relayed_client_is_told_errors(
    nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    """Clients of one room on both nodes: the room exists on exactly one node; a bad message
    from the relayed client gets its error through the relay."""
    first, second = nodes
    ada = await VecheClient.connect(first.ws)
    bob = await VecheClient.connect(second.ws)
    try:
        await ada.join("owned", "Ada")
        await bob.join("owned", "Bob")
        rooms = [node.health()["participants"] for node in (first, second)]
        assert sorted(rooms) == [0, 2], "the room lives on exactly one node"
        await bob.send({"type": "chat", "text": ""})
        error = await bob.expect("error")
        assert error.type == "error"
        assert error.code == "bad_message"
        await bob.send({"type": "ping", "id": "p1"})
        pong = await bob.expect("pong")
        assert pong.type == "pong"
        assert pong.ref == "p1"
    finally:
        await ada.ws.close()
        await bob.ws.close()


@pytest.mark.skipif(os.environ.get("VECHE_IN_NETNS") != "1", reason="media runs in the netns")
async def test_three_peers_on_two_nodes_receive_everyones_media_and_chat(
    nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    first, second = nodes
    peers = [
        await MediaClient.join(url, "media-x", name)
        for url, name in ((first.ws, "A"), (second.ws, "B"), (second.ws, "C"))
    ]
    try:
        for peer in peers:
            await peer.publish()

        def everyone_receives() -> bool:
            return all(
                peer.receives_from(other.participant_id, video=20, audio=20)
                for peer in peers
                for other in peers
                if other is not peer
            )

        await until(everyone_receives, timeout=30)
        await peers[2].send({"type": "chat", "text": "from C"})
        for peer in peers:
            await peer.wait_for(lambda m: m["type"] == "chat_posted", timeout=5)
    finally:
        for peer in peers:
            await peer.close()


async def _closed(client: VecheClient, timeout: float) -> ConnectionClosed:
    """Read until the server closes the connection; the close."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                await client.receive(timeout=timeout)
            except ConnectionClosed as closed:
                return closed


async def _reconnecting_join(
    urls: list[str], room: str, name: str, resume: str | None = None
) -> tuple[VecheClient, Welcome]:
    """Join (coming back with ``resume``) through the first node that takes the hello (as a
    client behind a balancer retrying would)."""
    deadline = time.monotonic() + 20
    while True:
        for url in urls:
            with contextlib.suppress(OSError, ConnectionClosed, TimeoutError, AssertionError):
                client = await VecheClient.connect(url)
                try:
                    welcome = await client.join(room, name, resume=resume)
                except (ConnectionClosed, TimeoutError, AssertionError):
                    await client.ws.close()
                    raise
                return client, welcome
        assert time.monotonic() < deadline, "could not join again"
        await asyncio.sleep(0.5)


async def test_killing_the_rooms_node_moves_the_room_to_the_other(redis: RedisProcess) -> None:
    """The node owning a room is killed (SIGKILL): a client relayed through the other node is
    closed with 1012 within seconds, joins again through the surviving node, and the room goes
    on there with everyone who comes back, its password, its moderator and its chat (kept in
    Redis)."""
    with _node(redis) as first, _node(redis) as second:
        owner_client = await VecheClient.connect(first.ws)
        # The room starts on the first node.
        ada_token = (await owner_client.join("moving", "Ada")).resume_token
        relayed = await VecheClient.connect(second.ws)
        bob_token = (await relayed.join("moving", "Bob")).resume_token
        await owner_client.send({"type": "configure", "password": "pw", "id": "c"})
        await owner_client.expect("ack")
        await owner_client.send({"type": "chat", "text": "before", "id": "m"})
        await owner_client.expect("ack")
        assert first.health()["participants"] == 2
        killed = time.monotonic()
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        closed = await _closed(relayed, timeout=15)
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1012
        bob, bob_back = await _reconnecting_join([second.ws], "moving", "Bob", bob_token)
        ada, ada_back = await _reconnecting_join([first.ws, second.ws], "moving", "Ada", ada_token)
        moved = time.monotonic() - killed
        try:
            roles = {p.name: p.role for p in ada_back.participants}
            assert roles == {"Ada": "moderator", "Bob": "participant"}
            assert bob_back.settings.has_password
            assert [entry.text for entry in bob_back.chat] == ["before"]
            await bob.send({"type": "chat", "text": "still meeting"})
            posted = await ada.expect("chat_posted")
            assert posted.type == "chat_posted"
            assert second.health()["participants"] == 2
            assert moved < 20, f"the room came back after {moved:.1f} s"
        finally:
            await ada.ws.close()
            await bob.ws.close()
            await owner_client.ws.close()


async def test_sigterm_drains_a_node_and_its_rooms_move(redis: RedisProcess) -> None:
    """SIGTERM: the node takes no new rooms, closes its clients with 1001, exits 0; they join
    again through the other node and the room continues there."""
    with _node(redis) as first, _node(redis) as second:
        ada = await VecheClient.connect(first.ws)
        await ada.join("drained", "Ada")
        bob = await VecheClient.connect(second.ws)
        await bob.join("drained", "Bob")
        os.kill(first.process.pid, signal.SIGTERM)
        for client in (ada, bob):
            await _closed(client, timeout=10)
        assert first.process.wait(15) == 0
        ada, _ = await _reconnecting_join([second.ws], "drained", "Ada")
        bob, _ = await _reconnecting_join([second.ws], "drained", "Bob")
        try:
            await ada.send({"type": "chat", "text": "moved"})
            posted = await bob.expect("chat_posted")
            assert posted.type == "chat_posted"
            assert second.health()["participants"] == 2
        finally:
            await ada.ws.close()
            await bob.ws.close()


async def test_redis_restart_under_a_call() -> None:
    """Redis stops: /healthz says degraded, the meeting's clients on both nodes stay, a new
    cross-node join gets 'unavailable'; Redis is back (empty): the call goes on, joins through
    either node work, and nobody is missing or twice in the room."""
    with run_redis() as redis, _node(redis) as first, _node(redis) as second:
        ada = await VecheClient.connect(first.ws)
        await ada.join("weather", "Ada")
        bob = await VecheClient.connect(second.ws)
        await bob.join("weather", "Bob")
        await ada.expect("participant_joined")

        redis.stop()
        await until(lambda: first.health()["status"] == "degraded", timeout=10)
        assert first.health()["bus"] == "unavailable"
        # A join for a new room across nodes cannot be placed: a clear error.
        stranger = await VecheClient.connect(second.ws)
        await stranger.send({"type": "hello", "version": 1, "room": "elsewhere", "name": "Cy"})
        refused = await stranger.expect("error")
        assert refused.type == "error"
        assert refused.code == "unavailable"
        await stranger.ws.close()
        # The client on the room's own node goes on meanwhile.
        await ada.send({"type": "ping", "id": "during"})
        assert (await ada.expect("pong")).type == "pong"

        redis.start()
        await until(lambda: first.health()["status"] == "ok", timeout=15)
        await until(lambda: second.health()["status"] == "ok", timeout=15)
        await asyncio.sleep(2.5)  # a heartbeat: nodes and room leases are back in Redis

        async def chat_arrives() -> bool:
            await bob.send({"type": "chat", "text": "after the restart"})
            with contextlib.suppress(TimeoutError):
                posted = await ada.expect("chat_posted", timeout=1)
                return posted.type == "chat_posted" and posted.entry.text == "after the restart"
            return False

        await until(chat_arrives, timeout=20)
        cyd = await VecheClient.connect(second.ws)
        dan = await VecheClient.connect(first.ws)
        try:
            cyd_welcome = await cyd.join("weather", "Cyd")
            dan_welcome = await dan.join("weather", "Dan")
            names = sorted(p.name for p in dan_welcome.participants)
            assert names == ["Ada", "Bob", "Cyd", "Dan"], names
            assert len({p.id for p in dan_welcome.participants}) == 4
            assert cyd_welcome.room == dan_welcome.room
            total = sum(node.health()["participants"] for node in (first, second))
            assert total == 4
        finally:
            for client in (ada, bob, cyd, dan):
                await client.ws.close()


async def test_workers_share_one_port_and_meet_in_one_room() -> None:
    """``--workers 2`` with an embedded redis-server: connections land in both processes,
    clients of one room meet whichever process they reached, and SIGTERM stops everything."""
    with run_server("--workers", "2") as server:
        seen: set[str] = set()
        deadline = time.monotonic() + 20
        while len(seen) < 2:
            seen.add(server.health()["node"])  # a new connection each time
            assert time.monotonic() < deadline, f"only {seen} answered"
        clients = [await VecheClient.connect(server.ws) for _ in range(6)]
        try:
            for index, client in enumerate(clients):
                await client.join("workers", f"P{index}")
            await clients[-1].send({"type": "chat", "text": "to everyone"})
            for client in clients:
                posted = await client.expect("chat_posted")
                assert posted.type == "chat_posted"
            roster = await VecheClient.connect(server.ws)
            welcome = await roster.join("workers", "Counter")
            assert len(welcome.participants) == 7
            await roster.ws.close()
        finally:
            for client in clients:
                await client.ws.close()
        children = _children(server.process.pid)
        assert len(children) >= 3  # two workers and the embedded redis-server
        assert server.terminate() == 0
        for pid in children:
            assert not Path(f"/proc/{pid}").exists(), f"process {pid} outlived the parent"


async def test_workers_stop_when_their_parent_is_killed() -> None:
    """A ``--workers`` parent killed with SIGKILL (no chance to stop its children) leaves
    nothing running: the kernel kills each worker and sends the embedded redis-server
    SIGTERM."""
    children: list[int] = []
    try:
        with run_server("--workers", "2") as server:
            deadline = time.monotonic() + 20
            while len(children := _children(server.process.pid)) < 3:
                assert time.monotonic() < deadline, f"only {children} started"
                await asyncio.sleep(0.2)
            server.health()
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(10)
            deadline = time.monotonic() + 45
            while left := [pid for pid in children if _alive(pid)]:
                assert time.monotonic() < deadline, f"processes {left} outlived a killed parent"
                await asyncio.sleep(0.2)
    finally:
        for pid in children:
            if _alive(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found
