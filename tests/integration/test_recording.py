"""Recording without a browser: a call of two aiortc peers with synthetic audio and video is
recorded, and the files open with PyAV with the expected duration, resolution and audio."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import av
import pytest

from veche.client import VecheClient

from .peers import MediaClient
from .serverproc import run_server
from .waiting import until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("VECHE_IN_NETNS") != "1", reason="media runs in the netns"),
]


def _recording(message: dict[str, Any], active: bool) -> bool:
    return message["type"] == "room_updated" and message["settings"]["recording"] is active


async def _manifest(directory: Path, timeout: float = 30) -> tuple[Path, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = list(directory.glob("*/manifest.json"))
        if found:
            return found[0].parent, json.loads(found[0].read_text())
        assert time.monotonic() < deadline, "no manifest was written"
        await asyncio.sleep(0.2)


async def _record_call(
    tmp_path: Path, seconds: float, *, audio_only: bool, ada_codec: str | None = None
) -> tuple[Path, dict[str, Any], float]:
    with run_server("--recording-dir", str(tmp_path), "--recording-anonymous") as server:
        ada = await MediaClient.join(server.ws, "recorded", "Ada")
        bob = await MediaClient.join(server.ws, "recorded", "Bob")
        try:
            await ada.publish(video_codecs=[ada_codec] if ada_codec else None)
            await bob.publish()
            deadline = time.monotonic() + 20
            while not (
                bob.tracks_from(ada.participant_id, "video")
                and bob.tracks_from(ada.participant_id, "video")[0].frames > 30
            ):
                assert time.monotonic() < deadline, "the call did not start"
                await asyncio.sleep(0.1)
            await bob.send({"type": "record", "active": True})
            forbidden = await bob.wait_for(lambda m: m["type"] == "error")
            assert forbidden["code"] == "forbidden"
            await ada.send({"type": "record", "active": True, "audio_only": audio_only})
            for peer in (ada, bob):
                await peer.wait_for(lambda m: _recording(m, True))
            started = time.monotonic()
            await asyncio.sleep(seconds)
            await ada.send({"type": "record", "active": False})
            recorded = time.monotonic() - started
            for peer in (ada, bob):
                await peer.wait_for(lambda m: _recording(m, False))
        finally:
            for peer in (ada, bob):
                await peer.close()
        folder, manifest = await _manifest(tmp_path)
        assert server.terminate() == 0
    return folder, manifest, recorded


async def test_a_call_is_recorded_one_file_per_participant(tmp_path: Path) -> None:
    folder, manifest, recorded = await _record_call(tmp_path, 5.0, audio_only=False)
    assert folder.parent == tmp_path
    assert manifest["room"] == "recorded"
    assert manifest["audio_only"] is False
    assert sorted(p["name"] for p in manifest["participants"]) == ["Ada", "Bob"]
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        [p["file"] for p in manifest["participants"]] + ["manifest.json"]
    ), "spools are removed, nothing else is left"
    for person in manifest["participants"]:
        assert person["audio"] is True
        assert person["video"] is True
        with av.open(str(folder / person["file"])) as container:
            assert container.format.name.startswith("matroska")
            video = container.streams.video[0]
            audio = container.streams.audio[0]
            assert (
                video.codec_context.name,
                video.codec_context.width,
                video.codec_context.height,
            ) == ("vp8", 640, 480)
            assert audio.codec_context.name == "opus"
            duration = container.duration / 1e6
            assert abs(duration - recorded) <= 0.1 * recorded, (duration, recorded)
            frames = sum(1 for _ in container.decode(video=0))
            assert frames >= 0.8 * 30 * (recorded - 0.5), f"{frames} video frames"


async def test_an_h264_publisher_is_recorded_to_mp4(tmp_path: Path) -> None:
    folder, manifest, recorded = await _record_call(
        tmp_path, 4.0, audio_only=False, ada_codec="video/H264"
    )
    files = {p["name"]: p["file"] for p in manifest["participants"]}
    assert files["Ada"].endswith(".mp4")
    assert files["Bob"].endswith(".webm")
    with av.open(str(folder / files["Ada"])) as container:
        video = container.streams.video[0]
        assert (video.codec_context.name, video.codec_context.width) == ("h264", 640)
        assert container.streams.audio[0].codec_context.name == "opus"
        assert abs(container.duration / 1e6 - recorded) <= 0.1 * recorded
        assert sum(1 for _ in container.decode(video=0)) >= 0.8 * 30 * (recorded - 0.5)


async def test_audio_only_recording(tmp_path: Path) -> None:
    folder, manifest, recorded = await _record_call(tmp_path, 3.0, audio_only=True)
    assert manifest["audio_only"] is True
    for person in manifest["participants"]:
        assert person["video"] is False
        with av.open(str(folder / person["file"])) as container:
            assert not container.streams.video
            samples = sum(frame.samples for frame in container.decode(audio=0))
            assert abs(samples / 48000 - recorded) <= 0.1 * recorded


async def test_recording_is_refused_when_not_set_up() -> None:
    with run_server() as server:
        client = await VecheClient.connect(server.ws)
        await client.join("plain", "Ada")
        await client.send({"type": "record", "active": True})
        refused = await client.expect("error")
        assert refused.type == "error"
        assert refused.code == "unsupported"
        await client.ws.close()


async def test_an_anonymous_moderator_may_not_record_by_default(tmp_path: Path) -> None:
    """Without ``recording_anonymous``, a moderator who joined without a token is refused
    (``forbidden``) and the room does not say it records."""
    with run_server("--recording-dir", str(tmp_path)) as server:
        client = await VecheClient.connect(server.ws)
        await client.join("anonymous", "Ada")
        await client.send({"type": "record", "active": True})
        refused = await client.expect("error")
        assert refused.type == "error"
        assert refused.code == "forbidden"
        assert "token" in refused.message
        await client.ws.close()
    assert list(tmp_path.iterdir()) == []


async def test_recording_limits_stop_it_and_tell_the_moderator(tmp_path: Path) -> None:
    """A recording that reaches ``recording_max_seconds`` stops by itself: everyone hears
    recording off, the moderator gets ``recording_limit``, the files are written; a second room
    is refused (``recording_limit``) while ``recording_max_concurrent`` recordings run."""
    limits = ("--recording-max-seconds", "2", "--recording-max-concurrent", "1")
    with run_server("--recording-dir", str(tmp_path), "--recording-anonymous", *limits) as server:
        ada = await MediaClient.join(server.ws, "limited", "Ada")
        other = await VecheClient.connect(server.ws)
        await other.join("second", "Cyd")
        try:
            await ada.publish(audio=True, video=False)
            await until(lambda: ada.publish_pc.connectionState == "connected", timeout=20)
            await ada.send({"type": "record", "active": True})
            await ada.wait_for(lambda m: _recording(m, True))
            await other.send({"type": "record", "active": True})
            busy = await other.expect("error")
            assert busy.type == "error"
            assert busy.code == "recording_limit"
            started = time.monotonic()
            stopped = await ada.wait_for(lambda m: _recording(m, False), timeout=10)
            assert stopped["settings"]["recording"] is False
            elapsed = time.monotonic() - started
            assert 1.5 <= elapsed <= 5.0, elapsed
            told = await ada.wait_for(lambda m: m["type"] == "error", timeout=5)
            assert told["code"] == "recording_limit"
            await until(lambda: any(tmp_path.glob("*/manifest.json")), timeout=20)
            # Free again: the second room may record now.
            await other.send({"type": "record", "active": True})
            await other.expect("room_updated")
        finally:
            await ada.close()
            await other.ws.close()


async def test_the_moderator_gets_download_links_that_only_work_as_given(tmp_path: Path) -> None:
    """When a recording is written, the moderators present get ``recording_ready`` with a link
    per file (the others nothing); the link downloads that file without any account; a link
    with its signature changed, or to another file, is a 404."""
    with run_server("--recording-dir", str(tmp_path), "--recording-anonymous") as server:
        ada = await MediaClient.join(server.ws, "linked", "Ada")
        bob = await MediaClient.join(server.ws, "linked", "Bob")
        try:
            await ada.publish(video=False)
            await ada.send({"type": "record", "active": True, "audio_only": True})
            await ada.wait_for(lambda m: _recording(m, True))
            await asyncio.sleep(2)
            await ada.send({"type": "record", "active": False})
            ready = await ada.wait_for(lambda m: m["type"] == "recording_ready", timeout=30)
            await asyncio.sleep(0.5)
            assert not [m for m in bob.messages if m["type"] == "recording_ready"]
        finally:
            for peer in (ada, bob):
                await peer.close()
        names = sorted(f["name"] for f in ready["files"])
        assert "manifest.json" in names
        folder = tmp_path / ready["recording"]
        for entry in ready["files"]:
            assert entry["url"].startswith(f"/recordings/{ready['recording']}/")
            with urllib.request.urlopen(server.http + entry["url"], timeout=5) as response:
                assert response.read() == (folder / entry["name"]).read_bytes()
            assert entry["bytes"] == (folder / entry["name"]).stat().st_size
        url = ready["files"][0]["url"]
        for bad in (url[:-1] + ("0" if url[-1] != "0" else "1"), url.replace(names[0], "x.webm")):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(server.http + bad, timeout=5)
            assert refused.value.code == 404
            refused.value.close()
        assert server.terminate() == 0
