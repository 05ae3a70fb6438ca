"""Rooms as large as ``max_participants`` allows, with real aiortc participants: no SDP or
candidate limit refuses a member below that size, and media that keeps failing backs off."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator

import pytest

from veche.media.backoff import FIRST_WAIT

from .peers import MediaClient
from .serverproc import run_server
from .waiting import until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("VECHE_IN_NETNS") != "1",
        reason="media tests run inside a private network namespace (make test)",
    ),
]

# Every participant here is on one address: the per-address limits are raised, not the room's.
ONE_ADDRESS = (
    "--max-connections-per-address",
    "100",
    "--max-pending-media-per-address",
    "100",
)


@contextlib.asynccontextmanager
async def _clients() -> AsyncIterator[list[MediaClient]]:
    clients: list[MediaClient] = []
    try:
        yield clients
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def _errors(clients: list[MediaClient]) -> list[dict[str, object]]:
    return [m for c in clients for m in c.messages if m["type"] == "error"]


async def test_aiortc_client_joins_room_with_twenty_publishers() -> None:
    """With the default limits, an aiortc client joining twenty publishers of a microphone and
    a camera answers an offer of forty sections (longer than max_sdp_length, each repeating its
    candidate) and receives every track (every microphone forwarded: ``max_audio_streams``
    0); nobody gets an error and no media is reset."""
    with run_server(*ONE_ADDRESS, "--max-audio-streams", "0") as server:
        async with _clients() as clients:
            for n in range(20):
                clients.append(await MediaClient.join(server.ws, "twenty", f"Pub{n}"))
            await asyncio.gather(*(c.publish(cheap=True) for c in clients))
            viewer = await MediaClient.join(server.ws, "twenty", "Viewer")
            clients.append(viewer)
            await until(
                lambda: len(viewer.remote) == 40 and all(r.frames > 0 for r in viewer.remote),
                timeout=40,
            )
            assert viewer.subscribe_pc is not None
            answer = viewer.subscribe_pc.localDescription.sdp
            assert answer.count("m=") == 40
            assert answer.count("a=candidate:") >= 40
            assert len(answer) > 30000
            print(f"twenty publishers: answer of {len(answer)} characters")
            assert _errors(clients) == []
        assert "media reset" not in server.output()


async def test_forty_participant_room_accepts_every_join() -> None:
    """Forty aiortc participants join one room with the default limits and each publishes a
    microphone: every publish offer and subscribe answer is accepted (no bad_sdp, no
    rate_limited, though the answers are longer than max_sdp_length and repeat a candidate in
    each of their 39 sections), and everyone hears all thirty-nine others (every microphone
    forwarded: ``max_audio_streams`` 0, as the loudest-only rule has a test of its own)."""
    started = time.monotonic()
    with run_server(*ONE_ADDRESS, "--max-audio-streams", "0") as server:
        async with _clients() as clients:
            for n in range(40):
                clients.append(await MediaClient.join(server.ws, "forty", f"P{n}"))
            await asyncio.gather(*(c.publish(video=False, cheap=True) for c in clients))
            last = clients[-1]
            await until(
                lambda: len(last.remote) == 39 and all(r.frames > 0 for r in last.remote),
                timeout=45,
            )
            await until(lambda: all(len(c.remote) == 39 for c in clients), timeout=20)
            assert last.subscribe_pc is not None
            answer = last.subscribe_pc.localDescription.sdp
            print(f"forty participants: answer of {len(answer)} characters")
            assert answer.count("m=") == 39
            assert len(answer) > 30000  # above max_sdp_length: the room's bound applies
            assert answer.count("a=candidate:") > 20  # repeated per section, counted once
            assert _errors(clients) == []
        assert "media reset" not in server.output()
    print(f"forty participants: {time.monotonic() - started:.1f} s")


def _forwards(sdp: str, owner: str) -> bool:
    """Whether a subscribe offer carries an active track of ``owner``."""
    return any(
        f"a=msid:{owner} " in section and "a=sendonly" in section for section in sdp.split("m=")
    )


async def _two_in_a_call(
    url: str, room: str, clients: list[MediaClient]
) -> tuple[MediaClient, MediaClient]:
    """Alice and Bob join ``room``, publish cheaply and receive each other (added to
    ``clients``, which closes them)."""
    alice = await MediaClient.join(url, room, "Alice")
    bob = await MediaClient.join(url, room, "Bob")
    clients += [alice, bob]
    await asyncio.gather(alice.publish(cheap=True), bob.publish(cheap=True))
    for one, other in ((alice, bob), (bob, alice)):
        await until(
            lambda one=one, other=other: one.receives_from(other.participant_id, video=5, audio=5),
            timeout=20,
        )
    return alice, bob


async def test_a_renewed_publish_connection_takes_over_the_same_senders() -> None:
    """A publish connection that closes under the server is renewed; the tracks published
    on the new one take over the senders that carried the old ones at every viewer: no viewer
    is offered anything (no renegotiation of a connection of up to a hundred sections, which
    used to happen twice per failure), and the viewer's same receiver decodes the new
    stream."""
    with run_server(*ONE_ADDRESS) as server:
        async with _clients() as clients:
            alice, bob = await _two_in_a_call(server.ws, "handover", clients)
            offers = len([m for m in alice.messages if m["type"] == "offer"])
            old = bob.publish_pc
            await old.close()  # DTLS close_notify: the server's side closes by itself
            error = await bob.wait_for(lambda m: m["type"] == "error", timeout=10)
            assert (error["code"], error["pc"]) == ("media_failed", "publish")
            frozen = alice.tracks_from(bob.participant_id, "video")[0].frames
            await bob.republish(cheap=True)
            await until(
                lambda: alice.tracks_from(bob.participant_id, "video")[0].frames > frozen + 10,
                timeout=20,
            )
            await until(
                lambda: bob.receives_from(alice.participant_id, video=5, audio=5), timeout=10
            )
            assert len([m for m in alice.messages if m["type"] == "offer"]) == offers
            assert len(alice.tracks_from(bob.participant_id, "video")) == 1
            assert len(alice.tracks_from(bob.participant_id, "audio")) == 1
            assert _errors([alice]) == []
        output = server.output()
    assert output.count("media reset after failure") == 1
    assert "Error handling request" not in output
    assert "Traceback" not in output


async def test_failing_media_is_reset_with_growing_waits() -> None:
    """A publisher whose subscribe connection never connects (it never answers) has that
    connection renewed with growing waits (1, 2, 4 … s apart) rather than at every failure,
    and only that one: it is told ``media_failed`` for ``subscribe``, and the others never
    lose its stream (its publish connection is left alone)."""
    with run_server("--media-connect-timeout", "0.5") as server:
        async with _clients() as clients:
            viewer = await MediaClient.join(server.ws, "failing", "Viewer")
            clients.append(viewer)
            await viewer.publish(cheap=True)
            failing = await MediaClient.join(server.ws, "failing", "Failing")
            clients.append(failing)
            failing.answer_subscribe = False
            await failing.publish(cheap=True)
            await asyncio.sleep(12)
            failures = [
                (m, at)
                for m, at in zip(failing.messages, failing.received_at, strict=True)
                if m.get("code") == "media_failed"
            ]
            offers = [m["sdp"] for m in viewer.messages if m["type"] == "offer"]
            frames = sum(r.frames for r in viewer.tracks_from(failing.participant_id, "video"))
            # ... and keeps coming (a cheap camera sends 2 frames a second).
            await until(
                lambda: (
                    sum(r.frames for r in viewer.tracks_from(failing.participant_id, "video"))
                    > frames + 3
                ),
                timeout=10,
            )
        output = server.output()
    resets = [at for _, at in failures]
    gaps = [b - a for a, b in itertools.pairwise(resets)]
    print(f"resets {len(resets)}, gaps {[round(g, 2) for g in gaps]}")
    # Without back-off it fails every ~0.6 s: about twenty resets in 12 s.
    assert 3 <= len(resets) <= 5
    for step, gap in enumerate(gaps):
        assert gap >= FIRST_WAIT * 2**step - 0.1
    assert {m.get("pc") for m, _ in failures} == {"subscribe"}
    assert output.count("media reset after failure") == len(resets)
    assert "connections=['publish'" not in output
    # Its stream never left the viewer.
    forwarded = [_forwards(sdp, failing.participant_id) for sdp in offers]
    assert forwarded
    assert all(forwarded[forwarded.index(True) :])
    assert frames > 0


async def test_closed_subscribe_connection_is_renewed_alone() -> None:
    """A subscribe connection that closes under the server (aiortc closes one whose DTLS
    transport closed: ICE consent lost under load, or the client closed it) is renewed on its
    own: the participant is told ``media_failed`` for ``subscribe``, is offered every track
    again on a new connection and receives again, also from someone who publishes meanwhile
    (whose offer used to fail on the closed connection and drop the publisher's signalling);
    its own stream keeps going to the others."""
    with run_server(*ONE_ADDRESS) as server:
        async with _clients() as clients:
            alice, bob = await _two_in_a_call(server.ws, "closing", clients)
            old = bob.subscribe_pc
            assert old is not None
            await old.close()  # DTLS close_notify: the server's side closes by itself
            error = await bob.wait_for(lambda m: m["type"] == "error", timeout=10)
            assert error["code"] == "media_failed"
            assert error["pc"] == "subscribe"
            carol = await MediaClient.join(server.ws, "closing", "Carol")
            clients.append(carol)
            await carol.publish(cheap=True)

            def renewed() -> bool:
                again = bob.tracks_from(alice.participant_id, "video")
                from_carol = bob.tracks_from(carol.participant_id, "video")
                return len(again) == 2 and again[-1].frames > 5 and bool(from_carol)

            await until(renewed, timeout=20)
            await until(
                lambda: bob.tracks_from(carol.participant_id, "video")[0].frames > 5, timeout=20
            )
            assert bob.subscribe_pc is not old
            before = alice.tracks_from(bob.participant_id, "video")[0].frames
            await until(
                lambda: alice.tracks_from(bob.participant_id, "video")[0].frames > before + 4,
                timeout=10,
            )
            offers = [m["sdp"] for m in alice.messages if m["type"] == "offer"]
            assert all(_forwards(sdp, bob.participant_id) for sdp in offers[-1:])
            assert len(alice.tracks_from(bob.participant_id, "video")) == 1  # never replaced
            assert [m for m in carol.messages if m["type"] == "error"] == []
            assert [m for m in alice.messages if m["type"] == "error"] == []
        output = server.output()
    assert output.count("media reset after failure") == 1
    assert "Error handling request" not in output
