"""Recordings of this server's rooms: started into a folder of their own, spooled by the
media room while they run, written into playable files by a worker process when they stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from veche.errors import ErrorCode, Refused
from veche.ids import RoomName
from veche.media import MediaRooms
from veche.media.recorder import Recording, finish_in_worker, recording_folder

__all__ = ["Recordings"]

log = logging.getLogger(__name__)


class Recordings:
    """Start and stop recordings under ``base`` (``None``: this server does not record)."""

    def __init__(self, base: Path | None, media: MediaRooms, clock: Callable[[], float]) -> None:
        self._base = base
        self._media = media
        self._clock = clock
        self._writing: set[asyncio.Task[Any]] = set()

    def check(self) -> None:
        """Raise :class:`~veche.errors.Refused` (``unsupported``) where nothing is recorded."""
        if self._base is None:
            raise Refused("recording is not set up on this server", code=ErrorCode.UNSUPPORTED)

    def start(self, room: RoomName, *, audio_only: bool, names: Callable[[str], str]) -> Path:
        """Record ``room`` (every track, those published later included) into a new folder;
        that folder. ``names`` gives a participant's display name for the manifest."""
        self.check()
        assert self._base is not None
        directory = recording_folder(self._base, room, now=self._clock())
        if directory is None:
            raise Refused("this room cannot be recorded", code=ErrorCode.UNSUPPORTED)
        self._media.start_recording(room, Recording(room, directory, audio_only, names=names))
        log.info(
            "recording started",
            extra={"room": room, "directory": directory.name, "audio_only": audio_only},
        )
        return directory

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
        log.info("recording stopped", extra={"room": room, "directory": recording.directory.name})

    def stop_all(self) -> None:
        """Stop every recording (the server shuts down)."""
        for room in self._media.recorded_rooms:
            self.stop(room)

    async def finish(self) -> None:
        """Wait until every stopped recording is written."""
        if self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)
