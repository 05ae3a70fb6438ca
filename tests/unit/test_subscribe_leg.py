"""A subscribe leg whose connection aiortc closed under it (its client left, its DTLS closed)
while a change was waiting to be offered: the leg is renewed, and no offer failure is logged."""

from __future__ import annotations

import logging

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from tests.unit.test_forwarding import VP8, FakeTime
from veche.media.codecs import Decoders
from veche.media.subscribe import SubscribeLeg
from veche.media.tracks import Uptrack


async def test_a_connection_closed_before_its_offer_renews_the_leg_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime()
    pcs: list[RTCPeerConnection] = []
    failures: list[str] = []

    def new_pc() -> RTCPeerConnection:
        pcs.append(RTCPeerConnection(RTCConfiguration(iceServers=[])))
        return pcs[-1]

    leg = SubscribeLeg(
        "p-viewer",  # type: ignore[arg-type]
        Decoders(),
        new_pc=new_pc,
        bind=lambda pc: None,
        send=lambda message: None,
        on_refused=lambda uptrack: None,
        on_failed=failures.append,
        clock=time.clock,
    )
    uptrack = Uptrack("p-pub", "video", VP8, lambda ssrc: None, clock=time.clock)
    try:
        with caplog.at_level(logging.INFO, logger="veche.media.subscribe"):
            leg.subscribe(uptrack)  # its offer is made on the next turn of the loop
            await pcs[0].close()  # what aiortc does when the DTLS transport closes
            assert leg._negotiation is not None
            await leg._negotiation
        assert failures == ["the subscribe media connection closed"]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        leg.stop()
        for pc in pcs:
            await pc.close()
