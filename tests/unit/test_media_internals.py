"""The private aiortc/aioice members that veche.media.internals relies on still exist."""

from __future__ import annotations

import importlib.metadata

import pytest
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from tests.integration.peers import decline_sections
from veche.media.internals import accept_declined_sections, check_internals


def test_aiortc_internals_are_where_veche_expects_them() -> None:
    """Fails loudly (naming each member) when an aiortc or aioice upgrade moves one."""
    versions = {name: importlib.metadata.version(name) for name in ("aiortc", "aioice")}
    assert check_internals() == [], f"with {versions}"


async def test_bind_ports_keeps_candidates_in_range_and_announces_public_ip() -> None:
    """Host candidates use only ports of the range and carry the configured public address
    (gathering only: nothing is sent)."""
    from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection

    from veche.media.internals import bind_ports

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    try:
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        bind_ports(pc, 41100, 41109, "192.0.2.10")
        await pc.setLocalDescription(await pc.createOffer())
        candidates = [
            line.split()
            for line in pc.localDescription.sdp.splitlines()
            if line.startswith("a=candidate")
        ]
        assert candidates
        for fields in candidates:
            address, port = fields[4], int(fields[5])
            assert 41100 <= port <= 41109
            assert address == "192.0.2.10" or ":" in address  # IPv6 keeps its own address
    finally:
        await pc.close()


async def _offer_and_answer(*, decline: tuple[str, ...]) -> tuple[RTCPeerConnection, str, str]:
    """A server-side connection offering an Opus and an H.264 section (as a subscribe leg
    does), its offer, and an aiortc client's answer with ``decline``'s codecs declined as
    Firefox does."""
    config = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    server, client = RTCPeerConnection(config), RTCPeerConnection(config)
    server.addTransceiver(AudioStreamTrack(), direction="sendonly")
    video = server.addTransceiver(VideoStreamTrack(), direction="sendonly")
    h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"]
    video.setCodecPreferences(h264[:1])
    await server.setLocalDescription(await server.createOffer())
    await client.setRemoteDescription(server.localDescription)
    await client.setLocalDescription(await client.createAnswer())
    answer = decline_sections(client.localDescription.sdp, decline)
    await client.close()
    return server, server.localDescription.sdp, answer


async def test_aiortc_still_refuses_a_declined_section() -> None:
    """Canary: aiortc cannot apply an answer that declines a section (port 0, no ICE
    attributes). When an upgrade accepts it, accept_declined_sections can go."""
    server, _offer, answer = await _offer_and_answer(decline=("video/H264",))
    try:
        assert "m=video 0 " in answer
        with pytest.raises(ValueError, match="ICE username fragment or password is missing"):
            await server.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    finally:
        await server.close()


async def test_declined_sections_are_applied_as_inactive() -> None:
    """The rewritten answer applies: the declined section is inactive (nothing is sent there),
    the other keeps its direction, and its mid is reported."""
    server, offer, answer = await _offer_and_answer(decline=("video/H264",))
    try:
        fixed, declined = accept_declined_sections(answer, offer)
        assert declined == ["1"]
        await server.setRemoteDescription(RTCSessionDescription(fixed, "answer"))
        audio, video = server.getTransceivers()
        assert video.currentDirection == "inactive"
        assert audio.currentDirection == "sendonly"
    finally:
        await server.close()


def test_an_answer_that_declines_nothing_is_left_alone() -> None:
    """Without a declined section the answer passes through unchanged."""
    answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n"
    assert accept_declined_sections(answer, answer) == (answer, [])


def test_faster_codec_matching_gives_what_aiortc_gives() -> None:
    """:func:`lighten_aiortc`'s codec matching returns what aiortc's own does, for a
    Chromium-like remote list (other payload types, RTX, a codec aiortc lacks, feedback aiortc
    does not offer) and for RTX of a codec refused; and its results share no list or dict with
    aiortc's codec table (aiortc changes them in place)."""
    from aiortc.codecs import CODECS
    from aiortc.rtcpeerconnection import find_common_codecs as aiortc_find
    from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters

    from veche.media import internals

    remote = [
        RTCRtpCodecParameters(
            "video/VP8",
            90000,
            payloadType=120,
            rtcpFeedback=[RTCRtcpFeedback("nack"), RTCRtcpFeedback("transport-cc")],
        ),
        RTCRtpCodecParameters("video/rtx", 90000, payloadType=121, parameters={"apt": 120}),
        RTCRtpCodecParameters("video/AV1", 90000, payloadType=45),
        RTCRtpCodecParameters("video/rtx", 90000, payloadType=46, parameters={"apt": 45}),
        RTCRtpCodecParameters(
            "video/H264",
            90000,
            payloadType=102,
            rtcpFeedback=[RTCRtcpFeedback("nack", "pli")],
            parameters={
                "level-asymmetry-allowed": 1,
                "packetization-mode": 1,
                "profile-level-id": "42e01f",
            },
        ),
    ]
    for kind, codecs in (("video", remote), ("audio", [CODECS["audio"][0]])):
        expected = aiortc_find(CODECS[kind], codecs)
        found = internals._find_common_codecs(CODECS[kind], codecs)
        assert found == expected
        assert found
        for codec in found:
            for table in CODECS[kind]:
                assert codec.rtcpFeedback is not table.rtcpFeedback
                assert codec.parameters is not table.parameters


async def test_fingerprints_are_computed_once_and_stay_the_same() -> None:
    """With :func:`lighten_aiortc`, a certificate's fingerprints are what aiortc computes
    (every algorithm), asked again they are equal but a new list."""
    from aiortc.rtcdtlstransport import RTCCertificate

    from veche.media.internals import lighten_aiortc

    certificate = RTCCertificate.generateCertificate()
    before = certificate.getFingerprints()
    lighten_aiortc()
    lighten_aiortc()  # idempotent
    first = certificate.getFingerprints()
    again = certificate.getFingerprints()
    assert first == before
    assert again == first
    assert again is not first


def test_a_receiver_makes_its_bandwidth_estimator_at_its_first_packet() -> None:
    """With :func:`lighten_aiortc`, a video receiver holds no estimator's thousand buckets
    until a packet comes, and then estimates exactly as aiortc's own estimator does."""
    from aiortc.rate import RemoteBitrateEstimator

    from veche.media import internals

    internals.lighten_aiortc()
    lazy = internals._LazyEstimator()
    assert lazy._real is None
    real = RemoteBitrateEstimator()
    for n in range(400):
        packet = {
            "arrival_time_ms": 1000 + n * 5,
            "abs_send_time": (n * 5 * (1 << 18) // 1000) & 0xFFFFFF,
            "payload_size": 1100,
            "ssrc": 1234,
        }
        assert lazy.add(**packet) == real.add(**packet)
    assert lazy._real is not None


def test_rate_window_gives_aiortcs_rates() -> None:
    """The cheap rate window answers exactly as aiortc's bucket counter, on packets in bursts,
    with silences longer than the window, and after resets."""
    import random

    from aiortc.rate import RateCounter

    from veche.media.internals import RateWindow

    rng = random.Random(7)
    theirs, ours = RateCounter(1000, 8000), RateWindow(1000, 8000)
    now = 5_000
    for step in range(20_000):
        roll = rng.random()
        if roll < 0.001:
            now += rng.randint(1_000, 3_000)  # a silence longer than the window
        elif roll < 0.3:
            now += rng.randint(1, 40)
        if step % 5_000 == 4_999:
            theirs.reset()
            ours.reset()
        if rng.random() < 0.2:
            assert ours.rate(now) == theirs.rate(now)
        size = rng.randint(50, 1_200)
        theirs.add(size, now)
        ours.add(size, now)
        assert ours.rate(now) == theirs.rate(now)
