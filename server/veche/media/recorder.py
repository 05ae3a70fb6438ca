"""Recording a room from the RTP the server already receives: no browser, no decoding.

While a room records, each forwarded frame of each published track is also appended, as it
is (RTP payloads and a time), to a spool file of its own: a buffered write on the event loop,
nothing more, so forwarding is not slowed. When the recording stops, a worker process turns the
spools of each participant into one playable WebM file (VP8 video, Opus audio: depacketised
and muxed, never re-encoded; H.264 video goes into an MP4 instead, and one frame is decoded to
learn its size) and writes ``manifest.json`` with the names and times. Tracks in other codecs
are listed in the manifest as not recorded.

Everything is written inside ``<recording_dir>/<room>-<UTC time>/``; names come from the
server (room names are validated, participant ids are server-made), and the directory is
checked to be inside the configured one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fractions
import json
import logging
import multiprocessing
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import av
from aiortc.codecs import depayload
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from veche.media.assembler import AssembledFrame

__all__ = ["Recording", "finish_in_worker", "finish_recording", "recording_folder"]

log = logging.getLogger(__name__)

_RECORD: Final = struct.Struct("!dBH")
"""Spool record header: seconds since the recording started, keyframe flag, payload count;
then each payload as a 2-byte length and its bytes."""
_LENGTH: Final = struct.Struct("!H")
_TIME_BASE: Final = fractions.Fraction(1, 1000)
RECORDABLE: Final = frozenset({"VP8", "H264", "opus"})


def recording_folder(base: Path, room: str, *, now: float) -> Path | None:
    """Make a new folder for a recording of ``room`` started at Unix time ``now``:
    ``<base>/<room>-<UTC time>`` (``-2``, ``-3``... if that exists). ``None`` if it would not
    be directly inside ``base``."""
    base = base.resolve()
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    directory = (base / f"{room}-{stamp}").resolve()
    suffix = 1
    while directory.exists():
        suffix += 1
        directory = (base / f"{room}-{stamp}-{suffix}").resolve()
    if directory.parent != base:  # never outside the configured directory
        return None
    directory.mkdir()
    return directory


@dataclass
class _Track:
    """One published track being spooled."""

    participant: str
    kind: str
    codec: RTCRtpCodecParameters
    path: Path
    file: IO[bytes]
    anchor: tuple[int, float] | None = None
    """(first RTP timestamp, its time since the recording started)."""
    written: int = 0
    """Bytes spooled so far."""

    def write(self, frame: AssembledFrame, since_start: float) -> None:
        if self.anchor is None:
            self.anchor = (frame.timestamp, since_start)
        first_rtp, first_time = self.anchor
        elapsed = ((frame.timestamp - first_rtp) & 0xFFFFFFFF) / self.codec.clockRate
        record = [_RECORD.pack(first_time + elapsed, frame.keyframe, len(frame.payloads))]
        for payload in frame.payloads:
            record.append(_LENGTH.pack(len(payload)))
            record.append(payload)
        data = b"".join(record)
        self.file.write(data)
        self.written += len(data)


@dataclass
class Recording:
    """A recording of one room in ``directory`` (already created)."""

    room: str
    directory: Path
    audio_only: bool
    names: Callable[[str], str]
    started_at: float = field(default_factory=time.time)
    _start: float = field(default_factory=time.monotonic)
    _tracks: dict[int, _Track] = field(default_factory=dict)
    _skipped: list[dict[str, str]] = field(default_factory=list)
    _people: dict[str, str] = field(default_factory=dict)
    _counter: int = 0

    @property
    def size(self) -> int:
        """Bytes spooled so far, every track together."""
        return sum(track.written for track in self._tracks.values())

    @property
    def seconds(self) -> float:
        """Seconds since the recording started."""
        return time.monotonic() - self._start

    def sink_for(
        self, participant: str, kind: str, codec: RTCRtpCodecParameters
    ) -> Callable[[AssembledFrame], None] | None:
        """A frame sink that spools one track, or ``None`` if it is not recorded."""
        self._people.setdefault(participant, self.names(participant))
        if kind == "video" and self.audio_only:
            return None
        if codec.name not in RECORDABLE:
            self._skipped.append({"participant": participant, "kind": kind, "codec": codec.name})
            return None
        self._counter += 1
        path = self.directory / f".{participant}.{kind}.{self._counter}.spool"
        track = _Track(participant, kind, codec, path, path.open("wb"))
        self._tracks[self._counter] = track

        def sink(frame: AssembledFrame) -> None:
            if not track.file.closed:
                track.write(frame, time.monotonic() - self._start)

        return sink

    def stop(self) -> dict[str, Any]:
        """Close the spools; the description :func:`finish_recording` needs (run it in a
        worker process)."""
        for track in self._tracks.values():
            track.file.close()
        return {
            "room": self.room,
            "directory": str(self.directory),
            "started_at": self.started_at,
            "stopped_at": time.time(),
            "audio_only": self.audio_only,
            "people": dict(self._people),
            "tracks": [
                {
                    "participant": t.participant,
                    "kind": t.kind,
                    "codec": t.codec.name,
                    "clock": t.codec.clockRate,
                    "path": str(t.path),
                }
                for t in self._tracks.values()
            ],
            "skipped": list(self._skipped),
        }


def _records(path: Path) -> Iterator[tuple[float, bool, list[bytes]]]:
    with path.open("rb") as spool:
        while header := spool.read(_RECORD.size):
            if len(header) < _RECORD.size:
                return  # a torn last record (the process stopped mid-write)
            seconds, keyframe, count = _RECORD.unpack(header)
            payloads = []
            for _ in range(count):
                (length,) = _LENGTH.unpack(spool.read(_LENGTH.size))
                payloads.append(spool.read(length))
            yield seconds, bool(keyframe), payloads


def _vp8_size(frame: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 keyframe header (RFC 6386, section 9.1)."""
    if len(frame) < 10 or frame[0] & 1 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    return (frame[6] | frame[7] << 8) & 0x3FFF, (frame[8] | frame[9] << 8) & 0x3FFF


def _h264_size(frame: bytes) -> tuple[int, int] | None:
    """Width and height of an H.264 keyframe (Annex B, parameter sets in band), by decoding
    it: the only decoding recording does."""
    decoder = av.CodecContext.create("h264", "r")
    try:
        for picture in [*decoder.decode(av.Packet(frame)), *decoder.decode(None)]:
            return picture.width, picture.height
    except av.FFmpegError:
        return None
    return None


def _frames(track: dict[str, Any]) -> list[tuple[float, bool, bytes]]:
    codec = RTCRtpCodecParameters(
        mimeType=f"{track['kind']}/{track['codec']}", clockRate=track["clock"]
    )
    frames = []
    for seconds, keyframe, payloads in _records(Path(track["path"])):
        data = b"".join(depayload(codec, payload) for payload in payloads)
        if data:
            frames.append((seconds, keyframe, data))
    return frames


def _write_participant(base: Path, audio: list[Any], video: list[Any]) -> dict[str, Any]:
    """Mux one participant's frames into ``base`` with the right suffix (.webm, or .mp4 for
    H.264 video); what the manifest says of the file."""
    h264 = bool(video) and video[0]["codec"] == "H264"
    video = [track for track in video if track["codec"] == ("H264" if h264 else "VP8")]
    video_frames = [f for track in video for f in _frames(track)]
    audio_frames = [f for track in audio for f in _frames(track)]
    # Video starts at a keyframe (its size is read from it).
    size = None
    while video_frames and size is None:
        seconds, keyframe, data = video_frames[0]
        size = (_h264_size(data) if keyframe else None) if h264 else _vp8_size(data)
        if size is None:
            video_frames.pop(0)
    if not video_frames and not audio_frames:
        return {}
    path = base.with_suffix(".mp4" if h264 and video_frames else ".webm")
    output = av.open(str(path), "w", format="mp4" if path.suffix == ".mp4" else "webm")
    try:
        streams: dict[str, Any] = {}
        if video_frames:
            assert size is not None
            streams["video"] = output.add_stream("h264" if h264 else "vp8", rate=30)
            streams["video"].width, streams["video"].height = size
            streams["video"].time_base = _TIME_BASE
        if audio_frames:
            streams["audio"] = output.add_stream("libopus", rate=48000)
            streams["audio"].time_base = _TIME_BASE
        merged = sorted(
            [(s, "video", k, d) for s, k, d in video_frames]
            + [(s, "audio", k, d) for s, k, d in audio_frames],
            key=lambda item: item[0],
        )
        last: dict[str, int] = {}
        for seconds, kind, keyframe, data in merged:
            pts = max(round(seconds * 1000), last.get(kind, -1) + 1)
            last[kind] = pts
            packet = av.Packet(data)
            packet.stream = streams[kind]
            packet.pts = packet.dts = pts
            packet.time_base = _TIME_BASE
            if keyframe and kind == "video":
                packet.is_keyframe = True
            output.mux(packet)
    finally:
        output.close()
    times = [item[0] for item in video_frames + audio_frames]
    return {
        "file": path.name,
        "audio": bool(audio_frames),
        "video": bool(video_frames),
        "first": round(min(times), 3),
        "last": round(max(times), 3),
    }


def finish_recording(description: dict[str, Any]) -> Path:
    """Turn the spools of a stopped recording into one WebM per participant and a manifest;
    the manifest's path. Blocking: run it in a worker process."""
    directory = Path(description["directory"])
    people = []
    for participant, name in description["people"].items():
        tracks = [t for t in description["tracks"] if t["participant"] == participant]
        audio = [t for t in tracks if t["kind"] == "audio"]
        video = [t for t in tracks if t["kind"] == "video"]
        entry: dict[str, Any] = {"id": participant, "name": name}
        try:
            entry |= _write_participant(directory / participant, audio, video)
        except (OSError, ValueError, av.FFmpegError) as exc:
            log.exception("recording of a participant failed", extra={"participant": participant})
            entry["error"] = type(exc).__name__
        people.append(entry)
        for track in tracks:
            with contextlib.suppress(OSError):
                Path(track["path"]).unlink()
    manifest = {
        key: description[key] for key in ("room", "started_at", "stopped_at", "audio_only")
    } | {"participants": people, "not_recorded": description["skipped"]}
    path = directory / "manifest.json"
    # Written whole or not at all: its presence says the recording is finished.
    partial = directory / ".manifest.json.tmp"
    partial.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


async def finish_in_worker(description: dict[str, Any]) -> Path:
    """:func:`finish_recording` in a worker process of its own: muxing a long recording is
    CPU work, and in a thread it would hold the interpreter lock the forwarding needs."""
    context = multiprocessing.get_context("spawn")
    worker = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context)
    try:
        path = await asyncio.get_running_loop().run_in_executor(
            worker, finish_recording, description
        )
    finally:
        # Not ``with``: its exit joins the worker process, on the event loop.
        worker.shutdown(wait=False)
    log.info("recording written", extra={"room": description["room"], "path": path.parent.name})
    return path
