"""The bus contract, run against the in-process bus and against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from veche.cluster.bus import Bus, BusUnavailable, LocalBus, create_bus
from veche.settings import Settings

from .redisproc import REDIS_SERVER, RedisProcess, run_redis

needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisProcess]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (make test installs it as root)")
    with run_redis() as server:
        yield server


@pytest.fixture(params=["local", pytest.param("redis", marks=needs_redis)])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    if request.param == "local":
        made: Bus = create_bus(Settings())
        assert isinstance(made, LocalBus)
    else:
        server = request.getfixturevalue("redis_server")
        made = create_bus(Settings(redis_url=server.url))
    await made.start()
    try:
        yield made
    finally:
        await made.close()


async def _collect(received: list[bytes], count: int, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while len(received) < count:
            await asyncio.sleep(0.01)


async def _subscribed(bus: Bus, channel: str) -> None:
    """Wait until a subscription on ``channel`` receives (Redis subscribes asynchronously)."""
    probe: list[bytes] = []
    subscription = bus.subscribe(channel, probe.append)
    async with asyncio.timeout(3):
        while not probe:
            await bus.publish(channel, b"probe")
            await asyncio.sleep(0.05)
    subscription.cancel()


async def test_messages_reach_every_subscriber_in_order(bus: Bus) -> None:
    first: list[bytes] = []
    second: list[bytes] = []
    bus.subscribe("chan", first.append)
    bus.subscribe("chan", second.append)
    other: list[bytes] = []
    bus.subscribe("other", other.append)
    await _subscribed(bus, "chan")
    first.clear()
    second.clear()
    for i in range(50):
        await bus.publish("chan", str(i).encode())
    await _collect(first, 50)
    await _collect(second, 50)
    assert [int(x) for x in first if x != b"probe"] == list(range(50))
    assert first == second
    assert other == []


async def test_a_cancelled_subscription_gets_nothing_and_a_failing_handler_harms_nobody(
    bus: Bus,
) -> None:
    kept: list[bytes] = []

    def broken(data: bytes) -> None:
        raise RuntimeError("handler bug")

    if isinstance(bus, LocalBus):
        pytest.skip("the local bus runs handlers as loop callbacks: an error is the loop's")
    bus.subscribe("c", broken)
    dropped: list[bytes] = []
    gone = bus.subscribe("c", dropped.append)
    bus.subscribe("c", kept.append)
    await _subscribed(bus, "c")
    gone.cancel()
    kept.clear()
    await bus.publish("c", b"after")
    await _collect(kept, 1)
    assert kept == [b"after"]
    assert b"after" not in dropped


async def test_leases_have_one_owner_until_they_expire(bus: Bus) -> None:
    assert await bus.claim("room:a", "n1", 0.4) == "n1"
    assert await bus.claim("room:a", "n2", 0.4) == "n1"
    assert await bus.renew("room:a", "n1", 0.4)
    assert not await bus.renew("room:a", "n2", 0.4)
    await bus.release("room:a", "n2")  # not the owner: nothing happens
    assert await bus.get("room:a") == "n1"
    await asyncio.sleep(0.6)
    assert await bus.get("room:a") is None
    assert not await bus.renew("room:a", "n1", 0.4), "an expired lease cannot be renewed"
    assert await bus.claim("room:a", "n2", 5) == "n2"
    await bus.release("room:a", "n2")
    assert await bus.get("room:a") is None


async def test_put_get_and_scan_by_prefix(bus: Bus) -> None:
    await bus.put("node:1", '{"load": 1}', 5)
    await bus.put("node:2", '{"load": 2}', 0.2)
    await bus.put("room:x", "1", 5)
    await bus.put("node*:3", "odd name", 5)
    assert await bus.scan("node:") == {"node:1": '{"load": 1}', "node:2": '{"load": 2}'}
    await asyncio.sleep(0.4)
    assert await bus.scan("node:") == {"node:1": '{"load": 1}'}
    assert await bus.scan("node*") == {"node*:3": "odd name"}
    await bus.put("node:1", "again", 5)
    assert await bus.get("node:1") == "again"


async def test_lists_keep_their_last_items_and_delete_forgets_them(bus: Bus) -> None:
    assert await bus.items("test-list/a") == []
    for n in range(5):
        await bus.append("test-list/a", f"item {n}", keep=3, ttl=30)
    await bus.put("test-list/b", "value", ttl=30)
    assert await bus.items("test-list/a") == ["item 2", "item 3", "item 4"]
    await bus.delete("test-list/a", "test-list/b", "test-list/none")
    assert await bus.items("test-list/a") == []
    assert await bus.get("test-list/b") is None
    await bus.append("test-list/c", "short-lived", keep=3, ttl=0.05)
    await asyncio.sleep(0.15)
    assert await bus.items("test-list/c") == []


@needs_redis
async def test_redis_restart_restores_subscriptions() -> None:
    """Redis stops: publishing fails with BusUnavailable and the bus says it is unhealthy;
    Redis comes back (empty): the same subscription receives again, with no new subscribe."""
    with run_redis() as server:
        bus = create_bus(Settings(redis_url=server.url))
        await bus.start()
        try:
            received: list[bytes] = []
            bus.subscribe("events", received.append)
            await _subscribed(bus, "events")
            assert bus.healthy
            server.stop()
            with pytest.raises(BusUnavailable):
                await bus.publish("events", b"lost")
            async with asyncio.timeout(5):
                while bus.healthy:
                    await asyncio.sleep(0.05)
            server.start()
            async with asyncio.timeout(10):
                while not received or received[-1] != b"back":
                    with contextlib.suppress(BusUnavailable):  # until Redis answers
                        await bus.publish("events", b"back")
                    await asyncio.sleep(0.1)
            assert bus.healthy
            assert b"lost" not in received
        finally:
            await bus.close()
