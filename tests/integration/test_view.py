"""``view``: a subscriber is sent only the videos it says it shows (audio from everyone), with
real aiortc participants and the real server process; the admin API's per-participant
``receiving`` counters say what the server sends."""

from __future__ import annotations

import asyncio
import os

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

TOKEN = "admin-token-0123456789abcdef-0123456"


async def _frames_grow(client: MediaClient, owner: str, seconds: float = 1.0) -> int:
    """Video frames of ``owner`` that ``client`` decoded in ``seconds``."""
    (track,) = client.tracks_from(owner, "video")
    before = track.frames
    await asyncio.sleep(seconds)
    return track.frames - before


async def test_a_viewer_is_sent_only_the_videos_it_shows() -> None:
    """Two publishers, one viewer: by default the viewer gets both videos; showing one stops
    the other's frames (its audio goes on); showing none stops every video; showing the other
    brings its frames back within 2 s."""
    with run_server("--admin-token", TOKEN) as server:
        ada = await MediaClient.join(server.ws, "view", "Ada")
        bob = await MediaClient.join(server.ws, "view", "Bob")
        viewer = await MediaClient.join(server.ws, "view", "Viewer")
        try:
            await ada.publish()
            await bob.publish()
            a, b = ada.participant_id, bob.participant_id

            def both_flow() -> bool:
                return viewer.receives_from(a, video=10, audio=20) and viewer.receives_from(
                    b, video=10, audio=20
                )

            await until(both_flow, timeout=20)
            assert server.receiving("view", viewer.participant_id)["video"] == 2

            await viewer.send({"type": "view", "tiles": [{"participant_id": a}]})
            await until(
                lambda: server.receiving("view", viewer.participant_id)["video"] == 1,
                timeout=2,
            )
            await asyncio.sleep(0.3)  # frames already in flight
            assert await _frames_grow(viewer, b) == 0, "a video not shown is still sent"
            assert await _frames_grow(viewer, a) > 10
            (bob_audio,) = viewer.tracks_from(b, "audio")
            heard = bob_audio.frames
            await asyncio.sleep(0.5)
            assert bob_audio.frames > heard + 10, "audio stopped with the video"

            await viewer.send({"type": "view", "tiles": []})
            await until(
                lambda: server.receiving("view", viewer.participant_id)["video"] == 0,
                timeout=2,
            )
            await asyncio.sleep(0.3)
            assert await _frames_grow(viewer, a) == 0

            await viewer.send(
                {"type": "view", "tiles": [{"participant_id": b, "width": 320, "height": 240}]}
            )
            (bob_video,) = viewer.tracks_from(b, "video")
            stopped_at = bob_video.frames
            await until(lambda: bob_video.frames > stopped_at + 5, timeout=2)
            receiving = server.receiving("view", viewer.participant_id)
            assert (receiving["audio"], receiving["video"]) == (2, 1)
        finally:
            for client in (ada, bob, viewer):
                await client.close()


async def test_a_bad_view_gets_an_error_and_harms_nobody() -> None:
    """A ``view`` naming too many tiles, or a size out of range, is refused with an error naming
    the field; the connection and the room go on."""
    with run_server() as server:
        viewer = await MediaClient.join(server.ws, "badview", "Viewer")
        try:
            too_many = [{"participant_id": f"p-{n}"} for n in range(201)]
            await viewer.send({"type": "view", "tiles": too_many, "id": "v1"})
            error = await viewer.wait_for(lambda m: m["type"] == "error")
            assert error["code"] == "bad_message"
            assert "tiles" in error["message"]
            await viewer.send(
                {"type": "view", "tiles": [{"participant_id": "x", "width": -1}], "id": "v2"}
            )
            error = await viewer.wait_for(lambda m: m["type"] == "error" and m.get("ref") == "v2")
            assert "width" in error["message"]
            await viewer.send({"type": "view", "tiles": [], "id": "v3"})
            await viewer.wait_for(lambda m: m["type"] == "ack" and m["ref"] == "v3")
        finally:
            await viewer.close()


async def test_a_large_room_forwards_only_the_loudest_microphones() -> None:
    """With ``max_audio_streams`` 2 and four microphones, a listener hears the two who speak and
    not the two who are silent; when a speaker falls silent and a silent one speaks, the
    forwarded voices follow within a few seconds (the 2 s hold included)."""
    with run_server("--admin-token", TOKEN, "--max-audio-streams", "2") as server:
        talkers = [await MediaClient.join(server.ws, "loud", f"T{n}") for n in range(4)]
        listener = await MediaClient.join(server.ws, "loud", "Listener")
        try:
            for n, talker in enumerate(talkers):
                await talker.publish(video=False, silent=n >= 2)
            ids = [talker.participant_id for talker in talkers]

            async def heard(seconds: float = 1.0) -> set[str]:
                before = {
                    pid: sum(r.frames for r in listener.tracks_from(pid, "audio")) for pid in ids
                }
                await asyncio.sleep(seconds)
                return {
                    pid
                    for pid in ids
                    if sum(r.frames for r in listener.tracks_from(pid, "audio")) > before[pid] + 10
                }

            await until(lambda: all(listener.tracks_from(pid, "audio") for pid in ids), timeout=20)
            await until(
                lambda: server.receiving("loud", listener.participant_id)["audio"] == 2, timeout=5
            )
            assert await heard() == set(ids[:2])

            tones = [talker.publish_pc.getSenders()[0].track for talker in talkers]
            tones[0].amplitude = 0  # type: ignore[union-attr]
            tones[2].amplitude = 8000  # type: ignore[union-attr]

            async def swapped() -> bool:
                return await heard(0.5) == {ids[1], ids[2]}

            deadline = asyncio.get_running_loop().time() + 8
            while not await swapped():
                assert asyncio.get_running_loop().time() < deadline, "the voices did not follow"
        finally:
            for client in (*talkers, listener):
                await client.close()
