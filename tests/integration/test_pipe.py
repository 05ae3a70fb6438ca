"""Pipes between two processes' media, on real UDP sockets with real SRTP: one endpoint sends a
simulcast uptrack, the other stands it in for local viewers (two ends in one test process; the
wire between them is the loopback interface)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from tests.unit.test_forwarding import DELTA, KEY, FakeWriter
from veche.cluster.envelopes import PipeKey, ToMedia
from veche.cluster.pipes import PipeBroker, default_pipe_host
from veche.ids import ParticipantId, RoomName
from veche.media import MediaConfig
from veche.media.pipe import STALL_AFTER, PipeEndpoint, PipeLink, new_key
from veche.media.rooms import MediaRooms
from veche.media.tracks import Downtrack, SenderFeed, Uptrack

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
RIDS = ("q", "h", "f")
SSRCS = (1000, 2000, 3000)


class Publisher:
    """Feeds an uptrack the three layers of a simulcast camera, as a publish receiver does;
    keyframe requests it gets are noted, by layer."""

    def __init__(self) -> None:
        self.requests: list[int] = []
        self.uptrack = Uptrack(
            ParticipantId("presenter"), "video", VP8, self._ask, source="camera", rids=RIDS
        )
        self.sequence = [10, 5000, 30000]
        self.timestamp = 0
        self.sent = [0, 0, 0]
        for index, ssrc in enumerate(SSRCS):
            self.uptrack.assign_stream(index, ssrc)

    def _ask(self, ssrc: int) -> None:
        self.requests.append(SSRCS.index(ssrc))

    def frame(self, keyframe: bool = False) -> None:
        """One frame on every layer, two packets each."""
        self.timestamp += 3000
        for index, ssrc in enumerate(SSRCS):
            for part in range(2):
                payload = (KEY if keyframe else DELTA) if part == 0 else b"\x00" + b"p" * 20
                packet = RtpPacket(
                    payload_type=96,
                    marker=part == 1,
                    sequence_number=self.sequence[index] & 0xFFFF,
                    timestamp=self.timestamp,
                    ssrc=ssrc,
                    payload=payload,
                )
                self.sequence[index] += 1
                self.sent[index] += 1
                self.uptrack.on_packet(packet, VP8)


@pytest.fixture
async def ends() -> AsyncIterator[tuple[PipeEndpoint, PipeEndpoint]]:
    a = await PipeEndpoint.open("127.0.0.1", 41000, 41099)
    b = await PipeEndpoint.open("127.0.0.1", 41000, 41099)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def link(a: PipeEndpoint, b: PipeEndpoint) -> tuple[PipeLink, PipeLink]:
    """Both ends of a link between ``a`` and ``b``, with keys as the bus would hand them."""
    a_to_b, b_to_a = new_key(), new_key()
    return (
        PipeLink(a, b.address, a_to_b, b_to_a),
        PipeLink(b, a.address, b_to_a, a_to_b),
    )


def viewer(uptrack: Uptrack, name: str, layer: int) -> tuple[Downtrack, FakeWriter]:
    writer = FakeWriter()
    feed = SenderFeed("video")
    downtrack = Downtrack(uptrack, ParticipantId(name), feed, layer=layer)
    feed.ready(writer)
    return downtrack, writer


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


async def test_pipe_carries_each_needed_layer_once_for_all_viewers(
    ends: tuple[PipeEndpoint, PipeEndpoint],
) -> None:
    """Two viewers of the middle layer on the receiving side: each of its packets crosses the
    pipe once, the other layers not at all, and both viewers get every frame."""
    out_end, in_end = link(*ends)
    publisher = Publisher()
    piped_out = out_end.send_track(publisher.uptrack)
    stand_in = in_end.receive_track(piped_out.describe()).uptrack
    publisher.frame(keyframe=True)  # the layers flow at the publisher
    out_end.feedback()
    await settle()
    (_, first), (_, second) = viewer(stand_in, "v1", 1), viewer(stand_in, "v2", 1)
    await settle()  # their keyframe request crosses back
    assert publisher.requests == [1]
    sent_before = out_end.stats.packets_sent
    publisher.frame(keyframe=True)
    for _ in range(9):
        publisher.frame()
    await settle()
    assert out_end.stats.packets_sent - sent_before == 20  # layer 1's ten frames, once
    assert in_end.stats.packets_received == out_end.stats.packets_sent
    assert len(first.frames) == len(second.frames) == 10
    assert in_end.stats.packets_lost == 0


async def test_pipe_layer_change_crosses(ends: tuple[PipeEndpoint, PipeEndpoint]) -> None:
    """A viewer switching to the top layer gets it over the pipe at its next keyframe; the
    layer nobody needs any more stops crossing after the next feedback round."""
    out_end, in_end = link(*ends)
    publisher = Publisher()
    piped_out = out_end.send_track(publisher.uptrack)
    stand_in = in_end.receive_track(piped_out.describe()).uptrack
    publisher.frame(keyframe=True)
    out_end.feedback()
    await settle()
    downtrack, writer = viewer(stand_in, "v1", 0)
    await settle()
    publisher.frame(keyframe=True)
    await settle()
    assert downtrack.layer == 0
    downtrack.want_layer(2)
    await settle()
    assert publisher.requests[-1] == 2
    publisher.frame(keyframe=True)
    await settle()
    assert downtrack.layer == 2
    in_end.feedback()
    await settle()
    assert piped_out.wanted == {2}
    before = out_end.stats.packets_sent
    publisher.frame()
    await settle()
    assert out_end.stats.packets_sent - before == 2
    assert len(writer.frames) == 4  # the old layer until the new one's keyframe


async def test_pipe_packets_are_srtp_on_the_wire(ends: tuple[PipeEndpoint, PipeEndpoint]) -> None:
    """What a pipe sends is SRTP: the clear payload does not appear in the datagram, it fails
    authentication under another key, and one altered byte makes its own end drop it."""
    a, _ = ends
    wire = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wire.bind(("127.0.0.1", 0))
    wire.setblocking(False)
    try:
        key = new_key()
        sender = PipeLink(a, wire.getsockname(), key, new_key())
        publisher = Publisher()
        piped_out = sender.send_track(publisher.uptrack)
        piped_out.wanted = {0}
        publisher.frame(keyframe=True)
        await settle()
        datagrams = []
        while True:
            try:
                datagrams.append(wire.recv(2048))
            except BlockingIOError:
                break
        rtp = [d for d in datagrams if not 192 <= d[1] <= 223]
        assert len(rtp) == 2
        for datagram in rtp:
            assert KEY[2:] not in datagram
            assert b"p" * 20 not in datagram
            clear = 21 if RtpPacket.parse(datagram).marker else len(KEY)
            assert len(datagram) == 12 + clear + 10  # header, ciphertext, authentication tag
        receiver = PipeLink(a, ("127.0.0.1", 9), new_key(), new_key())  # the wrong key
        receiver.datagram(rtp[0])
        assert receiver.stats.rejected == 1
        assert receiver.stats.packets_received == 0
        sender.close()
        right = PipeLink(a, ("127.0.0.1", 9), new_key(), key)
        right.receive_track(piped_out.describe())
        tampered = bytearray(rtp[1])
        tampered[20] ^= 1
        right.datagram(bytes(tampered))
        right.datagram(rtp[0])
        assert right.stats.rejected == 1
        assert right.stats.packets_received == 1
        right.close()
        receiver.close()
    finally:
        wire.close()


async def test_pipe_stall_is_noticed_within_two_seconds(
    ends: tuple[PipeEndpoint, PipeEndpoint],
) -> None:
    """A link whose other end goes silent calls its ``on_stall`` once, within 2 s; it counts
    as live again when the other end is heard."""
    a, b = ends
    stalled = asyncio.Event()
    a_to_b, b_to_a = new_key(), new_key()
    near = PipeLink(a, b.address, a_to_b, b_to_a, on_stall=lambda _: stalled.set())
    far = PipeLink(b, a.address, b_to_a, a_to_b)
    await asyncio.sleep(1.2)
    assert not near.stalled
    assert near.stats.stalls == 0
    far.close()
    loop = asyncio.get_running_loop()
    silent = loop.time()
    await asyncio.wait_for(stalled.wait(), STALL_AFTER + 1.5)
    assert loop.time() - silent < 2.0
    assert near.stalled
    assert near.stats.stalls == 1
    far = PipeLink(b, a.address, b_to_a, a_to_b)
    await asyncio.sleep(0.8)
    assert not near.stalled
    far.close()
    near.close()


async def test_pipe_loss_counts_sequence_gaps_per_stream(
    ends: tuple[PipeEndpoint, PipeEndpoint],
) -> None:
    """Sequence numbers skipped on one layer's stream count as lost (each layer on its own, a
    late packet neither counted twice nor mistaken for a jump back)."""
    out_end, in_end = link(*ends)
    publisher = Publisher()
    piped_out = out_end.send_track(publisher.uptrack)
    in_end.receive_track(piped_out.describe())

    def send(layer: int, sequence: int) -> None:
        packet = RtpPacket(payload_type=96, sequence_number=sequence, ssrc=1, payload=DELTA)
        out_end.send_rtp(packet, piped_out.ssrc | layer)

    for sequence in (100, 101, 105, 103, 106, 107):  # 102-104 skipped, 103 late
        send(0, sequence)
    for sequence in (65534, 65535, 0, 2):  # across the wrap: 1 skipped
        send(2, sequence)
    await settle()
    assert in_end.stats.packets_received == 10
    assert in_end.stats.packets_lost == 3 + 1


async def test_pipe_heard_again_after_a_stall_asks_its_publisher_for_keyframes(
    ends: tuple[PipeEndpoint, PipeEndpoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wire from the publisher's side drops everything for longer than ``STALL_AFTER``:
    the receiving end notices, and when the wire carries again the layer its viewer needs asks
    the real publisher for a keyframe across the pipe (the viewer's decoder missed seconds)."""
    out_end, in_end = link(*ends)
    publisher = Publisher()
    piped_out = out_end.send_track(publisher.uptrack)
    stand_in = in_end.receive_track(piped_out.describe()).uptrack
    publisher.frame(keyframe=True)
    out_end.feedback()
    await settle()
    viewer(stand_in, "v1", 1)
    await settle()
    assert publisher.requests == [1]
    publisher.frame(keyframe=True)
    await settle()
    assert in_end.stats.packets_received == 2
    sending = ends[0].send
    monkeypatch.setattr(ends[0], "send", lambda data, remote: None)  # the wire drops it all
    loop = asyncio.get_running_loop()
    cut = loop.time()
    while not in_end.stalled:
        publisher.frame()
        await asyncio.sleep(0.05)
        assert loop.time() - cut < 2.0, "the stall was not noticed within 2 s"
    assert publisher.requests == [1]
    monkeypatch.setattr(ends[0], "send", sending)
    publisher.frame()
    await settle(0.1)
    assert not in_end.stalled
    assert publisher.requests == [1, 1]
    assert in_end.stats.stalls == 1
    assert in_end.stats.stalled_seconds > 0
    assert in_end.stats.packets_lost > 0  # the frames sent into the void


@pytest.mark.skipif(os.environ.get("VECHE_IN_NETNS") != "1", reason="needs the test netns")
async def test_pipe_host_defaults_to_the_address_redis_is_reached_from() -> None:
    """A Redis on another host of the internal network (the namespace's 10.99.0.0/24): pipes
    are received on this host's address on that network, where the other nodes reach it."""
    assert await default_pipe_host("redis://10.99.0.2:6379/0") == "10.99.0.1"
    endpoint = await PipeEndpoint.open(await default_pipe_host("redis://10.99.0.2/0"), 41100, 41199)
    try:
        assert endpoint.address[0] == "10.99.0.1"
    finally:
        endpoint.close()


async def test_pipe_brokers_agree_on_keys_again_after_a_fresh_key_is_lost(
    ends: tuple[PipeEndpoint, PipeEndpoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two nodes' pipe brokers (real media rooms and sockets, the bus a queue between them).
    The wire from A to B drops everything: B's link stalls and keys itself afresh, and the bus
    loses that key. A, which then cannot read B, stalls in turn; its own fresh key is answered
    with B's current one, so once the wire carries again both links are live and nothing is
    refused any more."""
    a_end, b_end = ends
    losing: list[str] = []
    lost: list[PipeKey] = []
    brokers: dict[str, PipeBroker] = {}

    def post(sender: str) -> Callable[[str, ToMedia], None]:
        def deliver(node: str, envelope: ToMedia) -> None:
            if sender in losing and isinstance(envelope, PipeKey):
                lost.append(envelope)
                return
            loop.call_soon(brokers[node].handle, envelope)  # type: ignore[arg-type]

        return deliver

    loop = asyncio.get_running_loop()
    for node, endpoint in (("a", a_end), ("b", b_end)):
        media = MediaRooms(MediaConfig(), lambda participant, message: None)
        brokers[node] = PipeBroker(node, media, endpoint, post(node))
    room = RoomName("room")
    for broker in brokers.values():
        broker.room_media(room, {"a", "b"})
    await settle(0.7)
    a_link, b_link = brokers["a"].links["b"], brokers["b"].links["a"]
    assert not a_link.stalled
    assert not b_link.stalled
    sending = a_end.send
    monkeypatch.setattr(a_end, "send", lambda data, remote: None)  # A to B drops it all
    losing.append("b")
    await asyncio.wait_for(until_true(lambda: b_link.stalled), 2.5)
    assert len(lost) == 1  # B's fresh key never reached A
    losing.clear()
    await asyncio.wait_for(until_true(lambda: a_link.stalled), 2.5)  # B's packets unreadable
    monkeypatch.setattr(a_end, "send", sending)
    await asyncio.wait_for(until_true(lambda: not a_link.stalled and not b_link.stalled), 3)
    refused = a_link.stats.rejected, b_link.stats.rejected
    await settle(1.0)
    assert (a_link.stats.rejected, b_link.stats.rejected) == refused
    assert not a_link.stalled
    assert not b_link.stalled
    for broker in brokers.values():
        await broker.stop()


async def until_true(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.02)
