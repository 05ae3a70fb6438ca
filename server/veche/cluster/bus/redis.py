"""The bus on Redis: pub/sub for messages, keys with expiry for leases.

redis-py's asyncio pub/sub does not come back by itself after Redis restarts; here one reader
task owns the pub/sub connection, and whenever it fails it reconnects with backoff and
subscribes to every channel again. Leases are single commands or short Lua scripts, so they are
atomic on the Redis side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from veche.cluster.bus.base import BusUnavailable
from veche.tasks import cancel_and_wait

if TYPE_CHECKING:
    from veche.cluster.bus.base import Handler

__all__ = ["RedisBus"]

log = logging.getLogger(__name__)

_RENEW: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
RETRY_MIN: Final = 0.1
RETRY_MAX: Final = 2.0
"""Seconds between attempts to reach Redis again (doubling)."""


@dataclass(eq=False)
class _Subscription:
    bus: RedisBus
    channel: str
    handler: Handler

    def cancel(self) -> None:
        self.bus._unsubscribe(self)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisBus:
    """A bus shared through the Redis at ``url`` (``redis://host:port/db``)."""

    def __init__(self, url: str) -> None:
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=5
        )
        self._subscriptions: dict[str, list[_Subscription]] = {}
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._healthy = False
        self._renew = self._client.register_script(_RENEW)
        self._release = self._client.register_script(_RELEASE)

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def start(self) -> None:
        try:
            await self._client.ping()
            self._healthy = True
        except (RedisError, OSError) as exc:
            log.warning("redis unreachable at start", extra={"error": str(exc)})
        self._reader = asyncio.create_task(self._read_forever(), name="redis-bus-reader")

    async def close(self) -> None:
        await cancel_and_wait(self._reader)
        await self._client.aclose()

    # ------------------------------------------------------------------ messages

    async def publish(self, channel: str, data: bytes) -> None:
        await self._call(self._client.publish(channel, data))

    def subscribe(self, channel: str, handler: Handler) -> _Subscription:
        subscription = _Subscription(self, channel, handler)
        self._subscriptions.setdefault(channel, []).append(subscription)
        self._changed.set()
        return subscription

    def _unsubscribe(self, subscription: _Subscription) -> None:
        listeners = self._subscriptions.get(subscription.channel, [])
        with contextlib.suppress(ValueError):
            listeners.remove(subscription)
        if not listeners:
            self._subscriptions.pop(subscription.channel, None)
        self._changed.set()

    async def _read_forever(self) -> None:
        delay = RETRY_MIN
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                subscribed: set[str] = set()
                while True:
                    wanted = set(self._subscriptions)
                    if wanted - subscribed:
                        await pubsub.subscribe(*(wanted - subscribed))
                    if subscribed - wanted:
                        await pubsub.unsubscribe(*(subscribed - wanted))
                    subscribed = wanted
                    self._changed.clear()
                    if not subscribed:
                        # Nothing to read; still check now and then that Redis answers.
                        await self._client.ping()
                        self._set_healthy(True)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._changed.wait(), 1.0)
                        continue
                    message = await pubsub.get_message(timeout=0.2)
                    self._set_healthy(True)
                    delay = RETRY_MIN
                    if message is not None and message.get("type") == "message":
                        self._dispatch(message)
            except (RedisError, OSError) as exc:
                self._set_healthy(False, str(exc))
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        name = channel.decode() if isinstance(channel, bytes) else str(channel)
        for subscription in list(self._subscriptions.get(name, ())):
            try:
                subscription.handler(message["data"])
            except Exception:
                log.exception("bus handler failed", extra={"channel": name})

    def _set_healthy(self, healthy: bool, error: str = "") -> None:
        if healthy != self._healthy:
            if healthy:
                log.info("redis reachable again; subscriptions restored")
            else:
                log.warning("redis unreachable", extra={"error": error})
        self._healthy = healthy

    # ------------------------------------------------------------------ leases

    async def claim(self, key: str, owner: str, ttl: float) -> str:
        if await self._call(self._client.set(key, owner, nx=True, px=_ms(ttl))):
            return owner
        current = await self._call(self._client.get(key))
        if current is None:  # expired in between: try once more
            return await self.claim(key, owner, ttl)
        return str(current.decode())

    async def renew(self, key: str, owner: str, ttl: float) -> bool:
        return bool(await self._call(self._renew(keys=[key], args=[owner, _ms(ttl)])))

    async def release(self, key: str, owner: str) -> None:
        await self._call(self._release(keys=[key], args=[owner]))

    async def put(self, key: str, value: str, ttl: float) -> None:
        await self._call(self._client.set(key, value, px=_ms(ttl)))

    async def get(self, key: str) -> str | None:
        value = await self._call(self._client.get(key))
        return None if value is None else str(value.decode())

    async def scan(self, prefix: str) -> dict[str, str]:
        keys = [key async for key in self._client.scan_iter(match=_escape(prefix) + "*")]
        if not keys:
            return {}
        values = await self._call(self._client.mget(keys))
        return {
            key.decode(): value.decode()
            for key, value in zip(keys, values, strict=True)
            if value is not None
        }

    async def delete(self, *keys: str) -> None:
        if keys:
            await self._call(self._client.delete(*keys))

    async def append(self, key: str, value: str, *, keep: int, ttl: float) -> None:
        pipeline = self._client.pipeline(transaction=True)
        pipeline.rpush(key, value)
        pipeline.ltrim(key, -keep, -1)
        pipeline.pexpire(key, _ms(ttl))
        await self._call(pipeline.execute())

    async def items(self, key: str) -> list[str]:
        values = await self._call(self._client.lrange(key, 0, -1))
        return [value.decode() for value in values]

    async def _call(self, awaitable: Any) -> Any:
        try:
            result = await awaitable
        except (RedisError, OSError) as exc:
            self._set_healthy(False, str(exc))
            raise BusUnavailable(f"redis: {exc}") from None
        return result


def _escape(prefix: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in prefix)
