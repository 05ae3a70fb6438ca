"""Room state kept on the bus (Redis) when nodes share one: whichever node a room moves to (its
node drained, failed or restarted) finds its record and chat there.

Keys: ``veche:room-state:<name>`` (the record) and ``veche:room-chat:<name>`` (a list of chat
entries). Both expire ``STATE_TTL`` after the room's last change, so the state of a node that
vanished does not stay for ever; rooms are brought back only when someone asks for them.
"""

from __future__ import annotations

from typing import Final

from veche.cluster.bus import Bus
from veche.roomstore import CHAT_KEPT

__all__ = ["STATE_TTL", "BusStore"]

STATE_TTL: Final = 7 * 86400.0
"""Seconds a room's state is kept after its last change."""


class BusStore:
    """A :class:`~veche.roomstore.RoomStore` on the bus's keys and lists."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def load(self, name: str) -> tuple[str, list[str]] | None:
        record = await self.bus.get(f"veche:room-state:{name}")
        if record is None:
            return None
        return record, await self.bus.items(f"veche:room-chat:{name}")

    async def save(self, name: str, record: str) -> None:
        await self.bus.put(f"veche:room-state:{name}", record, STATE_TTL)

    async def add_chat(self, name: str, entry_id: int, entry: str) -> None:
        await self.bus.append(f"veche:room-chat:{name}", entry, keep=CHAT_KEPT, ttl=STATE_TTL)

    async def delete(self, name: str) -> None:
        await self.bus.delete(f"veche:room-state:{name}", f"veche:room-chat:{name}")

    async def names(self) -> list[str]:
        return []

    async def close(self) -> None:
        return None
