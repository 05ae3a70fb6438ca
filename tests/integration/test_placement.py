"""Placement: a room's owner puts each participant's media on the least-loaded process of the
host its WebSocket reached. Two real nodes that say they share a host, over a real Redis, with
``pipes`` on; every WebSocket goes to ONE of them, real aiortc participants."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import AsyncIterator

import pytest

from .peers import MediaClient
from .redisproc import REDIS_SERVER, RedisProcess
from .serverproc import ServerProcess, run_server
from .test_pipes_cluster import metrics, total
from .waiting import until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
    pytest.mark.skipif(os.environ.get("VECHE_IN_NETNS") != "1", reason="media runs in the netns"),
]

ADMIN = "placement-admin-token-of-at-least-32-characters"


def _node(
    redis: RedisProcess, *, threshold: float, extra: tuple[str, ...] = (), machine: str = ""
) -> contextlib.AbstractContextManager[ServerProcess]:
    """A node of a host named after the test (pipes on, explicitly): the nodes of an earlier
    test of the module, whose heartbeats may outlive them for a few seconds, are not of it.
    ``machine`` tells the nodes of two hosts of one test apart."""
    host = os.environ.get("PYTEST_CURRENT_TEST", "test").split(" ")[0] + machine
    return run_server(
        *("--redis-url", redis.url, "--resume-grace", "5", "--pipes"),
        *("--host-id", host, "--placement-threshold", str(threshold)),
        *("--admin-token", ADMIN),
        *extra,
    )


def node_id(server: ServerProcess) -> str:
    """The node id a server reports in ``veche_info``."""
    (found,) = [
        match[1]
        for key in metrics(server)
        if (match := re.match(r'veche_info\{.*node="([^"]+)"', key)) is not None
    ]
    return found


def media_node(owner: ServerProcess, room: str, client: MediaClient) -> str:
    """The process a participant's media runs on, as its room's owner says (admin API)."""
    node: str = owner.participant(room, client.participant_id)["node"]
    return node


async def _heard_of(owner: ServerProcess, other: ServerProcess) -> None:
    """Wait until ``other``'s heartbeat is in the cluster (its load can be read)."""
    await until(lambda: total(metrics(other), "veche_load") >= 0, timeout=10)
    await until(lambda: node_id(other) != "", timeout=10)
    await asyncio.sleep(3)  # a heartbeat (2 s) and the owner's next read of the loads (1 s)


@contextlib.asynccontextmanager
async def _six_on(node: ServerProcess, room: str) -> AsyncIterator[list[MediaClient]]:
    """Six participants whose WebSockets are on ``node``, the first two publishing, once
    everyone receives both publishers; closed afterwards."""
    clients = [await MediaClient.join(node.ws, room, f"P{i}") for i in range(6)]
    publishers = clients[:2]
    try:
        for publisher in publishers:
            await publisher.publish()
        await until(
            lambda: all(
                c.receives_from(p.participant_id, video=20, audio=20)
                for p in publishers
                for c in clients
                if c is not p
            ),
            timeout=40,
        )
        yield clients
    finally:
        for client in clients:
            await client.close()


async def test_media_is_spread_over_the_host_though_every_websocket_is_on_one_process(
    redis: RedisProcess,
) -> None:
    """Six participants, all connected to node A, with the threshold at 0 (every process
    counts as busy: the least-loaded one takes each): their media is spread over A and B, as
    the admin API and both nodes' counters say, and everyone receives the two publishers."""
    with _node(redis, threshold=0) as a, _node(redis, threshold=0) as b:
        await _heard_of(a, b)
        async with _six_on(a, "spread") as clients:
            ids = {node_id(a): "A", node_id(b): "B"}
            where = {c.participant_id: ids[media_node(a, "spread", c)] for c in clients}
            assert set(where.values()) == {"A", "B"}, where
            on_b = sum(1 for n in where.values() if n == "B")
            placed_a, placed_b = metrics(a), metrics(b)
            # A owns the room: it placed all six, on both; B placed none.
            assert total(placed_a, "veche_placements_total") == 6
            assert placed_a[f'veche_placements_total{{node="{node_id(b)}"}}'] == on_b
            assert total(placed_b, "veche_placements_total") == 0
            assert total(placed_b, "veche_media_participants") == on_b
            assert total(placed_a, "veche_media_participants") == 6 - on_b
            # B holds no WebSocket: its participants' replies went through A.
            assert total(placed_b, "veche_pipes") == 1
        for node in (a, b):
            assert "Traceback" not in node.output(), node.output()[-3000:]


async def test_an_edge_passes_media_frames_straight_to_a_third_process(
    redis: RedisProcess,
) -> None:
    """Three nodes of one host: the room on A (its presenter connected there), four viewers
    connected to B. Those whose media the owner puts on C have their offers and answers passed
    from B straight to C (not through A), and C's replies reach them through B: everyone
    receives the presenter, and nothing was passed on by the owner."""
    with (
        _node(redis, threshold=0) as a,
        _node(redis, threshold=0) as b,
        _node(redis, threshold=0) as c,
    ):
        await _heard_of(a, c)
        presenter = await MediaClient.join(a.ws, "edge", "P")
        viewers: list[MediaClient] = []
        try:
            await presenter.publish()
            viewers = [await MediaClient.join(b.ws, "edge", f"V{i}") for i in range(4)]
            await until(
                lambda: all(
                    v.receives_from(presenter.participant_id, video=20, audio=20) for v in viewers
                ),
                timeout=40,
            )
            where = [media_node(a, "edge", v) for v in viewers]
            on_c = where.count(node_id(c))
            assert on_c, where
            passed_b = total(metrics(b), "veche_media_frames_passed_total")
            # Each viewer on C answered its subscribe offer at least once.
            assert passed_b >= on_c
            assert total(metrics(a), "veche_media_frames_passed_total") == 0
            assert total(metrics(c), "veche_media_participants") == on_c
        finally:
            for client in (presenter, *viewers):
                await client.close()
        for node in (a, b, c):
            assert "Traceback" not in node.output(), node.output()[-3000:]


async def test_a_full_host_places_media_on_another_host_of_the_cluster(
    redis: RedisProcess,
) -> None:
    """Two nodes that say they are on different machines, every WebSocket on A. With the
    threshold at 0.12 of a core, A (whose host has no other process) is past it after a few
    placements (each counts :data:`~veche.cluster.placement.DEFAULT_COST` until its load shows
    it); the owner then places media on B, the other host, which has room: some participants'
    media runs there, A placed it (its counter names B), and everyone receives both publishers
    through the pipe between the hosts."""
    with (
        _node(redis, threshold=0.12, machine="-x") as a,
        _node(redis, threshold=0.12, machine="-y") as b,
    ):
        await _heard_of(a, b)
        async with _six_on(a, "across") as clients:
            ids = {node_id(a): "A", node_id(b): "B"}
            where = [ids[media_node(a, "across", c)] for c in clients]
            assert where[0] == "A", where  # the first one, on an idle host
            on_b = where.count("B")
            assert on_b >= 1, where
            assert metrics(a)[f'veche_placements_total{{node="{node_id(b)}"}}'] == on_b
            assert total(metrics(b), "veche_media_participants") == on_b
        for node in (a, b):
            assert "Traceback" not in node.output(), node.output()[-3000:]


async def test_a_room_stays_on_its_process_while_that_one_has_room(redis: RedisProcess) -> None:
    """With the default threshold (0.7 of a core) a small room's media stays on the process
    that already carries it: no pipe, though another process of the host is idle."""
    with _node(redis, threshold=0.7) as a, _node(redis, threshold=0.7) as b:
        await _heard_of(a, b)
        clients = [await MediaClient.join(a.ws, "small", f"S{i}") for i in range(3)]
        try:
            await clients[0].publish()
            await until(
                lambda: all(
                    c.receives_from(clients[0].participant_id, video=10, audio=10)
                    for c in clients[1:]
                ),
                timeout=30,
            )
            assert {media_node(a, "small", c) for c in clients} == {node_id(a)}
            assert total(metrics(a), "veche_pipes") == 0
            assert total(metrics(b), "veche_media_participants") == 0
        finally:
            for client in clients:
                await client.close()


async def test_a_placed_participant_s_failed_connection_starts_afresh(redis: RedisProcess) -> None:
    """A viewer connected to A whose media the owner put on B misses its first subscribe offer
    (as a client that lost it): B gives up on that connection after ``media_connect_timeout``,
    the ``media_failed`` error reaches the viewer through A, B offers a new connection, and
    the viewer receives the presenter on it, its media still on B."""
    with (
        _node(redis, threshold=0, extra=("--media-connect-timeout", "2")) as a,
        _node(redis, threshold=0, extra=("--media-connect-timeout", "2")) as b,
    ):
        await _heard_of(a, b)
        presenter = await MediaClient.join(a.ws, "renew", "P")
        viewers: list[MediaClient] = []
        try:
            await presenter.publish()
            await asyncio.sleep(1)
            missed: list[str] = []
            for attempt in range(6):
                viewer = await MediaClient.join(a.ws, "renew", f"V{attempt}")
                viewers.append(viewer)
                if media_node(a, "renew", viewer) == node_id(b):
                    break
            else:
                raise AssertionError("no viewer's media was placed on B")
            answer = viewer._answer_subscribe

            async def miss_the_first(sdp: str) -> None:
                if not missed:
                    missed.append(sdp)
                    return
                await answer(sdp)

            viewer._answer_subscribe = miss_the_first  # type: ignore[method-assign]
            failed = await viewer.wait_for(
                lambda m: m["type"] == "error" and m["code"] == "media_failed", timeout=20
            )
            assert failed.get("pc") == "subscribe"
            await until(
                lambda: viewer.receives_from(presenter.participant_id, video=20, audio=20),
                timeout=30,
            )
            assert missed
            assert media_node(a, "renew", viewer) == node_id(b)
        finally:
            for client in (presenter, *viewers):
                await client.close()


async def test_killing_the_media_process_resumes_only_its_participants(
    redis: RedisProcess,
) -> None:
    """The presenter's and a first viewer's media are on A (B was not up yet), later viewers'
    spread over A and B, all connected to A. B is killed: the viewers whose media was on B are
    told to reconnect (1012) and, resuming, get the presenter again from A; the others keep
    their connections and go on receiving throughout."""
    with _node(redis, threshold=0) as a:
        presenter = await MediaClient.join(a.ws, "kill", "P")
        viewers: list[MediaClient] = [await MediaClient.join(a.ws, "kill", "V0")]
        resumed: list[MediaClient] = []
        try:
            await presenter.publish()
            with _node(redis, threshold=0) as b:
                await _heard_of(a, b)
                viewers += [await MediaClient.join(a.ws, "kill", f"V{i}") for i in range(1, 4)]
                await until(
                    lambda: all(
                        v.receives_from(presenter.participant_id, video=20, audio=20)
                        for v in viewers
                    ),
                    timeout=40,
                )
                assert media_node(a, "kill", presenter) == node_id(a)
                where = {v.participant_id: media_node(a, "kill", v) for v in viewers}
                on_b = [v for v in viewers if where[v.participant_id] == node_id(b)]
                on_a = [v for v in viewers if where[v.participant_id] == node_id(a)]
                assert on_b, where
                assert viewers[0] in on_a, where
                frames_before = {
                    v.participant_id: v.tracks_from(presenter.participant_id, "video")[0].frames
                    for v in on_a
                }
                os.kill(b.process.pid, signal.SIGKILL)
                b.process.wait(10)
            for viewer in on_b:
                try:
                    await asyncio.wait_for(viewer.ws.wait_closed(), 20)
                except TimeoutError:
                    raise AssertionError(a.output()[-6000:]) from None
                assert viewer.ws.close_code == 1012
            for viewer in on_a:
                assert viewer.ws.close_code is None
                (video,) = viewer.tracks_from(presenter.participant_id, "video")
                assert video.frames > frames_before[viewer.participant_id] + 30
            for viewer in on_b:
                token = viewer.welcome["resume_token"]
                back = await MediaClient.join(a.ws, "kill", "V", resume=token)
                resumed.append(back)
                assert back.welcome["resumed"] is True
                assert back.participant_id == viewer.participant_id
            await until(
                lambda: all(
                    r.receives_from(presenter.participant_id, video=20, audio=20) for r in resumed
                ),
                timeout=30,
            )
            assert {media_node(a, "kill", r) for r in resumed} == {node_id(a)}
        finally:
            for client in (presenter, *viewers, *resumed):
                with contextlib.suppress(Exception):
                    await client.close()
        assert "Traceback" not in a.output(), a.output()[-3000:]
