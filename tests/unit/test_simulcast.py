"""Simulcast without sockets: the offer's layers read and accepted in the answer, a layer's
retransmissions recognised, a layer chosen for a tile's width, each viewer sent one layer and
switched at the target layer's keyframe with one continuous stream (sequence numbers,
timestamps, VP8 picture ids)."""

from __future__ import annotations

from aiortc import RTCPeerConnection
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from tests.unit.test_forwarding import VP8, FakeTime, FakeWriter
from veche.media.internals import tap_receiver
from veche.media.payloads import vp8_picture_ids, vp8_width, with_vp8_picture_ids
from veche.media.rewriter import PictureIdRewriter, StreamRewriter
from veche.media.simulcast import answer_layers, layer_for_width, offered_layers
from veche.media.tracks import Downtrack, SenderFeed, Uptrack

OFFER = "\r\n".join(
    [
        "v=0",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        "a=mid:1",
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
        "a=rid:q send",
        "a=rid:h send",
        "a=rid:f send",
        "a=simulcast:send q;h;~f",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        "a=mid:2",
        "",
    ]
)

FIREFOX_OFFER = "\r\n".join(
    [
        "v=0",
        "m=video 0 UDP/TLS/RTP/SAVPF 120 124",
        "a=bundle-only",
        "a=sendonly",
        "a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:9/sendonly urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "a=extmap:10/sendonly urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
        "a=mid:1",
        "a=rid:q send",
        "a=rid:h send",
        "a=rid:f send",
        "a=simulcast:send q;h;f",
        "a=ssrc:3472565947 cname:{bb038d8d}",
        "a=ssrc:3245378323 cname:{bb038d8d}",
        "a=ssrc-group:FID 3472565947 3245378323",
        "",
    ]
)
"""A Firefox ESR 153 camera section, abridged: extension ids with a direction, an SSRC and an
RTX group per layer."""

RIDS = {1: "q", 2: "h", 3: "f"}


def _vp8(picture_id: int, *, key: bool, width: int = 320) -> bytes:
    """A VP8 first packet with a 15-bit picture id and TL0PICIDX (and, for a key frame, the
    frame header stating ``width``)."""
    descriptor = bytes((0x90, 0xC0, 0x80 | picture_id >> 8, picture_id & 0xFF, picture_id & 0xFF))
    if key:
        return descriptor + b"\x00\x00\x00\x9d\x01\x2a" + width.to_bytes(2, "little") + b"\0" * 8
    return descriptor + b"\x01" + b"d" * 10


def _packet(ssrc: int, seq: int, timestamp: int, payload: bytes) -> RtpPacket:
    packet = RtpPacket(
        payload_type=96,
        marker=1,
        sequence_number=seq,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=payload,
    )
    packet.extensions.rtp_stream_id = RIDS[ssrc]
    return packet


def test_offered_layers_reads_rids_lowest_first_and_the_extension_ids() -> None:
    """A section with ``a=simulcast:send`` gives its rids (a paused one too) and extension ids;
    one without gives nothing."""
    layers = offered_layers(OFFER)
    assert list(layers) == ["1"]
    assert layers["1"].rids == ("q", "h", "f")
    assert set(layers["1"].extensions.values()) == {10, 11}


def test_offered_layers_reads_a_firefox_offer() -> None:
    """Firefox's extension ids carry a direction (``9/sendonly``): its layers and ids are read
    as Chromium's are."""
    layers = offered_layers(FIREFOX_OFFER)
    assert layers["1"].rids == ("q", "h", "f")
    assert layers["1"].extensions == {
        "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id": 9,
        "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id": 10,
    }


def test_answer_layers_accepts_each_rid_in_its_section() -> None:
    """The answer gets ``a=rid:<id> recv`` and ``a=simulcast:recv`` in the simulcast section
    only."""
    answer = "v=0\r\nm=video 9 X 96\r\na=mid:1\r\nm=video 9 X 96\r\na=mid:2\r\n"
    text = answer_layers(answer, offered_layers(OFFER))
    first, second = text.split("m=video")[1:]
    assert "a=rid:q recv" in first
    assert "a=simulcast:recv q;h;f" in first
    assert "a=rid" not in second


async def test_a_layers_retransmissions_are_known_by_an_id_sent_before_the_layer() -> None:
    """A browser names a layer's RTX stream (repaired stream id) only in its first packets,
    which may be bandwidth-probing padding sent before the layer itself starts (seen from
    Chromium and Firefox for the top layer): its later retransmissions, unnamed, are still
    unwrapped into the layer's stream."""
    pc = RTCPeerConnection()
    receiver = pc.addTransceiver("video", direction="recvonly").receiver
    received: list[tuple[int, int, int]] = []
    tap_receiver(
        receiver, lambda p, codec: received.append((p.ssrc, p.sequence_number, p.payload_type))
    )
    rtx = RTCRtpCodecParameters(
        mimeType="video/rtx", clockRate=90000, payloadType=97, parameters={"apt": 96}
    )
    receiver.__dict__["_RTCRtpReceiver__codecs"].update({96: VP8, 97: rtx})

    def packet(payload_type: int, ssrc: int, seq: int, payload: bytes) -> RtpPacket:
        return RtpPacket(
            payload_type=payload_type, sequence_number=seq, timestamp=0, ssrc=ssrc, payload=payload
        )

    probe = packet(97, 2003, 1, b"")
    probe.padding_size = 200
    probe.extensions.repaired_rtp_stream_id = "f"
    first = packet(96, 1003, 500, b"\x90\x80\x01frame")
    first.extensions.rtp_stream_id = "f"
    resent = packet(97, 2003, 2, (499).to_bytes(2, "big") + b"\x90\x80\x00frame")
    for p in (probe, first, resent):
        await receiver._handle_rtp_packet(p, arrival_time_ms=0)
    await pc.close()
    assert received == [(1003, 500, 96), (1003, 499, 96)]


def test_layer_for_width_follows_the_tile_size() -> None:
    """Up to 360 px the low layer, up to 720 the middle, wider the high; no view the middle;
    fewer layers cap it."""
    assert [layer_for_width(w, 3) for w in (200, 360, 400, 720, 1200)] == [0, 0, 1, 1, 2]
    assert layer_for_width(None, 3) == 1
    assert layer_for_width(1200, 2) == 1
    assert layer_for_width(1200, 1) == 0


def test_vp8_picture_ids_are_read_and_rewritten() -> None:
    """Picture id and TL0PICIDX round-trip; a 7-bit picture id is widened to 15 bits."""
    payload = _vp8(300, key=True, width=640)
    assert vp8_picture_ids(payload) == (300, 300 & 0xFF)
    assert vp8_width("VP8", payload) == 640
    assert vp8_picture_ids(with_vp8_picture_ids(payload, 7000, 9)) == (7000, 9)
    short = bytes((0x90, 0xC0, 0x05, 0x02, 0x10))
    assert vp8_picture_ids(with_vp8_picture_ids(short, 200, None)) == (200, 2)


def test_picture_ids_follow_on_across_a_switch() -> None:
    """The first source passes unchanged; the next continues at the last id plus one."""
    rewriter = PictureIdRewriter()
    assert rewriter.frame([_vp8(10, key=True)]) == [_vp8(10, key=True)]
    rewriter.frame([_vp8(11, key=False)])
    rewriter.switch()
    (out,) = rewriter.frame([_vp8(5000, key=True)])
    assert vp8_picture_ids(out) == (12, 12)


def _simulcast(time: FakeTime, asked: list[int]) -> Uptrack:
    return Uptrack(
        "p-pub",
        "video",
        VP8,
        asked.append,
        clock=time.clock,
        schedule=time.schedule,
        rids=("q", "h", "f"),  # type: ignore[arg-type]
    )


def test_a_viewer_is_sent_one_layer_and_switches_at_the_targets_keyframe() -> None:
    """A viewer that wants the low layer gets only its frames; asked for the high one it keeps
    the low one until the high one's keyframe (asked for at once), then only the high one, with
    sequence numbers and picture ids continuous."""
    time, asked = FakeTime(), []
    uptrack = _simulcast(time, asked)
    writer = FakeWriter()
    sent: list[bytes] = []
    writer.write_frame = lambda p, s, t, a: (
        sent.extend(p[:1]),
        writer.frames.append((s, t, len(p))),
    )  # type: ignore[method-assign]
    feed = SenderFeed("video", StreamRewriter("video", first_sequence=0, origin=0))
    viewer = Downtrack(uptrack, "p-viewer", feed, layer=0)
    feed.ready(writer)
    for ssrc in (1, 2, 3):
        uptrack.on_packet(_packet(ssrc, 100, 1000, _vp8(ssrc * 1000, key=True)), VP8)
    assert viewer.layer == 0
    assert len(writer.frames) == 1
    viewer.want_layer(2)
    assert asked[-1] == 3
    for ssrc in (1, 2, 3):
        uptrack.on_packet(_packet(ssrc, 101, 4000, _vp8(ssrc * 1000 + 1, key=False)), VP8)
    assert viewer.layer == 0
    assert len(writer.frames) == 2
    time.advance(0.1)
    for ssrc in (1, 2, 3):
        uptrack.on_packet(_packet(ssrc, 102, 7000, _vp8(ssrc * 1000 + 2, key=ssrc == 3)), VP8)
    assert viewer.layer == 2
    assert viewer.switches == 1
    assert [seq for seq, _, _ in writer.frames] == [0, 1, 2, 3]
    assert [vp8_picture_ids(p)[0] for p in sent] == [1000, 1001, 1002, 1003]
    assert uptrack.layers[2].width == 320


def test_a_recording_keeps_the_layer_it_took_up_while_that_flows() -> None:
    """With the top layer not flowing, a recording takes up the highest one that does at its
    next keyframe (asked for until it comes), and keeps it when the top layer starts: the
    recorded picture keeps its size."""
    time, asked = FakeTime(), []
    uptrack = _simulcast(time, asked)
    recorded: list[int] = []
    uptrack.sinks.append(lambda frame: recorded.append(frame.timestamp))
    seq, stamp = 100, 1000
    for _ in range(3):  # q and h flow, f does not: after LAYER_TIMEOUT only q and h count
        for ssrc in (1, 2):
            uptrack.on_packet(_packet(ssrc, seq, stamp, _vp8(seq, key=False)), VP8)
        seq, stamp = seq + 1, stamp + 3000
        time.advance(0.6)
    assert recorded == []
    assert 2 in asked  # the keyframe of h was asked for
    uptrack.on_packet(_packet(2, seq, stamp, _vp8(seq, key=True)), VP8)
    assert recorded == [stamp]
    seq, stamp = seq + 1, stamp + 3000
    uptrack.on_packet(_packet(3, seq, stamp, _vp8(seq, key=True, width=1280)), VP8)
    uptrack.on_packet(_packet(2, seq, stamp, _vp8(seq, key=False)), VP8)
    assert recorded == [stamp - 3000, stamp]  # still h: f's keyframe was not taken up


def test_a_codec_switch_keeps_the_layers_streams() -> None:
    """After a codec switch the publisher's packets no longer name their layer (rid): the new
    track knows each layer's stream from the one it replaces."""
    time, asked = FakeTime(), []
    old = _simulcast(time, asked)
    for ssrc in (1, 2, 3):
        old.on_packet(_packet(ssrc, 100, 1000, _vp8(ssrc, key=True)), VP8)
    new = _simulcast(time, asked)
    new.inherit_streams(old)
    packet = _packet(2, 101, 4000, _vp8(7, key=True))
    packet.extensions.rtp_stream_id = None
    new.on_packet(packet, VP8)
    assert [layer.ssrc for layer in new.layers] == [1, 2, 3]
    assert new.layers[1].last_packet >= 0  # the packet counted for layer h


def test_a_switch_asks_again_until_the_targets_keyframe_comes() -> None:
    """A keyframe request the publisher drops does not strand a viewer: while the target layer
    sends other frames, its keyframe is asked for again (at most every KEYFRAME_INTERVAL)."""
    time, asked = FakeTime(), []
    uptrack = _simulcast(time, asked)
    feed = SenderFeed("video", StreamRewriter("video", first_sequence=0, origin=0))
    viewer = Downtrack(uptrack, "p-viewer", feed, layer=0)
    feed.ready(FakeWriter())
    for ssrc in (1, 2, 3):
        uptrack.on_packet(_packet(ssrc, 100, 1000, _vp8(ssrc * 1000, key=True)), VP8)
    viewer.want_layer(2)
    first = asked.count(3)
    for n in range(1, 6):
        time.advance(0.4)
        uptrack.on_packet(_packet(3, 100 + n, 1000 + 3000 * n, _vp8(3000 + n, key=False)), VP8)
    assert asked.count(3) >= first + 4
    assert viewer.layer == 0


def test_a_step_down_for_a_full_link_stops_the_current_layer_at_once() -> None:
    """Moved down ``at_once`` (its link is full), a viewer is sent nothing more of its current
    layer, nor resent any of it, and takes up the lower one at its keyframe; moved down for a
    smaller tile, it keeps the current layer until then."""
    time, asked = FakeTime(), []
    uptrack = _simulcast(time, asked)
    writer = FakeWriter()
    feed = SenderFeed("video", StreamRewriter("video", first_sequence=0, origin=0))
    viewer = Downtrack(uptrack, "p-viewer", feed, layer=2)
    feed.ready(writer)
    for ssrc in (1, 2, 3):
        uptrack.on_packet(_packet(ssrc, 100, 1000, _vp8(ssrc * 1000, key=True)), VP8)
    assert viewer.layer == 2
    viewer.want_layer(1)
    uptrack.on_packet(_packet(3, 101, 4000, _vp8(3001, key=False)), VP8)
    assert len(writer.frames) == 2  # a smaller tile: the top layer until the middle's keyframe
    viewer.want_layer(0, at_once=True)
    assert asked[-1] == 1
    assert writer.forgotten == 2  # its lost packets are not resent
    uptrack.on_packet(_packet(3, 102, 7000, _vp8(3002, key=False)), VP8)
    uptrack.on_packet(_packet(1, 101, 7000, _vp8(1001, key=False)), VP8)
    assert len(writer.frames) == 2
    time.advance(0.4)
    uptrack.on_packet(_packet(1, 102, 10000, _vp8(1002, key=True)), VP8)
    assert viewer.layer == 0
    assert len(writer.frames) == 3


def test_a_governed_simulcast_publisher_is_told_to_send_only_the_layers_wanted() -> None:
    """Ungoverned, a simulcast publisher gets no REMB cap (every layer keeps flowing). While the
    load governor is engaged it is told enough for the highest layer a shown viewer wants and
    no more; a paused viewer counts for nothing, a viewer wanting the top layer lifts the cap,
    and so does a recording that took no layer yet."""
    from veche.media.tracks import SIMULCAST_LAYER_REMB

    time, asked = FakeTime(), []
    uptrack = _simulcast(time, asked)
    small = Downtrack(uptrack, "p-small", SenderFeed("video", StreamRewriter("video")), layer=0)
    middle = Downtrack(uptrack, "p-mid", SenderFeed("video", StreamRewriter("video")), layer=1)
    assert uptrack.remb_cap() is None
    uptrack.governed = True
    assert uptrack.remb_cap() == SIMULCAST_LAYER_REMB[1]
    middle.set_paused(True)
    assert uptrack.remb_cap() == SIMULCAST_LAYER_REMB[0]
    small.want_layer(2)
    assert uptrack.remb_cap() is None
    small.want_layer(0)
    uptrack.sinks.append(lambda frame: None)
    assert uptrack.remb_cap() is None
    uptrack.governed = False
    assert uptrack.remb_cap() is None
