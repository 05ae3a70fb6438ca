"""Recordings of this server's rooms: started into a folder of their own, spooled by the
media room while they run, written into playable files by a worker process when they stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from veche.errors import ErrorCode, Refused
from veche.ids import RoomName
from veche.media import MediaRooms
from veche.media.recorder import Recording, finish_in_worker, recording_folder

__all__ = ["RecordingLimits", "Recordings", "recording_file"]

log = logging.getLogger(__name__)


WATCH_INTERVAL: Final = 1.0
"""Seconds between two looks at the running recordings' length and size."""


@dataclass(frozen=True, slots=True)
class RecordingLimits:
    """How long (seconds) and how large (bytes of media) one recording may grow, and how many
    may run at once."""

    seconds: float = 4 * 3600
    size: int = 4 * 1024**3
    concurrent: int = 2


class Recordings:
    """Start and stop recordings under ``base`` (``None``: this server does not record).

    ``on_limit(room, reason)`` is called when a running recording reaches its length or size
    limit (the caller stops it and says so)."""

    def __init__(
        self,
        base: Path | None,
        media: MediaRooms,
        clock: Callable[[], float],
        *,
        limits: RecordingLimits | None = None,
        on_limit: Callable[[RoomName, str], None] = lambda room, reason: None,
        on_written: Callable[[RoomName, Path], None] = lambda room, directory: None,
    ) -> None:
        self._base = base
        self._media = media
        self._clock = clock
        self._limits = limits or RecordingLimits()
        self._on_limit = on_limit
        self._on_written = on_written
        self._writing: set[asyncio.Task[Any]] = set()
        self._watch: asyncio.TimerHandle | None = None

    def check(self) -> None:
        """Raise :class:`~veche.errors.Refused` (``unsupported``) where nothing is recorded."""
        if self._base is None:
            raise Refused("recording is not set up on this server", code=ErrorCode.UNSUPPORTED)

    def start(self, room: RoomName, *, audio_only: bool, names: Callable[[str], str]) -> Path:
        """Record ``room`` (every track, those published later included) into a new folder;
        that folder. ``names`` gives a participant's display name for the manifest."""
        self.check()
        assert self._base is not None
        if len(self._media.recorded_rooms) >= self._limits.concurrent:
            raise Refused(
                f"this server records at most {self._limits.concurrent} meetings at once",
                code=ErrorCode.RECORDING_LIMIT,
            )
        directory = recording_folder(self._base, room, now=self._clock())
        if directory is None:
            raise Refused("this room cannot be recorded", code=ErrorCode.UNSUPPORTED)
        self._media.start_recording(room, Recording(room, directory, audio_only, names=names))
        log.info(
            "recording started",
            extra={"room": room, "directory": directory.name, "audio_only": audio_only},
        )
        if self._watch is None:
            self._watch = asyncio.get_running_loop().call_later(WATCH_INTERVAL, self._check)
        return directory

    def _check(self) -> None:
        """Stop (through ``on_limit``) every recording past its length or size limit."""
        self._watch = None
        limits = self._limits
        for room in self._media.recorded_rooms:
            recording = self._media.recording(room)
            if recording is None:
                continue
            if recording.seconds >= limits.seconds:
                self._on_limit(room, f"it reached the longest recording, {limits.seconds:g} s")
            elif recording.size >= limits.size:
                self._on_limit(room, f"it reached the largest recording, {limits.size} bytes")
        if self._media.recorded_rooms:
            self._watch = asyncio.get_running_loop().call_later(WATCH_INTERVAL, self._check)

    def directory(self, room: RoomName) -> Path | None:
        """The folder of ``room``'s recording under way, if any."""
        recording = self._media.recording(room)
        return recording.directory if recording is not None else None

    def stop(self, room: RoomName) -> None:
        """Stop recording ``room`` (if it records); its files are written in the background."""
        recording = self._media.stop_recording(room)
        if recording is None:
            return
        task = asyncio.ensure_future(finish_in_worker(recording.stop()))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

        def written(done: asyncio.Future[Path]) -> None:
            if not done.cancelled() and done.exception() is None:
                self._on_written(room, done.result().parent)

        task.add_done_callback(written)
        log.info("recording stopped", extra={"room": room, "directory": recording.directory.name})

    def stop_all(self) -> None:
        """Stop every recording (the server shuts down)."""
        for room in self._media.recorded_rooms:
            self.stop(room)
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    async def finish(self) -> None:
        """Wait until every stopped recording is written."""
        if self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)


def recording_file(root: Path, recording: str, name: str) -> Path | None:
    """The file ``name`` of the recording folder ``recording`` under ``root``, if it is one:
    only files directly inside one recording's folder, whatever the names say (``..``, a NUL
    byte, a link elsewhere, a hidden file being written)."""
    try:
        path = (root.resolve() / recording / name).resolve()
    except (OSError, ValueError):
        return None
    if path.parent.parent != root.resolve() or not path.is_file() or path.name.startswith("."):
        return None
    return path
