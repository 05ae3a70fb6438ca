"""The room stores on a real SQLite file and a real Redis, and the keeper that writes to them."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from veche.cluster.bus import create_bus
from veche.cluster.roomstate import BusStore
from veche.errors import ErrorCode, Refused
from veche.ids import RoomName
from veche.protocol import ChatEntry
from veche.rooms import RoomRecord
from veche.roomstore import CHAT_KEPT, RoomKeeper, RoomStore, SqliteStore
from veche.settings import Settings

from .redisproc import REDIS_SERVER, run_redis


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RoomStore]:
    if request.param == "sqlite":
        sqlite = SqliteStore(tmp_path / "data")
        yield sqlite
        await sqlite.close()
        return
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (make test installs it as root)")
    with run_redis() as redis:
        bus = create_bus(Settings(redis_url=redis.url))
        await bus.start()
        try:
            yield BusStore(bus)
        finally:
            await bus.close()


def _entry(n: int) -> ChatEntry:
    return ChatEntry(id=n, participant_id="p", name="Ada", text=f"message {n}", at=float(n))


async def test_a_store_keeps_records_and_the_last_chat_messages(store: RoomStore) -> None:
    assert await store.load("none") is None
    await store.save("r", '{"version": 1}')
    await store.save("r", '{"version": 1, "lobby": true}')
    for n in range(1, CHAT_KEPT + 6):
        await store.add_chat("r", n, _entry(n).model_dump_json())
    loaded = await store.load("r")
    assert loaded is not None
    record, chat = loaded
    assert record == '{"version": 1, "lobby": true}'
    ids = [ChatEntry.model_validate_json(entry).id for entry in chat]
    assert ids == list(range(6, CHAT_KEPT + 6))
    await store.delete("r")
    assert await store.load("r") is None


async def test_the_sqlite_file_is_private_and_lists_its_rooms(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data")
    try:
        await store.open()
        await store.save("a", "{}")
        await store.save("b", "{}")
        assert sorted(await store.names()) == ["a", "b"]
        assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    finally:
        await store.close()


class _Counting(SqliteStore):
    """A real SQLite store that counts its record writes."""

    saves = 0

    async def save(self, name: str, record: str) -> None:
        self.saves += 1
        await super().save(name, record)


async def test_the_keeper_writes_a_burst_once_and_nothing_unchanged(tmp_path: Path) -> None:
    """Ten changes in a row are one write of the latest record; a change that leaves the
    record as it was is not written; chat entries and the drop are written in order; after
    ``freeze`` nothing more is."""
    state = {"lobby": False}
    store = _Counting(tmp_path / "data")
    keeper = RoomKeeper(store, lambda name: RoomRecord(lobby=state["lobby"]))
    name = RoomName("r")
    for n in range(10):
        state["lobby"] = n % 2 == 1
        keeper.changed(name)
    keeper.posted(name, _entry(1))
    await keeper.flush()
    assert store.saves == 1
    loaded = await keeper.load(name)
    assert loaded is not None
    assert loaded.record.lobby is True
    assert [entry.text for entry in loaded.chat] == ["message 1"]
    keeper.changed(name)
    await keeper.flush()
    assert store.saves == 1
    keeper.dropped(name)
    await keeper.flush()
    assert await keeper.load(name) is None
    keeper.freeze()
    keeper.changed(name)
    await keeper.flush()
    assert store.saves == 1
    await keeper.close()


async def test_a_failing_store_never_stops_the_meeting(tmp_path: Path) -> None:
    """A store that cannot write (its directory is a file) is logged and counted, and the
    writes after it still happen; one that cannot be read refuses the join (``unavailable``)
    rather than starting the room afresh."""
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    keeper = RoomKeeper(SqliteStore(blocked), lambda name: RoomRecord())
    keeper.changed(RoomName("a"))
    keeper.changed(RoomName("b"))
    await keeper.flush()
    assert keeper.failures == 2
    with pytest.raises(Refused) as caught:
        await keeper.load(RoomName("a"))
    assert caught.value.code is ErrorCode.UNAVAILABLE
    await keeper.close()
