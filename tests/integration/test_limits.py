"""Limits on what one client can make the server do, and what error replies never contain."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from typing import Any

import pytest
from aiohttp import WSMsgType, WSServerHandshakeError
from aiohttp.test_utils import TestClient
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from veche.app import create_app
from veche.appkeys import HUB
from veche.client import VecheClient
from veche.protocol import Error
from veche.tasks import cancel_and_wait

from .peers import MediaClient
from .serverproc import run_server
from .waiting import until
from .wsutil import expect, hello, ping_ok

Client = TestClient[Any, Any]

in_netns = pytest.mark.skipif(
    os.environ.get("VECHE_IN_NETNS") != "1",
    reason="media tests run inside a private network namespace (make test)",
)


async def _client(aiohttp_client: Any, make_settings: Any, **overrides: Any) -> Client:
    result: Client = await aiohttp_client(create_app(make_settings(**overrides)))
    return result


async def test_message_flood_is_refused_then_closed(
    aiohttp_client: Any, make_settings: Any
) -> None:
    """Past its burst a client gets rate_limited; if it goes on it is closed with 1008; a
    calm client in the same room is not disturbed."""
    client = await _client(aiohttp_client, make_settings, ws_rate=5, ws_burst=10)
    calm = await client.ws_connect("/ws")
    await hello(calm, "flood", "Calm")
    noisy = await client.ws_connect("/ws")
    await hello(noisy, "flood", "Noisy")
    await expect(calm, "participant_joined")
    for n in range(40):
        await noisy.send_json({"type": "ping", "id": f"p{n}"})
    codes = []
    while True:
        msg = await noisy.receive(timeout=3)
        if msg.type is not WSMsgType.TEXT:
            break
        data = json.loads(msg.data)
        codes.append(data.get("code", data["type"]))
    assert "rate_limited" in codes
    assert msg.type is WSMsgType.CLOSE
    assert msg.data == 1008
    left = await expect(calm, "participant_left")
    assert left["reason"] == "disconnected"
    await ping_ok(calm)


async def test_connections_per_address_are_limited(aiohttp_client: Any, make_settings: Any) -> None:
    """Beyond max_connections_per_address, the upgrade is refused with 429."""
    client = await _client(aiohttp_client, make_settings, max_connections_per_address=3)
    sockets = [await client.ws_connect("/ws") for _ in range(3)]
    with pytest.raises(WSServerHandshakeError) as caught:
        await client.ws_connect("/ws")
    assert caught.value.status == 429
    await sockets[0].close()
    await asyncio.sleep(0.1)
    extra = await client.ws_connect("/ws")
    await ping_ok(extra)


async def test_connection_without_hello_is_closed(aiohttp_client: Any, make_settings: Any) -> None:
    """A socket that never says hello is closed with 1008 after hello_timeout; one that did
    stays."""
    client = await _client(aiohttp_client, make_settings, hello_timeout=0.3)
    idle = await client.ws_connect("/ws")
    joined = await client.ws_connect("/ws")
    await hello(joined, "idle", "Ada")
    msg = await idle.receive(timeout=3)
    assert msg.type is WSMsgType.CLOSE
    assert msg.data == 1008
    await asyncio.sleep(0.4)
    await ping_ok(joined)


async def _offer_sdp() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="sendonly")
        offer = await pc.createOffer()
        return offer.sdp
    finally:
        await pc.close()


async def test_candidates_are_filtered_and_counted(aiohttp_client: Any, make_settings: Any) -> None:
    """Loopback, metadata and mDNS candidates are dropped (in the SDP and trickled); at most
    max_candidates are accepted per connection; an oversized SDP is refused."""
    client = await _client(aiohttp_client, make_settings, max_candidates=3, max_sdp_length=2000)
    ws = await client.ws_connect("/ws")
    welcome = await hello(ws, "candidates", "Ada")
    sdp = await _offer_sdp()
    # aiortc's offer has no candidates before gathering: add some to the SDP.
    media = "a=candidate:9 1 udp 1 127.0.0.1 40000 typ host\r\n"
    await ws.send_json({"type": "offer", "pc": "publish", "sdp": sdp + media})
    await expect(ws, "answer")
    tried = [
        "candidate:1 1 udp 2122260223 169.254.169.254 5000 typ host",
        "candidate:2 1 udp 2122260223 abcd.local 5001 typ host",
        "candidate:3 1 udp 2122260223 10.0.0.3 5002 typ host",
        "candidate:4 1 udp 2122260223 10.0.0.4 5003 typ host",
        "candidate:5 1 udp 2122260223 10.0.0.5 5004 typ host",
    ]
    for line in tried:
        await ws.send_json(
            {"type": "candidate", "pc": "publish", "candidate": line, "sdp_mid": "0"}
        )
    await ws.send_json(
        {
            "type": "candidate",
            "id": "c6",
            "pc": "publish",
            "candidate": "candidate:6 1 udp 2122260223 10.0.0.6 5005 typ host",
            "sdp_mid": "0",
        }
    )
    error = await expect(ws, "error")
    assert (error["code"], error["ref"]) == ("rate_limited", "c6")
    peer = next(
        p for p in client.app[HUB].media.peers if p.participant_id == welcome["participant_id"]
    )
    assert peer.publish_pc is not None
    ice = peer.publish_pc.getTransceivers()[0].receiver.transport.transport
    addresses = sorted(c.ip for c in ice.getRemoteCandidates())
    assert addresses == ["10.0.0.3", "10.0.0.4", "10.0.0.5"]
    await ws.send_json(
        {"type": "offer", "pc": "publish", "sdp": sdp + "a=x:" + "y" * 2000 + "\r\n"}
    )
    assert (await expect(ws, "error"))["code"] == "bad_sdp"


def _remote_addresses(client: Client, participant_id: str) -> set[str]:
    peer = next(p for p in client.app[HUB].media.peers if p.participant_id == participant_id)
    assert peer.publish_pc is not None
    ice = peer.publish_pc.getTransceivers()[0].receiver.transport.transport
    return {c.ip for c in ice.getRemoteCandidates()}


async def test_candidates_limit_holds_across_reoffers(
    aiohttp_client: Any, make_settings: Any
) -> None:
    """Candidates count over a connection's lifetime: a re-offer with new candidates does not
    start the count again, and a trickled one beyond the limit is refused."""
    client = await _client(aiohttp_client, make_settings, max_candidates=3)
    ws = await client.ws_connect("/ws")
    welcome = await hello(ws, "reoffers", "Ada")
    sdp = await _offer_sdp()
    for batch in range(3):
        lines = "".join(
            f"a=candidate:{n} 1 udp 1 10.0.{batch}.{n} 5000 typ host\r\n" for n in range(2)
        )
        await ws.send_json({"type": "offer", "pc": "publish", "sdp": sdp + lines})
        await expect(ws, "answer")
    assert len(_remote_addresses(client, welcome["participant_id"])) == 3
    await ws.send_json(
        {
            "type": "candidate",
            "id": "late",
            "pc": "publish",
            "candidate": "candidate:7 1 udp 1 10.0.9.9 5000 typ host",
            "sdp_mid": "0",
        }
    )
    error = await expect(ws, "error")
    assert (error["code"], error["ref"]) == ("rate_limited", "late")


async def test_candidates_repeated_per_section_count_once(
    aiohttp_client: Any, make_settings: Any
) -> None:
    """A client that repeats its candidates in each of many sections (as aiortc does) is not
    refused: the same address, port and transport counts once, in the SDP and trickled."""
    client = await _client(aiohttp_client, make_settings, max_candidates=2)
    ws = await client.ws_connect("/ws")
    welcome = await hello(ws, "repeated", "Ada")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        for _ in range(3):
            pc.addTransceiver("audio", direction="sendonly")
        offer = (await pc.createOffer()).sdp
    finally:
        await pc.close()
    pair = (
        "a=candidate:1 1 udp 1 10.0.0.1 5000 typ host\r\n"
        "a=candidate:2 1 udp 1 10.0.0.2 5000 typ host\r\n"
    )
    sections = offer.split("m=")
    sdp = sections[0] + "".join("m=" + section + pair for section in sections[1:])
    assert sdp.count("a=candidate:") == 6
    await ws.send_json({"type": "offer", "pc": "publish", "sdp": sdp})
    await expect(ws, "answer")
    await ws.send_json(
        {
            "type": "candidate",
            "pc": "publish",
            "candidate": "candidate:1 1 udp 1 10.0.0.1 5000 typ host",
            "sdp_mid": "1",
        }
    )
    await ping_ok(ws)  # an error for the candidate would come before the pong
    assert _remote_addresses(client, welcome["participant_id"]) == {"10.0.0.1", "10.0.0.2"}


async def _sections_offer(count: int) -> str:
    """A publish offer with ``count`` audio sections (no candidates: nothing connects)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        for _ in range(count):
            pc.addTransceiver("audio", direction="sendonly")
        return (await pc.createOffer()).sdp
    finally:
        await pc.close()


async def test_subscribe_offer_and_answer_beyond_the_client_sdp_limit(
    aiohttp_client: Any, make_settings: Any
) -> None:
    """The server's own subscribe offer is not held to the 60,000 characters a client's offer
    may have at most: a member of a room with many tracks is offered them all; and its answer,
    as long, is applied (a schema bound of 60,000 characters once refused an aiortc client's
    answer in a camera meeting past about 25 publishers)."""
    client = await _client(
        aiohttp_client,
        make_settings,
        max_tracks=16,
        max_sdp_length=60000,
        max_pending_media_per_address=8,  # every publisher here is on one address
    )
    offer = await _sections_offer(16)
    for n in range(8):
        ws = await client.ws_connect("/ws")
        await hello(ws, "crowded", f"Pub{n}")
        await ws.send_json({"type": "offer", "pc": "publish", "sdp": offer})
        await expect(ws, "answer")
    viewer = await client.ws_connect("/ws")
    await hello(viewer, "crowded", "Viewer")
    subscribe = await expect(viewer, "offer", timeout=20)
    assert subscribe["sdp"].count("m=audio") == 8 * 16
    assert len(subscribe["sdp"]) > 60000
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await pc.setRemoteDescription(RTCSessionDescription(subscribe["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription.sdp
        assert len(answer) > 60000
        await viewer.send_json({"type": "answer", "pc": "subscribe", "sdp": answer})
        await ping_ok(viewer)  # an error for the answer would come before the pong
    finally:
        await pc.close()


async def test_refused_subscribe_answer_does_not_stall_later_offers(
    aiohttp_client: Any, make_settings: Any
) -> None:
    """A subscribe answer the server refuses ends the wait for it: the member gets an error,
    the next track published is offered to it anyway, and its answer to that is applied."""
    # A subscribe answer may have 6,000 characters and 2,000 per track (3 each) of the two
    # others a full room of three holds: 18,000.
    client = await _client(aiohttp_client, make_settings, max_sdp_length=6000, max_participants=3)
    offer = await _sections_offer(1)
    viewer = await client.ws_connect("/ws")
    await hello(viewer, "stall", "Viewer")
    first = await client.ws_connect("/ws")
    await hello(first, "stall", "First")
    await first.send_json({"type": "offer", "pc": "publish", "sdp": offer})
    await expect(viewer, "offer")
    padding = "a=x:" + "y" * 19000 + "\r\n"
    await viewer.send_json({"type": "answer", "pc": "subscribe", "sdp": offer + padding})
    error = await expect(viewer, "error")
    assert error["code"] == "bad_sdp"
    assert "longer than 18000 characters" in error["message"]
    second = await client.ws_connect("/ws")
    await hello(second, "stall", "Second")
    await second.send_json({"type": "offer", "pc": "publish", "sdp": offer})
    again = await expect(viewer, "offer")
    assert again["sdp"].count("m=audio") == 2
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await pc.setRemoteDescription(RTCSessionDescription(again["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription.sdp
        assert len(answer) <= 6000
        await viewer.send_json({"type": "answer", "pc": "subscribe", "sdp": answer})
        await ping_ok(viewer)  # an error for the answer would come before the pong
    finally:
        await pc.close()


async def test_an_answer_after_a_refused_one_is_still_taken(
    aiohttp_client: Any, make_settings: Any
) -> None:
    """An answer that does not fit the outstanding subscribe offer (one meant for an earlier
    offer, or from a connection the client already replaced, arriving late) is refused, and the
    right answer that follows is still applied: the offer is not given up on."""
    client = await _client(aiohttp_client, make_settings)
    offer = await _sections_offer(1)
    viewer = await client.ws_connect("/ws")
    await hello(viewer, "late", "Viewer")
    first = await client.ws_connect("/ws")
    await hello(first, "late", "First")
    await first.send_json({"type": "offer", "pc": "publish", "sdp": offer})
    subscribe = await expect(viewer, "offer")
    stale = await _sections_offer(3)  # three sections: not an answer to this offer
    await viewer.send_json({"type": "answer", "pc": "subscribe", "sdp": stale})
    error = await expect(viewer, "error")
    assert error["code"] == "bad_sdp"
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await pc.setRemoteDescription(RTCSessionDescription(subscribe["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await viewer.send_json(
            {"type": "answer", "pc": "subscribe", "sdp": pc.localDescription.sdp}
        )
        await ping_ok(viewer)  # an error for the answer would come before the pong
    finally:
        await pc.close()


async def test_pending_publish_connections_per_address_are_limited(
    aiohttp_client: Any, make_settings: Any
) -> None:
    """Beyond max_pending_media_per_address publish connections that never connected, an
    address's next publish offer is refused with rate_limited and binds no port; another
    address still publishes, and the address may publish again once one of its own left."""
    client = await _client(
        aiohttp_client, make_settings, max_pending_media_per_address=2, trust_forwarded=True
    )
    offer = await _sections_offer(1)

    async def joined(address: str, name: str) -> Any:
        ws = await client.ws_connect("/ws", headers={"X-Forwarded-For": address})
        welcome = await hello(ws, "pending", name)
        return ws, welcome["participant_id"]

    def publish_pc(participant_id: str) -> Any:
        peer = next(p for p in client.app[HUB].media.peers if p.participant_id == participant_id)
        return peer.publish_pc

    held = [await joined("192.0.2.1", f"Held{n}") for n in range(2)]
    for ws, _ in held:
        await ws.send_json({"type": "offer", "pc": "publish", "sdp": offer})
        await expect(ws, "answer")
    third, third_id = await joined("192.0.2.1", "Third")
    await third.send_json({"type": "offer", "id": "o3", "pc": "publish", "sdp": offer})
    error = await expect(third, "error")
    assert (error["code"], error["ref"]) == ("rate_limited", "o3")
    assert publish_pc(third_id) is None
    other, _ = await joined("198.51.100.7", "Other")
    await other.send_json({"type": "offer", "pc": "publish", "sdp": offer})
    await expect(other, "answer")
    await held[0][0].close()
    await until(lambda: len(client.app[HUB].media.peers) == 3, timeout=5)
    await third.send_json({"type": "offer", "pc": "publish", "sdp": offer})
    await expect(third, "answer")
    assert publish_pc(third_id) is not None


async def test_error_replies_and_logs_hold_no_secret_or_traceback() -> None:
    """Trigger every kind of error against a server holding a TURN secret and a room
    password: no reply and no log line contains either, or a stack trace."""
    from veche.client import VecheClient

    turn_secret = "turn-secret-never-shown-0123456789"
    password = "room-password-never-shown"
    with run_server(
        "--ice-servers", "turn:127.0.0.1:3478", "--turn-secret", turn_secret, "--log-level", "debug"
    ) as server:
        replies: list[str] = []
        async with await VecheClient.connect(server.ws) as host:
            await host.join("guarded", "Host")
            await host.send({"type": "configure", "password": password})
            await host.expect("room_updated")
            async with await VecheClient.connect(server.ws) as other:
                for frame in (
                    "{not json",
                    "[]",
                    json.dumps({"type": "hello", "version": 1, "room": "guarded", "name": "x"}),
                    json.dumps(
                        {
                            "type": "hello",
                            "version": 1,
                            "room": "guarded",
                            "name": "x",
                            "password": password + "!",
                        }
                    ),
                    json.dumps(
                        {
                            "type": "hello",
                            "version": 1,
                            "room": "guarded",
                            "name": "x",
                            "password": password,
                        }
                    ),
                    json.dumps({"type": "offer", "pc": "publish", "sdp": "v=0\r\nm=audio 9 x"}),
                    json.dumps({"type": "candidate", "pc": "publish", "candidate": "garbage"}),
                    json.dumps({"type": "moderate", "action": "remove", "participant_id": "x"}),
                    json.dumps({"type": "nope"}),
                ):
                    await other.ws.send(frame)
                    replies.append(str(await asyncio.wait_for(other.ws.recv(), 5)))
        assert server.terminate() == 0
        everything = "\n".join(replies) + server.output()
    assert turn_secret not in everything
    assert password not in everything
    assert "Traceback" not in everything
    assert len(replies) == 9


def _answers(client: MediaClient) -> list[str]:
    return [m["sdp"] for m in client.messages if m["type"] == "answer" and m["pc"] == "publish"]


async def _reoffer_with_fresh_section(client: MediaClient) -> None:
    """Add a video section to ``client``'s publish connection, offer it and apply the answer."""
    pc = client.publish_pc
    before = len(_answers(client))
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    await client.send({"type": "offer", "pc": "publish", "sdp": pc.localDescription.sdp})
    await until(lambda: len(_answers(client)) > before, timeout=10)
    await pc.setRemoteDescription(RTCSessionDescription(_answers(client)[-1], "answer"))


@pytest.mark.slow
@in_netns
async def test_tracks_beyond_max_tracks_are_answered_inactive() -> None:
    """A publisher that re-offers with a fresh section ten times ends with at most max_tracks
    sections answered active and forwarded, and another member keeps receiving its audio and
    video."""
    with run_server(env={"VECHE_MAX_TRACKS": "3"}) as server:
        publisher = await MediaClient.join(server.ws, "tracks", "Pub")
        viewer = await MediaClient.join(server.ws, "tracks", "View")
        try:
            await publisher.publish()
            await until(
                lambda: viewer.receives_from(publisher.participant_id, video=10, audio=10),
                timeout=20,
            )
            for _ in range(10):
                await _reoffer_with_fresh_section(publisher)
            sections = _answers(publisher)[-1].split("\r\nm=")[1:]
            assert len(sections) == 12
            assert sum("a=inactive" not in section for section in sections) == 3
            video = viewer.tracks_from(publisher.participant_id, "video")[0]
            audio = viewer.tracks_from(publisher.participant_id, "audio")[0]
            frames = video.frames, audio.frames
            await until(
                lambda: video.frames > frames[0] + 30 and audio.frames > frames[1] + 50,
                timeout=20,
            )
            offer = [m for m in viewer.messages if m["type"] == "offer"][-1]["sdp"]
            forwarded = [line for line in offer.splitlines() if line.startswith("a=msid:")]
            assert len(forwarded) <= 3
            assert len(viewer.remote) <= 3
        finally:
            await publisher.close()
            await viewer.close()


FLOOD_SECONDS = 4.0
FLOOD_RATE = 15
"""configure{password} messages each flooder sends per second (under ``ws_rate``)."""


async def _flood(client: VecheClient, tag: str, replies: Counter[str]) -> None:
    """Send ``configure {password}`` ``FLOOD_RATE`` times a second for ``FLOOD_SECONDS``,
    counting the replies (``room_updated``, or the error's code)."""

    async def read() -> None:
        while True:
            message = await client.receive(timeout=FLOOD_SECONDS + 10)
            replies[message.code if isinstance(message, Error) else message.type] += 1

    reader = asyncio.create_task(read())
    try:
        for n in range(int(FLOOD_RATE * FLOOD_SECONDS)):
            await client.send({"type": "configure", "password": f"{tag} guess {n}"})
            await asyncio.sleep(1 / FLOOD_RATE)
        await asyncio.sleep(0.5)  # the last replies
    finally:
        await cancel_and_wait(reader)


async def _round_trips(client: VecheClient, until: asyncio.Future[Any]) -> list[float]:
    """Ping round trips in seconds, one every 10 ms, until ``until`` is done."""
    trips: list[float] = []
    while not until.done():
        started = time.perf_counter()
        await client.send({"type": "ping", "id": f"p{len(trips)}"})
        await client.expect("pong")
        trips.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)
    return trips


async def test_password_flood_neither_slows_other_meetings_nor_goes_unlimited() -> None:
    """Ten moderators of one room and ten of their own rooms each send configure{password}
    15 times a second: another room's pings come back within 50 ms at the 99th percentile,
    the shared room's flooders get rate_limited, and passwords are still being set."""
    # ws_rate raised for the measuring client's 100 pings a second; the flooders stay under 20.
    with run_server("--max-connections-per-address", "30", "--ws-rate", "200") as server:
        async with contextlib.AsyncExitStack() as stack:

            async def joined(room: str, name: str) -> tuple[VecheClient, str]:
                client = await stack.enter_async_context(await VecheClient.connect(server.ws))
                welcome = await client.join(room, name)
                return client, welcome.participant_id

            quiet, _ = await joined("quiet", "Calm")
            shared = [await joined("flooded", f"Shared {n}") for n in range(10)]
            alone = [await joined(f"own-{n}", f"Alone {n}") for n in range(10)]
            host = shared[0][0]
            for _, participant_id in shared[1:]:
                await host.send(
                    {
                        "type": "moderate",
                        "action": "make_moderator",
                        "participant_id": participant_id,
                    }
                )
                await host.expect("participant_updated")
            shared_replies: Counter[str] = Counter()
            alone_replies: Counter[str] = Counter()
            flood = asyncio.gather(
                *(_flood(c, f"s{n}", shared_replies) for n, (c, _) in enumerate(shared)),
                *(_flood(c, f"a{n}", alone_replies) for n, (c, _) in enumerate(alone)),
            )
            trips = await _round_trips(quiet, flood)
            await flood
    trips.sort()
    p99 = trips[int(len(trips) * 0.99)]
    median = trips[len(trips) // 2]
    print(f"ping round trips under the flood: {len(trips)}, p50 {median:.4f} s, p99 {p99:.4f} s")
    assert len(trips) > 100
    assert p99 < 0.050
    assert shared_replies["rate_limited"] > 0
    # Each change reaches all ten: the room's burst of 5 and 1 a second, not 150 a second.
    assert shared_replies["room_updated"] <= 10 * (5 + FLOOD_SECONDS + 1)
    assert alone_replies["room_updated"] >= 10 * 5  # every lone room's burst was hashed
