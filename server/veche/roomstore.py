"""Room state that survives a restart: where it is kept, and the one writer that keeps it.

A :class:`RoomStore` keeps, per room, its record (a JSON
:class:`~veche.rooms.RoomRecord`: settings, password hash, who moderates and who may return)
and its last chat messages. :class:`SqliteStore` is the embedded default (one file under
``data_dir``, WAL mode); the Redis one is ``veche.cluster.roomstate.BusStore``; :class:`NoStore`
keeps nothing (``room_state=off``).

:class:`RoomKeeper` is how the hub uses a store: it is told that a room changed, that a chat
message was posted or that a room was dropped, and one background task writes these in order,
one at a time, off the event loop's critical path. A room's record is read when it is written
(the latest state, so a burst of changes is one write) and not written again when unchanged.
A failing store is logged and counted; the meeting goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, TypeVar

from veche.errors import ErrorCode, Refused
from veche.ids import RoomName
from veche.protocol import ChatEntry
from veche.rooms import RoomRecord

__all__ = ["NoStore", "RoomKeeper", "RoomStore", "SqliteStore", "StoredRoom"]

log = logging.getLogger(__name__)

T = TypeVar("T")

CHAT_KEPT: Final = 200
"""Chat messages kept per room (as many as a newcomer receives)."""


class RoomStore(Protocol):
    """Where room state is kept: text in, text out (the keeper encodes and decodes)."""

    async def load(self, name: str) -> tuple[str, list[str]] | None:
        """The record and chat entries (oldest first) kept for ``name``, if any."""

    async def save(self, name: str, record: str) -> None:
        """Keep ``record`` as ``name``'s record."""

    async def add_chat(self, name: str, entry_id: int, entry: str) -> None:
        """Keep one more chat entry of ``name`` (and only the last ``CHAT_KEPT``)."""

    async def delete(self, name: str) -> None:
        """Forget everything about ``name``."""

    async def names(self) -> list[str]:
        """Rooms to bring back when the server starts (empty for a store whose rooms are
        brought back only when someone asks for them)."""

    async def close(self) -> None:
        """Release the store."""


class NoStore:
    """Keeps nothing: every restart starts afresh."""

    async def load(self, name: str) -> tuple[str, list[str]] | None:
        return None

    async def save(self, name: str, record: str) -> None:
        return None

    async def add_chat(self, name: str, entry_id: int, entry: str) -> None:
        return None

    async def delete(self, name: str) -> None:
        return None

    async def names(self) -> list[str]:
        return []

    async def close(self) -> None:
        return None


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS rooms (
    name TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    saved_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chat (
    room TEXT NOT NULL,
    id INTEGER NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (room, id)
);
"""


class SqliteStore:
    """One SQLite file (``rooms.sqlite3`` in ``directory``, readable by this user only), in WAL
    mode, used from one thread of its own so that the event loop never waits for the disk."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "rooms.sqlite3"
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="room-store")
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # created private
            os.close(fd)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: work(self._connect()))

    async def open(self) -> None:
        """Create the file and its tables now (so that a bad ``data_dir`` fails at start)."""
        await self._run(lambda db: None)

    async def load(self, name: str) -> tuple[str, list[str]] | None:
        def read(db: sqlite3.Connection) -> tuple[str, list[str]] | None:
            row = db.execute("SELECT record FROM rooms WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            chat = db.execute("SELECT entry FROM chat WHERE room = ? ORDER BY id", (name,))
            return str(row[0]), [str(entry) for (entry,) in chat]

        return await self._run(read)

    async def save(self, name: str, record: str) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO rooms (name, record, saved_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET record = excluded.record, "
                "saved_at = excluded.saved_at",
                (name, record, time.time()),
            )
        )

    async def add_chat(self, name: str, entry_id: int, entry: str) -> None:
        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                db.execute(
                    "INSERT OR REPLACE INTO chat (room, id, entry) VALUES (?, ?, ?)",
                    (name, entry_id, entry),
                )
                db.execute(
                    "DELETE FROM chat WHERE room = ? AND id <= ?", (name, entry_id - CHAT_KEPT)
                )

        await self._run(write)

    async def delete(self, name: str) -> None:
        def forget(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                db.execute("DELETE FROM rooms WHERE name = ?", (name,))
                db.execute("DELETE FROM chat WHERE room = ?", (name,))

        await self._run(forget)

    async def names(self) -> list[str]:
        return await self._run(
            lambda db: [str(name) for (name,) in db.execute("SELECT name FROM rooms")]
        )

    async def close(self) -> None:
        def close(db: sqlite3.Connection) -> None:
            db.close()
            self._db = None

        if self._db is not None:
            await self._run(close)
        self._thread.shutdown(wait=True)


@dataclass(frozen=True, slots=True)
class StoredRoom:
    """A room as kept: its record and its chat, oldest first."""

    record: RoomRecord
    chat: list[ChatEntry]


@dataclass(frozen=True, slots=True)
class _Save:
    name: RoomName


@dataclass(frozen=True, slots=True)
class _Chat:
    name: RoomName
    entry: ChatEntry


@dataclass(frozen=True, slots=True)
class _Delete:
    name: RoomName


@dataclass(frozen=True, slots=True)
class _Mark:
    done: asyncio.Future[None]


_Op = _Save | _Chat | _Delete | _Mark


class RoomKeeper:
    """Writes rooms' state to ``store`` in the order it changed. ``snapshot(name)`` gives the
    room's record as it is now (``None``: nothing to keep); ``chat`` says whether chat messages
    are kept too."""

    def __init__(
        self,
        store: RoomStore,
        snapshot: Callable[[RoomName], RoomRecord | None],
        *,
        chat: bool = True,
    ) -> None:
        self.store = store
        self._snapshot = snapshot
        self._chat = chat
        self._ops: deque[_Op] = deque()
        self._saving: set[RoomName] = set()
        self._written: dict[RoomName, str] = {}
        self._writer: asyncio.Task[None] | None = None
        self._frozen = False
        self._closed = False
        self.failures = 0
        """Writes the store refused (each is logged)."""

    def changed(self, name: RoomName) -> None:
        """``name``'s record may have changed: write it soon (once for a burst of changes)."""
        if name not in self._saving:
            self._saving.add(name)
            self._queue(_Save(name))

    def posted(self, name: RoomName, entry: ChatEntry) -> None:
        """A chat message was posted in ``name``."""
        if self._chat:
            self._queue(_Chat(name, entry))

    def dropped(self, name: RoomName) -> None:
        """``name`` is gone (emptied for good, or ended): forget it."""
        self._saving.discard(name)
        self._queue(_Delete(name))

    def freeze(self) -> None:
        """The server is shutting down: what changes from now on (everyone's connection being
        closed) is not the room's lasting state, so it is not written."""
        self._frozen = True

    async def flush(self) -> None:
        """Wait until everything queued so far is written (or failed)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ops.append(_Mark(done))
        self._wake()
        await done

    async def load(self, name: RoomName) -> StoredRoom | None:
        """The room kept as ``name``, if any. Raises :class:`~veche.errors.Refused`
        (``unavailable``) when the store cannot answer: a room must not start afresh (and
        hand its moderation to whoever comes first) only because its state could not be
        read."""
        try:
            stored = await self.store.load(name)
            if stored is None:
                return None
            record = RoomRecord.model_validate_json(stored[0])
            chat = [ChatEntry.model_validate_json(entry) for entry in stored[1]]
        except Exception:
            log.exception("room state could not be read", extra={"room": name})
            raise Refused(
                "this meeting's saved state cannot be read right now; try again in a moment",
                code=ErrorCode.UNAVAILABLE,
            ) from None
        self._written[name] = stored[0]
        return StoredRoom(record, chat if self._chat else [])

    async def names(self) -> list[RoomName]:
        """The rooms to bring back at start (see :meth:`RoomStore.names`)."""
        return [RoomName(name) for name in await self.store.names()]

    async def close(self) -> None:
        """Write what is queued, then release the store (once)."""
        if self._closed:
            return
        self._closed = True
        self._frozen = True
        await self.flush()
        await self.store.close()

    def _queue(self, op: _Op) -> None:
        if not self._frozen:
            self._ops.append(op)
            self._wake()

    def _wake(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write_all(), name="room-state-writer"
            )

    async def _write_all(self) -> None:
        while self._ops:
            op = self._ops.popleft()
            if isinstance(op, _Mark):
                if not op.done.done():
                    op.done.set_result(None)
                continue
            try:
                await self._write(op)
            except Exception:
                self.failures += 1
                log.exception("room state not written", extra={"room": op.name})

    async def _write(self, op: _Save | _Chat | _Delete) -> None:
        match op:
            case _Save(name):
                self._saving.discard(name)
                record = self._snapshot(name)
                if record is None:
                    return
                text = record.model_dump_json()
                if self._written.get(name) != text:
                    await self.store.save(name, text)
                    self._written[name] = text
            case _Chat(name, entry):
                await self.store.add_chat(name, entry.id, entry.model_dump_json())
            case _Delete(name):
                self._written.pop(name, None)
                await self.store.delete(name)
