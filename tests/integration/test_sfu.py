"""The SFU with real aiortc participants and the real server process."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from .peers import MediaClient
from .serverproc import run_server
from .waiting import until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("VECHE_IN_NETNS") != "1",
        reason="media tests run inside a private network namespace (make test)",
    ),
]

SPY = [sys.executable, str(Path(__file__).with_name("spyserver.py"))]


async def test_one_publisher_three_subscribers_forwarded_without_codecs(tmp_path: Path) -> None:
    """Every subscriber decodes the publisher's audio and video; the server process creates no
    decoder and no encoder."""
    spy_file = tmp_path / "codecs.json"
    with run_server(launcher=SPY, env={"VECHE_SPY_FILE": str(spy_file)}) as server:
        publisher = await MediaClient.join(server.ws, "sfu", "Pub")
        subscribers = [await MediaClient.join(server.ws, "sfu", f"Sub{i}") for i in range(3)]
        try:
            await publisher.publish()

            def all_flowing() -> bool:
                return all(
                    sub.receives_from(publisher.participant_id, video=30, audio=50)
                    for sub in subscribers
                )

            await until(all_flowing, timeout=20)
            for sub in subscribers:
                (video,) = sub.tracks_from(publisher.participant_id, "video")
                assert video.size == (640, 480)
        finally:
            for client in (publisher, *subscribers):
                await client.close()
        assert server.terminate() == 0
    assert json.loads(spy_file.read_text()) == {"decoders": 0, "encoders": 0}


async def test_h264_publisher_is_forwarded_as_h264() -> None:
    """A publisher that offers only H.264 is answered with H.264, and subscribers receive
    H.264 (pinned on their leg too) and decode it."""
    with run_server() as server:
        publisher = await MediaClient.join(server.ws, "h264", "Pub")
        sub = await MediaClient.join(server.ws, "h264", "Sub")
        try:
            await publisher.publish(video_codecs=["video/H264"])
            answer = next(m for m in publisher.messages if m["type"] == "answer")["sdp"]
            video_section = answer.split("m=video", 1)[1]
            assert "H264/90000" in video_section
            assert "VP8/90000" not in video_section
            await until(
                lambda: any(r.track.kind == "video" and r.frames > 30 for r in sub.remote),
                timeout=20,
            )
            offer = next(m for m in sub.messages if m["type"] == "offer")["sdp"]
            sub_video = offer.split("m=video", 1)[1]
            assert "H264/90000" in sub_video
            assert "VP8/90000" not in sub_video
        finally:
            await publisher.close()
            await sub.close()


async def test_late_subscriber_gets_picture_within_a_second() -> None:
    """A participant joining a running call decodes video within 1 s of its media connecting
    (the server holds video until a keyframe and asks the publisher for one)."""
    with run_server() as server:
        publisher = await MediaClient.join(server.ws, "late", "Pub")
        early = await MediaClient.join(server.ws, "late", "Early")
        late: MediaClient | None = None
        try:
            await publisher.publish()
            await until(lambda: any(r.frames > 60 for r in early.remote), timeout=20)
            late = await MediaClient.join(server.ws, "late", "Late")
            joined = time.monotonic()
            await until(
                lambda: (
                    late is not None
                    and any(r.track.kind == "video" and r.frames > 0 for r in late.remote)
                ),
                timeout=10,
            )
            (video,) = late.tracks_from(publisher.participant_id, "video")
            assert video.first_frame_at is not None
            # aiortc's encoder sends a natural keyframe only every ~100 s: this one was asked for.
            assert video.first_frame_at - joined < 2.0
        finally:
            for client in (publisher, early, *([late] if late else [])):
                await client.close()


async def test_late_joiner_receives_every_publisher() -> None:
    """Two participants publish; a third joining later receives both videos and both audios
    on one subscribe connection (four m-sections on one bundled transport)."""
    with run_server() as server:
        first = await MediaClient.join(server.ws, "pair", "A")
        await first.publish()
        second = await MediaClient.join(server.ws, "pair", "B")
        await second.publish()
        third: MediaClient | None = None
        try:
            await until(
                lambda: (
                    all(r.frames > 10 for r in first.remote + second.remote)
                    and len(first.remote) == 2
                    and len(second.remote) == 2
                ),
                timeout=20,
            )
            third = await MediaClient.join(server.ws, "pair", "C")
            await third.publish()

            def third_receives_all() -> bool:
                assert third is not None
                owners = {(r.owner, r.track.kind) for r in third.remote if r.frames > 10}
                return owners == {
                    (p.participant_id, kind) for p in (first, second) for kind in ("audio", "video")
                }

            await until(third_receives_all, timeout=10)
            await until(
                lambda: all(
                    any(
                        r.owner == third.participant_id
                        and r.track.kind == "video"
                        and r.frames > 10
                        for r in client.remote
                    )
                    for client in (first, second)
                ),
                timeout=10,
            )
        finally:
            for client in (first, second, *([third] if third else [])):
                await client.close()


async def test_leaving_publisher_is_removed_from_subscribers() -> None:
    """When the publisher leaves, subscribers get participant_left and a renegotiation that
    makes its transceivers inactive; the server stays healthy."""
    with run_server() as server:
        publisher = await MediaClient.join(server.ws, "bye", "Pub")
        sub = await MediaClient.join(server.ws, "bye", "Sub")
        try:
            await publisher.publish()
            await until(lambda: any(r.frames > 10 for r in sub.remote), timeout=20)
            offers_before = sum(1 for m in sub.messages if m["type"] == "offer")
            await publisher.send({"type": "leave"})
            await sub.wait_for(lambda m: m["type"] == "participant_left")
            await until(
                lambda: sum(1 for m in sub.messages if m["type"] == "offer") > offers_before,
                timeout=5,
            )
            offer = [m for m in sub.messages if m["type"] == "offer"][-1]["sdp"]
            assert "a=sendonly" not in offer
            assert offer.count("a=inactive") == 2
        finally:
            await publisher.close()
            await sub.close()


def _udp_ports(pid: int) -> list[int]:
    """Local ports of the UDP sockets process ``pid`` holds (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("udp", "udp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def test_media_stays_in_port_range_announces_public_ip_and_is_released() -> None:
    """Every UDP socket of the server is in the configured range, its candidates announce
    VECHE_PUBLIC_IP, and when everyone has left no UDP socket remains."""
    with run_server(
        "--media-port-min", "41000", "--media-port-max", "41019", "--public-ip", "10.99.0.1"
    ) as server:
        publisher = await MediaClient.join(server.ws, "ports", "Pub")
        sub = await MediaClient.join(server.ws, "ports", "Sub")
        try:
            await publisher.publish()
            await until(lambda: any(r.frames > 10 for r in sub.remote), timeout=20)
            ports = _udp_ports(server.process.pid)
            assert ports, "the server holds no UDP socket during a call"
            assert all(41000 <= port <= 41019 for port in ports), ports
            answer = next(m for m in publisher.messages if m["type"] == "answer")["sdp"]
            candidates = [line for line in answer.splitlines() if line.startswith("a=candidate")]
            assert candidates
            assert all(" 10.99.0.1 " in line for line in candidates)
        finally:
            await publisher.close()
            await sub.close()
        await until(lambda: not _udp_ports(server.process.pid), timeout=10)


async def _fail_publish_connection(
    monkeypatch: pytest.MonkeyPatch, handover_wait: float, *, republish: bool
) -> None:
    """A publisher's publish connection fails: it is told ``media_failed`` for ``publish``,
    that connection is closed (the peer is not: what it receives keeps coming), and it can
    publish again. The subscriber keeps the tracks' senders for ``handover_wait`` seconds:
    with ``republish`` the new tracks take them over (no offer, same receiver); without,
    they go inactive when the wait is over."""
    from aiohttp.test_utils import TestServer

    from veche.app import create_app
    from veche.appkeys import HUB
    from veche.media import room
    from veche.settings import Settings

    monkeypatch.setattr(room, "HANDOVER_WAIT", handover_wait)
    app = create_app(Settings())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = f"ws://127.0.0.1:{server.port}/ws"
    publisher = await MediaClient.join(url, "fail", "Pub")
    sub = await MediaClient.join(url, "fail", "Sub")
    try:
        await publisher.publish()
        await until(lambda: any(r.frames > 10 for r in sub.remote), timeout=20)
        media = app[HUB].media
        failing = next(p for p in media.peers if p.participant_id == publisher.participant_id)
        pc = failing.publish_pc
        assert pc is not None
        offers_before = sum(1 for m in sub.messages if m["type"] == "offer")
        # Simulate ICE giving up (it takes aioice 30 s or more to decide by itself).
        pc._RTCPeerConnection__connectionState = "failed"  # type: ignore[attr-defined]
        pc.emit("connectionstatechange")
        error = await publisher.wait_for(lambda m: m["type"] == "error")
        assert error["code"] == "media_failed"
        assert error["pc"] == "publish"
        await until(lambda: pc.connectionState == "closed", timeout=5)
        assert not failing.closed
        assert failing.publish_pc is None
        (video,) = [r for r in sub.remote if r.track.kind == "video"]
        frames_before = video.frames
        if republish:
            await publisher.republish()
            await until(lambda: video.frames > frames_before + 10, timeout=20)
            assert sum(1 for m in sub.messages if m["type"] == "offer") == offers_before
            assert [r for r in sub.remote if r.track.kind == "video"] == [video]
            return
        await until(
            lambda: sum(1 for m in sub.messages if m["type"] == "offer") > offers_before,
            timeout=handover_wait + 5,
        )
        assert "a=inactive" in [m for m in sub.messages if m["type"] == "offer"][-1]["sdp"]
        # Published again later, it is forwarded again on the subscriber's idle transceivers
        # (reused rather than added).
        await publisher.republish()
        await until(lambda: video.frames > frames_before + 10, timeout=20)
        last_offer = [m for m in sub.messages if m["type"] == "offer"][-1]["sdp"]
        assert last_offer.count("m=") == 2
        assert f"a=msid:{publisher.participant_id} " in last_offer
    finally:
        await publisher.close()
        await sub.close()
        await server.close()


async def test_a_failed_publish_connection_hands_its_senders_to_the_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _fail_publish_connection(monkeypatch, 10.0, republish=True)


async def test_a_failed_publish_connection_not_renewed_in_time_leaves_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _fail_publish_connection(monkeypatch, 1.0, republish=False)


async def test_lossy_links_recover_with_retransmissions() -> None:
    """With packets lost both on the way in (publisher to server) and on the way out (server to
    subscriber), video keeps decoding: the server NACKs the publisher, answers the subscriber's
    NACKs from its packet history (RTX), and asks for a keyframe when a frame is lost for good."""
    from aiortc.rtp import is_rtcp

    with run_server() as server:
        publisher = await MediaClient.join(server.ws, "lossy", "Pub")
        sub = await MediaClient.join(server.ws, "lossy", "Sub")
        try:
            await publisher.publish(audio=False)
            await until(lambda: sub.subscribe_pc is not None, timeout=10)
            assert sub.subscribe_pc is not None

            # Publisher -> server: drop every 20th outgoing RTP packet.
            out_transport = publisher.publish_pc.getTransceivers()[0].sender.transport
            send_rtp = out_transport._send_rtp
            sent = {"n": 0}

            async def lossy_send(data: bytes) -> None:
                if not is_rtcp(data):
                    sent["n"] += 1
                    if sent["n"] % 20 == 0:
                        return
                await send_rtp(data)

            out_transport._send_rtp = lossy_send  # type: ignore[method-assign]

            # Server -> subscriber: drop every 15th incoming RTP packet, count retransmissions.
            await until(lambda: bool(sub.remote), timeout=10)
            in_transport = sub.subscribe_pc.getTransceivers()[0].receiver.transport
            handle_rtp = in_transport._handle_rtp_data
            rtx_types = {
                int(line.split()[0].split(":")[1])
                for line in sub.subscribe_pc.remoteDescription.sdp.splitlines()
                if line.startswith("a=rtpmap:") and "rtx/" in line
            }
            received = {"n": 0, "rtx": 0}

            async def lossy_receive(data: bytes, arrival_time_ms: int) -> None:
                received["n"] += 1
                if data[1] & 0x7F in rtx_types:
                    received["rtx"] += 1
                elif received["n"] % 15 == 0:
                    return
                await handle_rtp(data, arrival_time_ms)

            in_transport._handle_rtp_data = lossy_receive  # type: ignore[method-assign]

            (video,) = sub.tracks_from(publisher.participant_id, "video")
            start = video.frames
            await asyncio.sleep(6)
            assert video.frames - start >= 120, f"only {video.frames - start} frames in 6 s"
            assert received["rtx"] > 0, "no retransmission reached the subscriber"
        finally:
            await publisher.close()
            await sub.close()


async def test_active_speaker_from_audio_levels_and_moderator_mute_stops_forwarding() -> None:
    """Of two publishers, the one sending a loud tone becomes the active speaker (from the
    RTP audio-level extension, nothing decoded); when a moderator mutes it, the server stops
    forwarding its audio even though the client keeps sending."""
    with run_server() as server:
        host = await MediaClient.join(server.ws, "speak", "Host")
        loud = await MediaClient.join(server.ws, "speak", "Loud")
        quiet = await MediaClient.join(server.ws, "speak", "Quiet")
        try:
            await loud.publish(video=False)
            await quiet.publish(video=False, silent=True)
            speaker = await host.wait_for(
                lambda m: m["type"] == "active_speaker" and m.get("participant_id"), timeout=10
            )
            assert speaker["participant_id"] == loud.participant_id

            await until(lambda: bool(host.tracks_from(loud.participant_id, "audio")), timeout=10)
            (audio,) = host.tracks_from(loud.participant_id, "audio")
            await until(lambda: audio.frames > 20, timeout=10)
            await host.send(
                {"type": "moderate", "action": "mute", "participant_id": loud.participant_id}
            )
            await host.wait_for(
                lambda m: (
                    m["type"] == "participant_updated"
                    and m["participant"]["id"] == loud.participant_id
                    and not m["participant"]["audio"]
                )
            )
            await asyncio.sleep(0.5)  # frames already on the way still arrive
            before = audio.frames
            await asyncio.sleep(1.5)
            assert audio.frames - before <= 2, "muted audio is still forwarded"
        finally:
            for client in (host, loud, quiet):
                await client.close()


async def test_connection_that_never_connects_is_reported_in_time() -> None:
    """A publish offer without any reachable candidate leaves ICE checking for ever; after
    media_connect_timeout the client gets media_failed and the server releases its media."""
    from aiortc import RTCConfiguration, RTCPeerConnection
    from websockets.asyncio.client import connect

    with run_server("--media-connect-timeout", "1") as server:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.addTransceiver("audio", direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            sdp = "".join(
                line + "\r\n"
                for line in pc.localDescription.sdp.splitlines()
                if not line.startswith("a=candidate")
            )
        finally:
            await pc.close()
        async with connect(server.ws) as ws:
            await ws.send(json.dumps({"type": "hello", "version": 1, "room": "stuck", "name": "A"}))
            await ws.recv()
            await ws.send(json.dumps({"type": "offer", "pc": "publish", "sdp": sdp}))
            start = time.monotonic()
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if message["type"] == "error":
                    break
            assert message["code"] == "media_failed"
            assert "did not connect within 1 s" in message["message"]
            assert time.monotonic() - start < 5
        await until(lambda: not _udp_ports(server.process.pid), timeout=10)


async def test_sender_reports_only_for_senders_that_send() -> None:
    """The server reports (RTCP SR) on a subscriber's sender while it sends, and not on an
    idle one: here a silent microphone, not among the loudest (one is forwarded), next to a
    loud one and cameras that are forwarded. aiortc alone reports on every sender every
    second."""
    import re
    from collections import Counter

    from aiortc.rtp import RtcpPacket, RtcpSrPacket

    with run_server("--max-audio-streams", "1") as server:
        viewer = await MediaClient.join(server.ws, "reports", "Viewer")
        loud = await MediaClient.join(server.ws, "reports", "Loud")
        quiet = await MediaClient.join(server.ws, "reports", "Quiet")
        try:
            await loud.publish(cheap=True)
            await quiet.publish(cheap=True, silent=True)
            await until(
                lambda: all(
                    viewer.tracks_from(p.participant_id, "video")
                    and viewer.tracks_from(p.participant_id, "video")[0].frames > 5
                    for p in (loud, quiet)
                ),
                timeout=20,
            )
            pc = viewer.subscribe_pc
            assert pc is not None
            transport = pc.getTransceivers()[0].receiver.transport
            reports: Counter[int] = Counter()
            handle = transport._handle_rtcp_data

            async def counting(data: bytes) -> None:
                for packet in RtcpPacket.parse(data):
                    if isinstance(packet, RtcpSrPacket):
                        reports[packet.ssrc] += 1
                await handle(data)

            transport._handle_rtcp_data = counting
            await asyncio.sleep(5)
            offer = [m for m in viewer.messages if m["type"] == "offer"][-1]["sdp"]
            ssrcs: dict[tuple[str, str], int] = {}
            for section in offer.split("m=")[1:]:
                ssrc = re.search(r"a=ssrc:(\d+) ", section)
                owner = re.search(r"a=msid:(\S+) ", section)
                if ssrc and owner:
                    ssrcs[owner.group(1), section.split(" ", 1)[0]] = int(ssrc.group(1))
            assert len(ssrcs) == 4
            assert reports[ssrcs[loud.participant_id, "audio"]] >= 3
            assert reports[ssrcs[loud.participant_id, "video"]] >= 3
            assert reports[ssrcs[quiet.participant_id, "video"]] >= 3
            assert reports[ssrcs[quiet.participant_id, "audio"]] == 0
        finally:
            for client in (viewer, loud, quiet):
                await client.close()
