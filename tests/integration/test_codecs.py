"""Codecs that leave no one out: real aiortc participants against the real server process.

A "Firefox" here is an aiortc client that says it decodes what a Firefox without OpenH264 does
(the normal state on a closed network), or one that says nothing and declines H.264 sections
the way Firefox does.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from aiortc import RTCSessionDescription

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

FIREFOX_DECODERS = ["video/VP8", "video/VP9", "video/AV1", "video/rtx", "audio/opus"]
CHROMIUM_DECODERS = ["video/VP8", "video/H264", "video/VP9", "video/rtx", "audio/opus"]


def _video_section(sdp: str) -> str:
    return sdp.split("m=video", 1)[1].split("\nm=", 1)[0]


def _of_type(client: MediaClient, kind: str) -> list[dict[str, Any]]:
    return [m for m in client.messages if m["type"] == kind]


async def test_a_publisher_preferring_h264_is_answered_with_vp8() -> None:
    """An offer listing H.264 before VP8 (Safari's order) is answered with VP8 alone by
    default, so a viewer that decodes only VP8 receives the video."""
    with run_server() as server:
        publisher = await MediaClient.join(server.ws, "safari", "Pub")
        fox = await MediaClient.join(server.ws, "safari", "Fox", receive_codecs=FIREFOX_DECODERS)
        try:
            await publisher.publish(video_codecs=["video/H264", "video/VP8"])
            answer = _video_section(_of_type(publisher, "answer")[0]["sdp"])
            assert "VP8/90000" in answer
            assert "H264/90000" not in answer
            await until(
                lambda: fox.receives_from(publisher.participant_id, video=30, audio=50),
                timeout=20,
            )
            assert _of_type(fox, "track_unavailable") == []
        finally:
            await publisher.close()
            await fox.close()


async def test_a_viewer_without_h264_makes_the_publisher_switch_to_vp8() -> None:
    """A server preferring H.264 gets it from a publisher offering H.264 and VP8 while every
    viewer decodes it; a viewer without H.264 joining makes the server ask the publisher for a
    new offer (no connection is torn down), answered with VP8; that viewer is never offered
    H.264."""
    with run_server(env={"VECHE_VIDEO_CODECS": "H264,VP8"}) as server:
        publisher = await MediaClient.join(
            server.ws, "switch", "Pub", receive_codecs=CHROMIUM_DECODERS
        )
        viewer = await MediaClient.join(
            server.ws, "switch", "Cro", receive_codecs=CHROMIUM_DECODERS
        )
        fox: MediaClient | None = None
        try:
            await publisher.publish(video_codecs=["video/H264", "video/VP8"])
            first = _video_section(_of_type(publisher, "answer")[0]["sdp"])
            assert "H264/90000" in first
            assert "VP8/90000" not in first
            await until(lambda: viewer.tracks_from(publisher.participant_id, "video"), 20)

            fox = await MediaClient.join(
                server.ws, "switch", "Fox", receive_codecs=FIREFOX_DECODERS
            )
            asked = await publisher.wait_for(lambda m: m["type"] == "renegotiate", timeout=2)
            assert asked == {"type": "renegotiate", "pc": "publish"}

            pc = publisher.publish_pc
            await pc.setLocalDescription(await pc.createOffer())
            await publisher.send({"type": "offer", "pc": "publish", "sdp": pc.localDescription.sdp})
            await until(lambda: len(_of_type(publisher, "answer")) == 2, timeout=5)
            second = _of_type(publisher, "answer")[1]["sdp"]
            await pc.setRemoteDescription(RTCSessionDescription(second, "answer"))
            assert "VP8/90000" in _video_section(second)
            assert "H264/90000" not in _video_section(second)
            assert _of_type(publisher, "error") == []
            # Fox got the audio at once and was never offered H.264.
            await until(
                lambda: fox is not None and fox.tracks_from(publisher.participant_id, "audio"), 10
            )
            for offer in _of_type(fox, "offer"):
                assert "H264" not in offer["sdp"]
        finally:
            for client in (publisher, viewer, fox):
                if client is not None:
                    await client.close()


async def test_a_viewer_is_told_when_no_codec_suits_and_gets_everyone_else() -> None:
    """An H.264-only publisher cannot be switched: a viewer without H.264 is told, in a
    message naming the track (``track_unavailable``), is never offered H.264, and receives the
    VP8 publisher's audio and video and the H.264 publisher's audio; nobody's media is reset."""
    with run_server() as server:
        h264 = await MediaClient.join(server.ws, "mixed", "Hal")
        vp8 = await MediaClient.join(server.ws, "mixed", "Vic")
        fox = await MediaClient.join(server.ws, "mixed", "Fox", receive_codecs=FIREFOX_DECODERS)
        try:
            await h264.publish(video_codecs=["video/H264"])
            await vp8.publish()
            told = await fox.wait_for(lambda m: m["type"] == "track_unavailable", timeout=10)
            assert told == {
                "type": "track_unavailable",
                "participant_id": h264.participant_id,
                "source": "camera",
                "codec": "video/H264",
            }
            await until(
                lambda: fox.receives_from(vp8.participant_id, video=30, audio=50), timeout=20
            )
            await until(
                lambda: any(r.frames > 50 for r in fox.tracks_from(h264.participant_id, "audio")),
                timeout=10,
            )
            assert fox.tracks_from(h264.participant_id, "video") == []
            for offer in _of_type(fox, "offer"):
                assert "H264" not in offer["sdp"]
            # The others are untouched: Vic receives Hal's H.264 video and Fox's nothing.
            await until(lambda: vp8.receives_from(h264.participant_id, video=30, audio=50), 20)
            for client in (h264, vp8, fox):
                assert _of_type(client, "error") == []
            assert "media reset" not in server.output()
        finally:
            for client in (h264, vp8, fox):
                await client.close()


async def test_a_declined_section_leaves_every_other_track_flowing() -> None:
    """A viewer that says nothing of its codecs and declines H.264 sections in its answer, as
    Firefox does, gets no ``bad_sdp`` and no ``media_failed``: it is told about the H.264 track
    and keeps receiving everything else, on the same connection."""
    with run_server() as server:
        h264 = await MediaClient.join(server.ws, "declined", "Hal")
        vp8 = await MediaClient.join(server.ws, "declined", "Vic")
        fox = await MediaClient.join(server.ws, "declined", "Fox", decline=("video/H264",))
        try:
            await h264.publish(video_codecs=["video/H264"])
            await vp8.publish()
            told = await fox.wait_for(lambda m: m["type"] == "track_unavailable", timeout=10)
            assert told["participant_id"] == h264.participant_id
            await until(
                lambda: fox.receives_from(vp8.participant_id, video=30, audio=50), timeout=20
            )
            await until(
                lambda: any(r.frames > 50 for r in fox.tracks_from(h264.participant_id, "audio")),
                timeout=10,
            )
            connection = fox.subscribe_pc
            await asyncio.sleep(1.0)
            assert fox.subscribe_pc is connection
            assert _of_type(fox, "error") == []
            assert "media reset" not in server.output()
        finally:
            for client in (h264, vp8, fox):
                await client.close()


async def test_a_candidate_before_the_subscribe_answer_is_refused_in_words() -> None:
    """A subscribe candidate with no subscribe answer applied yet is refused with an error that
    says so, and the connection stays usable."""
    with run_server() as server:
        client = await MediaClient.join(server.ws, "early", "Ada")
        try:
            await client.send(
                {
                    "type": "candidate",
                    "id": "c1",
                    "pc": "subscribe",
                    "candidate": "candidate:1 1 udp 2122260223 10.99.0.1 50000 typ host",
                    "sdp_mid": "0",
                }
            )
            error = await client.wait_for(lambda m: m.get("ref") == "c1", timeout=5)
            assert error["code"] == "wrong_state"
            assert "before an answer to the server's subscribe offer" in error["message"]
            await client.send({"type": "ping", "id": "p1"})
            await client.wait_for(lambda m: m["type"] == "pong", timeout=5)
        finally:
            await client.close()


async def test_a_publisher_that_ignores_renegotiate_leaves_the_viewer_told() -> None:
    """A client that does not answer ``renegotiate`` with a new offer keeps its codec; the
    viewer who cannot decode it is told within a few seconds and gets everything else."""
    with run_server(env={"VECHE_VIDEO_CODECS": "H264,VP8"}) as server:
        publisher = await MediaClient.join(
            server.ws, "stubborn", "Pub", receive_codecs=CHROMIUM_DECODERS
        )
        fox: MediaClient | None = None
        try:
            await publisher.publish(video_codecs=["video/H264", "video/VP8"])
            fox = await MediaClient.join(
                server.ws, "stubborn", "Fox", receive_codecs=FIREFOX_DECODERS
            )
            await publisher.wait_for(lambda m: m["type"] == "renegotiate", timeout=2)
            told = await fox.wait_for(lambda m: m["type"] == "track_unavailable", timeout=8)
            assert told["participant_id"] == publisher.participant_id
            assert told["codec"] == "video/H264"
            await until(
                lambda: (
                    fox is not None
                    and any(
                        r.frames > 50 for r in fox.tracks_from(publisher.participant_id, "audio")
                    )
                ),
                timeout=10,
            )
        finally:
            for client in (publisher, fox):
                if client is not None:
                    await client.close()
