"""The in-process bus: one node, nothing shared, nothing to run."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from veche.cluster.bus.base import Handler

__all__ = ["LocalBus"]


@dataclass(eq=False)
class _Subscription:
    bus: LocalBus
    channel: str
    handler: Handler
    active: bool = True

    def cancel(self) -> None:
        self.active = False
        with contextlib.suppress(ValueError):
            self.bus._subscribers.get(self.channel, []).remove(self)


@dataclass
class LocalBus:
    """Messages are handed to subscribers on the next turn of the event loop (as Redis would,
    never inside ``publish``); leases expire by ``clock``."""

    clock: Callable[[], float] = time.monotonic
    _subscribers: dict[str, list[_Subscription]] = field(default_factory=dict)
    _keys: dict[str, tuple[str, float]] = field(default_factory=dict)
    _lists: dict[str, tuple[list[str], float]] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for subscriptions in list(self._subscribers.values()):
            for subscription in list(subscriptions):
                subscription.cancel()

    async def publish(self, channel: str, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        for subscription in list(self._subscribers.get(channel, ())):
            loop.call_soon(self._deliver, subscription, data)

    @staticmethod
    def _deliver(subscription: _Subscription, data: bytes) -> None:
        if subscription.active:
            subscription.handler(data)

    def subscribe(self, channel: str, handler: Handler) -> _Subscription:
        subscription = _Subscription(self, channel, handler)
        self._subscribers.setdefault(channel, []).append(subscription)
        return subscription

    def _live(self, key: str) -> str | None:
        entry = self._keys.get(key)
        if entry is None:
            return None
        if entry[1] <= self.clock():
            del self._keys[key]
            return None
        return entry[0]

    async def claim(self, key: str, owner: str, ttl: float) -> str:
        current = self._live(key)
        if current is not None:
            return current
        self._keys[key] = (owner, self.clock() + ttl)
        return owner

    async def renew(self, key: str, owner: str, ttl: float) -> bool:
        if self._live(key) != owner:
            return False
        self._keys[key] = (owner, self.clock() + ttl)
        return True

    async def release(self, key: str, owner: str) -> None:
        if self._live(key) == owner:
            del self._keys[key]

    async def put(self, key: str, value: str, ttl: float) -> None:
        self._keys[key] = (value, self.clock() + ttl)

    async def get(self, key: str) -> str | None:
        return self._live(key)

    async def scan(self, prefix: str) -> dict[str, str]:
        found = {}
        for key in [key for key in self._keys if key.startswith(prefix)]:
            value = self._live(key)
            if value is not None:
                found[key] = value
        return found

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._keys.pop(key, None)
            self._lists.pop(key, None)

    async def append(self, key: str, value: str, *, keep: int, ttl: float) -> None:
        items = [*(await self.items(key)), value][-keep:]
        self._lists[key] = (items, self.clock() + ttl)

    async def items(self, key: str) -> list[str]:
        entry = self._lists.get(key)
        if entry is None:
            return []
        if entry[1] <= self.clock():
            del self._lists[key]
            return []
        return list(entry[0])
