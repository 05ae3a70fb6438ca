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

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("VECHE_IN_NETNS") != "1",
        reason="media tests run inside a private network namespace (make test)",
    ),
]

SPY = [sys.executable, str(Path(__file__).with_name("spyserver.py"))]


async def _until(predicate: object, timeout: float, step: float = 0.05) -> float:
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)
    return time.monotonic() - start


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
                for sub in subscribers:
                    video = sub.tracks_from(publisher.participant_id, "video")
                    audio = sub.tracks_from(publisher.participant_id, "audio")
                    if not (video and audio and video[0].frames >= 30 and audio[0].frames >= 50):
                        return False
                return True

            await _until(all_flowing, timeout=20)
            for sub in subscribers:
                (video,) = sub.tracks_from(publisher.participant_id, "video")
                assert video.size == (640, 480)
        finally:
            for client in (publisher, *subscribers):
                await client.close()
        assert server.terminate() == 0
    assert json.loads(spy_file.read_text()) == {"decoders": 0, "encoders": 0}


async def test_late_subscriber_gets_picture_within_a_second() -> None:
    """A participant joining a running call decodes video within 1 s of its media connecting
    (the server holds video until a keyframe and asks the publisher for one)."""
    with run_server() as server:
        publisher = await MediaClient.join(server.ws, "late", "Pub")
        early = await MediaClient.join(server.ws, "late", "Early")
        late: MediaClient | None = None
        try:
            await publisher.publish()
            await _until(lambda: any(r.frames > 60 for r in early.remote), timeout=20)
            late = await MediaClient.join(server.ws, "late", "Late")
            joined = time.monotonic()
            await _until(
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
            await _until(
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

            await _until(third_receives_all, timeout=10)
            await _until(
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
            await _until(lambda: any(r.frames > 10 for r in sub.remote), timeout=20)
            offers_before = sum(1 for m in sub.messages if m["type"] == "offer")
            await publisher.send({"type": "leave"})
            await sub.wait_for(lambda m: m["type"] == "participant_left")
            await _until(
                lambda: sum(1 for m in sub.messages if m["type"] == "offer") > offers_before,
                timeout=5,
            )
            offer = [m for m in sub.messages if m["type"] == "offer"][-1]["sdp"]
            assert "a=sendonly" not in offer
            assert offer.count("a=inactive") == 2
        finally:
            await publisher.close()
            await sub.close()
