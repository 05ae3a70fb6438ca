"""Sockets of a loaded server: read in bursts; ICE consent kept while answers come late.

Two real aioice connections over the loopback, the controlled side answering consent checks
late (as a loaded process does) or not at all. The intervals are shortened so that the test
takes seconds: a check every 0.2 s, consent expiring after 2 s without an answer.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aioice
import aioice.ice
import pytest
import pytest_asyncio

from veche.media import internals

pytestmark = pytest.mark.asyncio

CHECK_EVERY = 0.2
EXPIRY = 2.0


@pytest_asyncio.fixture
async def pair() -> AsyncIterator[tuple[aioice.Connection, aioice.Connection]]:
    controlling = aioice.Connection(ice_controlling=True, components=1)
    controlled = aioice.Connection(ice_controlling=False, components=1)
    for one in (controlling, controlled):
        await one.gather_candidates()
    for one, other in ((controlling, controlled), (controlled, controlling)):
        for candidate in other.local_candidates:
            await one.add_remote_candidate(candidate)
        await one.add_remote_candidate(None)
        one.remote_username = other.local_username
        one.remote_password = other.local_password
    await asyncio.gather(controlling.connect(), controlled.connect())
    yield controlling, controlled
    await asyncio.gather(controlling.close(), controlled.close())


def answer_late(connection: aioice.Connection, delay: float | None) -> None:
    """Make ``connection`` send its STUN answers ``delay`` seconds late (never if None)."""
    for protocol in connection._protocols:  # the test's own interference
        send: Callable[[Any, tuple[str, int]], None] = protocol.send_stun

        def late(message: Any, addr: tuple[str, int], send: Any = send) -> None:
            if message.message_class != aioice.stun.Class.RESPONSE:
                send(message, addr)
            elif delay is not None:
                asyncio.get_running_loop().call_later(delay, send, message, addr)

        protocol.send_stun = late


async def still_open_after(connection: aioice.Connection, seconds: float) -> bool:
    """Whether ``connection`` is still open ``seconds`` from now (a pending ``recv`` ends with
    an error when it closes)."""
    receiving = asyncio.create_task(connection.recv())
    done, _ = await asyncio.wait({receiving}, timeout=seconds)
    if not done:
        receiving.cancel()
        return True
    with pytest.raises(ConnectionError):
        receiving.result()
    return False


@pytest.fixture
def short_intervals(monkeypatch: pytest.MonkeyPatch) -> None:
    internals.patient_consent()
    monkeypatch.setattr(internals, "CONSENT_INTERVAL", CHECK_EVERY)
    monkeypatch.setattr(internals, "CONSENT_EXPIRY", EXPIRY)
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", CHECK_EVERY)


async def test_answers_a_second_late_keep_the_connection(
    short_intervals: None, pair: tuple[aioice.Connection, aioice.Connection]
) -> None:
    controlling, controlled = pair
    answer_late(controlled, 0.8)
    assert await still_open_after(controlling, 2.5 * EXPIRY)


async def test_no_answers_end_the_connection_after_the_expiry(
    short_intervals: None, pair: tuple[aioice.Connection, aioice.Connection]
) -> None:
    controlling, controlled = pair
    answer_late(controlled, None)
    # Expiry, plus one check interval and one check's whole retransmission window.
    assert not await still_open_after(controlling, EXPIRY + CHECK_EVERY * 1.2 + 7.5 + 1)


async def test_aioice_alone_drops_a_connection_whose_answers_come_late(
    monkeypatch: pytest.MonkeyPatch, pair: tuple[aioice.Connection, aioice.Connection]
) -> None:
    """What :func:`internals.patient_consent` is for: aioice's own check counts an answer
    later than 0.5 s as none, and six of those close the connection."""
    original = getattr(aioice.ice.Connection.query_consent, "_veche_original", None)
    if original is not None:
        monkeypatch.setattr(aioice.ice.Connection, "query_consent", original)
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", CHECK_EVERY)
    controlling, controlled = pair
    # The checks started with the connection: restart them with the short interval.
    controlling._query_consent_task.cancel()
    controlling._query_consent_task = asyncio.create_task(controlling.query_consent())
    answer_late(controlled, 0.8)
    assert not await still_open_after(controlling, 2.5 * EXPIRY)


async def test_a_ready_socket_is_read_in_bursts() -> None:
    """What waits on a UDP socket is read within a few turns of the event loop (asyncio alone
    reads one datagram per turn: a publisher's socket fell behind a busy loop), in order."""
    internals.read_in_bursts()
    loop = asyncio.get_running_loop()
    received: list[bytes] = []

    class Counting(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
            received.append(data)

    transport, _ = await loop.create_datagram_endpoint(Counting, local_addr=("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        port = transport.get_extra_info("sockname")[1]
        sent = [index.to_bytes(2, "big") for index in range(3 * internals.BURST)]
        for datagram in sent:
            sender.sendto(datagram, ("127.0.0.1", port))
        # On the loopback they all wait on the socket now; give the loop six turns.
        for _ in range(6):
            await asyncio.sleep(0)
        assert received == sent
    finally:
        sender.close()
        transport.close()
