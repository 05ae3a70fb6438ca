"""One room's media spread over two nodes: real processes over a real Redis, real aiortc
participants, and no pipe setting (pipes are on by default in a cluster). Each participant's
media runs on the node its WebSocket reached; the room's tracks cross between the nodes once per
node, not once per viewer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.bench.clip import load_clip
from tests.bench.meeting_rig import Rig

from .peers import MediaClient
from .redisproc import REDIS_SERVER, RedisProcess
from .serverproc import NO_GOVERNOR, ServerProcess, run_server
from .waiting import until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
    pytest.mark.skipif(os.environ.get("VECHE_IN_NETNS") != "1", reason="media runs in the netns"),
]

ADMIN = "pipes-admin-token-of-at-least-32-characters"


def _node(redis: RedisProcess, *flags: str) -> contextlib.AbstractContextManager[ServerProcess]:
    """A node of the cluster, with nothing said about pipes (they are on by default)."""
    return run_server(
        *("--redis-url", redis.url, "--resume-grace", "5"), *("--admin-token", ADMIN), *flags
    )


def metrics(server: ServerProcess) -> dict[str, float]:
    """``/metrics`` of one node: each series (with its labels) and its value."""
    with urllib.request.urlopen(server.http + "/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+(?:\{[^}]*\})?) (\S+)", line)
        if match:
            values[match[1]] = float(match[2])
    return values


def total(values: dict[str, float], name: str) -> float:
    """The sum of every series of ``name`` (all labels)."""
    return sum(v for k, v in values.items() if k == name or k.startswith(name + "{"))


async def test_a_room_over_two_nodes_pipes_each_track_once_per_node(redis: RedisProcess) -> None:
    """A presenter on the room's node and two viewers on the other (one also publishing): all
    see and hear each other; the other node receives the presenter's tracks over the pipe once
    and forwards them twice (one copy per viewer); its own participants' media runs there."""
    with _node(redis) as first, _node(redis) as second:
        presenter = await MediaClient.join(first.ws, "lecture", "P")
        viewers = [await MediaClient.join(second.ws, "lecture", n) for n in ("V1", "V2")]
        everyone = [presenter, *viewers]
        try:
            await presenter.publish()
            await viewers[1].publish()

            def all_receive() -> bool:
                return (
                    all(
                        v.receives_from(presenter.participant_id, video=30, audio=30)
                        for v in viewers
                    )
                    and presenter.receives_from(viewers[1].participant_id, video=30, audio=30)
                    and viewers[0].receives_from(viewers[1].participant_id, video=30, audio=30)
                )

            await until(all_receive, timeout=30)
            # The room lives on the first node; the viewers' media on the second.
            room = first.participant("lecture", viewers[0].participant_id)
            assert room["node"] != first.participant("lecture", presenter.participant_id)["node"]
            a, b = metrics(first), metrics(second)
            assert total(a, "veche_pipes") == 1
            assert total(b, "veche_pipes") == 1
            # The room's node tells what each participant is sent, wherever its media runs: P
            # gets V2's tracks over the pipe, V1 (its media on the second node, which reports
            # it) P's and V2's.
            for client, audio, video in ((presenter, 1, 1), (viewers[0], 2, 2)):
                await until(
                    lambda c=client, a=audio, v=video: (
                        first.receiving("lecture", c.participant_id)["audio"] == a
                        and first.receiving("lecture", c.participant_id)["video"] == v
                    ),
                    timeout=5,
                )
            await until(  # the frame count comes with a refresh, every 5 s
                lambda: first.receiving("lecture", viewers[0].participant_id)["frames"] > 30,
                timeout=8,
            )
            # P's microphone and camera cross once for both viewers (and V2's the other way).
            assert total(b, "veche_pipe_tracks") == 4
            assert sum(v for k, v in b.items() if 'direction="in"' in k) == 2
            received = total(b, "veche_pipe_packets_received_total")
            sent = total(a, "veche_pipe_packets_sent_total")
            assert received > 50
            assert received >= 0.9 * sent  # on loopback next to nothing is lost
            assert total(b, "veche_pipe_rejected_total") == 0
            # The second node forwards what came over the pipe to two viewers (and V2's own
            # tracks to V1 and over the pipe): about twice as many packets as it received, where
            # one pipe per viewer would have received twice as many.
            forwarded_b = total(b, "veche_packets_forwarded_total")
            assert 1.5 * received < forwarded_b
            # The first node receives V2's tracks once and forwards them to P only.
            assert total(a, "veche_pipe_packets_received_total") > 50
        finally:
            for client in everyone:
                await client.close()
        for node in (first, second):
            assert "Traceback" not in node.output(), node.output()[-3000:]


def _capture_pipe_datagrams(seconds: float, ports: range) -> list[bytes]:
    """The UDP payloads seen on the loopback interface for ``seconds`` between two ports of
    ``ports`` (one pipe endpoint to another), raw from the wire (needs root: the test runs
    in its own network namespace)."""
    sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    sniffer.bind(("lo", 0))
    sniffer.settimeout(0.1)
    found: list[bytes] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                frame, address = sniffer.recvfrom(65535)
            except TimeoutError:
                continue
            if address[2] == socket.PACKET_OUTGOING:
                continue  # on lo each datagram is seen going out and coming in: count it once
            ip = frame[14:]
            if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_UDP:
                continue
            udp = ip[(ip[0] & 0x0F) * 4 :]
            source, destination = int.from_bytes(udp[0:2]), int.from_bytes(udp[2:4])
            if source in ports and destination in ports:
                found.append(udp[8:])
    finally:
        sniffer.close()
    return found


async def test_the_pipe_carries_srtp_not_plain_rtp(redis: RedisProcess) -> None:
    """Captured on the wire between two nodes, the pipe's packets are encrypted: in the clear
    every payload of a stream starts alike (Opus's TOC byte at one configuration, VP8's
    payload descriptor), on the pipe the first payload bytes of each stream vary as
    ciphertext does; the feedback coming back is encrypted SRTCP."""
    with _node(redis) as first, _node(redis) as second:
        publisher = await MediaClient.join(first.ws, "wire", "P")
        viewer = await MediaClient.join(second.ws, "wire", "V")
        try:
            await publisher.publish()
            await until(
                lambda: viewer.receives_from(publisher.participant_id, video=10, audio=10),
                timeout=30,
            )
            datagrams = await asyncio.to_thread(_capture_pipe_datagrams, 1.5, range(40200, 40300))
        finally:
            for client in (publisher, viewer):
                await client.close()
    streams: dict[int, list[int]] = {}
    for d in datagrams:
        if len(d) > 40 and not 192 <= d[1] <= 223:
            offset = 12 + 4 * (d[0] & 0x0F)
            if d[0] & 0x10:  # a header extension (the audio level) before the payload
                offset += 4 + 4 * int.from_bytes(d[offset + 2 : offset + 4])
            streams.setdefault(int.from_bytes(d[8:12]), []).append(d[offset])
    long_ones = {ssrc: firsts for ssrc, firsts in streams.items() if len(firsts) >= 20}
    assert len(long_ones) >= 2, {ssrc: len(f) for ssrc, f in streams.items()}  # audio, video
    for firsts in long_ones.values():
        assert len(set(firsts)) > 8, sorted(set(firsts))
    rtcp = [d for d in datagrams if 192 <= d[1] <= 223]
    assert rtcp, "feedback travels back as SRTCP"
    assert all(d[-14] & 0x80 for d in rtcp)  # the SRTCP E flag: the report is encrypted


async def test_a_late_joiner_on_the_other_node_has_a_picture_within_a_second(
    redis: RedisProcess,
) -> None:
    """A call runs on the room's node; someone joins through the other node, which has nobody
    else in the room: its first video frame comes within 1 s of its subscribe connection
    connecting (the keyframe request crosses the pipe back to the publisher)."""
    with _node(redis) as first, _node(redis) as second:
        publisher = await MediaClient.join(first.ws, "late", "Pub")
        early = await MediaClient.join(first.ws, "late", "Early")
        late: MediaClient | None = None
        try:
            await publisher.publish()
            await until(lambda: any(r.frames > 60 for r in early.remote), timeout=20)
            late = await MediaClient.join(second.ws, "late", "Late")
            connected: list[float] = []

            def connected_now() -> bool:
                pc = late.subscribe_pc if late is not None else None
                if pc is not None and pc.connectionState == "connected" and not connected:
                    connected.append(time.monotonic())
                return bool(connected)

            await until(connected_now, timeout=10, step=0.005)
            await until(
                lambda: (
                    late is not None
                    and any(r.track.kind == "video" and r.frames > 0 for r in late.remote)
                ),
                timeout=10,
            )
            (video,) = late.tracks_from(publisher.participant_id, "video")
            assert video.first_frame_at is not None
            assert video.first_frame_at - connected[0] < 1.0
            assert (
                first.participant("late", late.participant_id)["node"]
                != (first.participant("late", publisher.participant_id)["node"])
            )
        finally:
            for client in (publisher, early, *([late] if late else [])):
                await client.close()


def participant_anywhere(server: ServerProcess, room: str, participant_id: str) -> dict[str, Any]:
    """The admin API's view of a participant, asked until the request lands on the worker that
    owns the room (each request is a new connection, which the kernel gives any worker)."""
    for _ in range(50):
        with contextlib.suppress(urllib.error.HTTPError):
            return server.participant(room, participant_id)
    raise AssertionError(f"no worker answered for {room}")


async def test_two_workers_pipe_a_room_between_them() -> None:
    """``--workers 2`` and no other setting but the placement threshold at 0 (the room grows
    onto the idle worker at once, wherever the viewer's WebSocket is): a viewer whose media
    runs on the other worker than the publisher's receives the publisher's media there,
    through the pipe; ``veche admin room`` (whichever worker its calls reach) names each one's
    worker and what the viewer is sent there."""
    with run_server(
        *("--workers", "2", "--placement-threshold", "0", "--admin-token", ADMIN)
    ) as server:
        publisher = await MediaClient.join(server.ws, "workers", "Pub")
        viewers: list[MediaClient] = []
        try:
            await publisher.publish()
            home = participant_anywhere(server, "workers", publisher.participant_id)["node"]
            for attempt in range(16):
                viewer = await MediaClient.join(server.ws, "workers", f"V{attempt}")
                viewers.append(viewer)
                node = participant_anywhere(server, "workers", viewer.participant_id)["node"]
                if node != home:
                    break
            else:
                raise AssertionError("every connection landed on the publisher's worker")
            await until(
                lambda: viewer.receives_from(publisher.participant_id, video=30, audio=30),
                timeout=30,
            )

            def admin_room() -> dict[str, Any]:
                """``veche admin room workers``, as an operator types it."""
                done = subprocess.run(
                    [
                        *(sys.executable, "-m", "veche", "admin"),
                        *("--url", server.http, "room", "workers"),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                    env={**os.environ, "VECHE_ADMIN_TOKEN": ADMIN},
                )
                assert done.returncode == 0, done.stderr
                room: dict[str, Any] = json.loads(done.stdout)
                return {p["id"]: p for p in room["participants"]}

            # The room's worker says where each participant's media runs, and what the viewer
            # on the other worker is sent there (its report).
            def described() -> bool:
                people = admin_room()
                me = people[viewer.participant_id]
                return (
                    me["node"] != people[publisher.participant_id]["node"]
                    and me["receiving"]["video"] == 1
                    and me["receiving"]["audio"] == 1
                )

            for _ in range(20):
                if await asyncio.to_thread(described):
                    break
                await asyncio.sleep(0.5)
            else:
                raise AssertionError(f"veche admin room: {admin_room()}")
        finally:
            for client in (publisher, *viewers):
                await client.close()
            # SIGTERM, also when the test failed: the parent stops its workers and their Redis
            # (the SIGKILL run_server falls back on would leave them running).
            status = server.terminate()
        assert status == 0


async def test_killing_the_second_node_takes_only_its_participants(redis: RedisProcess) -> None:
    """The node with the viewers dies: they leave the room (reconnecting, then gone), the
    presenter on the room's node keeps its connection and its place, and the first node's pipe
    to the dead one carries nothing more and is closed (not a stalled pipe for ever)."""
    with _node(redis) as first:
        presenter = await MediaClient.join(first.ws, "kill", "P")
        try:
            await presenter.publish()
            with _node(redis) as second:
                viewer = await MediaClient.join(second.ws, "kill", "V")
                await viewer.publish()
                await until(
                    lambda: (
                        viewer.receives_from(presenter.participant_id, video=20, audio=20)
                        and presenter.receives_from(viewer.participant_id, video=20, audio=20)
                    ),
                    timeout=30,
                )
                os.kill(second.process.pid, signal.SIGKILL)
                second.process.wait(10)
                with contextlib.suppress(Exception):
                    await viewer.close()
            await presenter.wait_for(
                lambda m: (
                    m["type"] == "participant_left"
                    and m.get("participant_id") == viewer.participant_id
                ),
                timeout=20,
            )
            me = first.participant("kill", presenter.participant_id)
            assert me["reconnecting"] is False
            await presenter.send({"type": "chat", "text": "still here"})
            await presenter.wait_for(lambda m: m["type"] == "chat_posted", timeout=5)
            assert total(metrics(first), "veche_pipe_tracks") == 0
            # The pipe to the dead node is closed, not left stalled for ever.
            await until(lambda: total(metrics(first), "veche_pipes") == 0, timeout=5)
            assert total(metrics(first), "veche_pipe_stalled") == 0
        finally:
            await presenter.close()


PIPE_PORTS = (40250, 40251)
"""One pipe port for each node of the stall test, for its packet filter to drop."""


async def test_a_stalled_pipe_is_noticed_within_two_seconds_and_carries_again(
    redis: RedisProcess,
) -> None:
    """A packet filter in the test's network namespace drops every pipe datagram between the
    two nodes for 4 s: each node notices within 2 s (its log says after how long a silence) and
    keys the pipe afresh; when the filter goes, the viewer on the second node has the
    publisher's picture again within 3 s on the same track (a keyframe was asked across the
    pipe), the pipe is live on both nodes, and what the filter dropped counts as lost."""
    if shutil.which("iptables") is None:
        pytest.skip("iptables is not installed (make test installs it as root)")
    one_port = [("--pipe-port-min", str(p), "--pipe-port-max", str(p)) for p in PIPE_PORTS]
    with _node(redis, *one_port[0]) as first, _node(redis, *one_port[1]) as second:
        publisher = await MediaClient.join(first.ws, "stall", "P")
        viewer = await MediaClient.join(second.ws, "stall", "V")
        try:
            await publisher.publish()
            await until(
                lambda: viewer.receives_from(publisher.participant_id, video=30, audio=30),
                timeout=30,
            )
            (video,) = viewer.tracks_from(publisher.participant_id, "video")
            lost_before = total(metrics(second), "veche_pipe_packets_lost_total")
            asked_before = total(metrics(first), "veche_pipe_keyframe_requests_received_total")
            ports = ",".join(map(str, PIPE_PORTS))
            rule = ["INPUT", "-p", "udp", "-m", "multiport", "--dports", ports, "-j", "DROP"]
            subprocess.run(["iptables", "-w", "-I", *rule], check=True)
            cut = time.monotonic()
            noticed: dict[str, float] = {}
            try:
                while len(noticed) < 2 and time.monotonic() - cut < 4:
                    for name, node in (("first", first), ("second", second)):
                        values = await asyncio.to_thread(metrics, node)
                        if name not in noticed and total(values, "veche_pipe_stalled") == 1:
                            noticed[name] = time.monotonic() - cut
                    await asyncio.sleep(0.05)
                await asyncio.sleep(max(0.0, 4 - (time.monotonic() - cut)))
                frozen = video.frames
            finally:
                subprocess.run(["iptables", "-w", "-D", *rule], check=True)
            back = await until(lambda: video.frames > frozen, timeout=10, step=0.01)
            await until(lambda: video.frames >= frozen + 15, timeout=3)  # and it moves
            assert viewer.tracks_from(publisher.participant_id, "video") == [video]
            a, b = metrics(first), metrics(second)
        finally:
            for client in (publisher, viewer):
                await client.close()
        logs = [first.output(), second.output()]
    # Noticed by both, as the /metrics poll saw it and as each node measured its silence.
    assert set(noticed) == {"first", "second"}, noticed
    assert max(noticed.values()) < 2.5, noticed  # 1.5-1.75 s, plus the poll's own delay
    for log in logs:
        silences = [float(x) for x in re.findall(r"pipe stalled.*?silent=([0-9.]+)", log)]
        assert len(silences) == 1, log[-3000:]
        assert silences[0] < 2.0
        assert "pipe keyed afresh" in log
        assert "Traceback" not in log, log[-3000:]
    assert back < 3.0
    for values in (a, b):
        assert total(values, "veche_pipes") == 1
        assert total(values, "veche_pipe_stalled") == 0
        assert total(values, "veche_pipe_stalls_total") == 1
        assert 3.5 < total(values, "veche_pipe_stalled_seconds_total") < 5.5
    # Four seconds of the publisher's audio (50 packets a second) and video, dropped.
    assert total(b, "veche_pipe_packets_lost_total") - lost_before > 200
    assert total(a, "veche_pipe_keyframe_requests_received_total") > asked_before
    print(f"stall noticed after {noticed}, first frame {back:.2f} s after the filter went")


async def test_the_room_node_shows_the_layers_each_participant_is_sent_wherever_it_is(
    redis: RedisProcess,
) -> None:
    """Two replayed simulcast publishers of one room, one on each node, each showing the other
    large: the admin API on the room's node gives each the top layer of the other's camera,
    with its width and bitrate: its own participant's of the camera that came over the pipe,
    the other node's participant's as that node reports it."""
    clip = await asyncio.to_thread(load_clip)
    flags = (*NO_GOVERNOR, "--max-connections-per-address", "100")
    with _node(redis, *flags) as first, _node(redis, *flags) as second:
        epoch = time.monotonic()
        here = Rig(first.ws, "layers", 2, clip, epoch=epoch, count=1, measured_every=2)
        there = Rig(second.ws, "layers", 2, clip, epoch=epoch, first=1, measured_every=2)
        try:
            joining = asyncio.ensure_future(here.join(timeout=20))
            await until(lambda: bool(here.participants), timeout=10)  # the room is the first's
            assert await there.join(timeout=20) == []
            assert await joining == []
            (local,), (guest,) = here.participants, there.participants
            nodes = {first.participant("layers", p.participant_id)["node"] for p in (local, guest)}
            assert len(nodes) == 2

            def top_layer_of_the_other(who: str, other: str) -> bool:
                layers = first.participant("layers", who)["layers"]
                return (
                    len(layers) == 1
                    and layers[0]["from"] == other
                    and layers[0]["source"] == "camera"
                    and layers[0]["layer"] == "f"
                    and (layers[0]["width"] or 0) >= 640
                    and (layers[0]["bitrate"] or 0) > 100_000
                )

            await until(
                lambda: top_layer_of_the_other(local.participant_id, guest.participant_id),
                timeout=10,
            )
            await until(  # its bitrate may come with a refresh, every 5 s
                lambda: top_layer_of_the_other(guest.participant_id, local.participant_id),
                timeout=15,
            )
            assert first.receiving("layers", guest.participant_id)["video"] == 1
        finally:
            await here.close()
            await there.close()
