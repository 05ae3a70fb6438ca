"""A subscribe leg follows its viewer's feedback: receiver reports and REMBs reach it through
real aiortc senders, the layer it sends is the lowest of the size's, the bandwidth's and the
server's ceiling, and a raised budget brings the layer back up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    pack_remb_fci,
)

from tests.unit.test_forwarding import VP8, FakeTime
from veche.media.bandwidth import PROBE_HOLD
from veche.media.codecs import Decoders
from veche.media.subscribe import SubscribeLeg
from veche.media.tracks import Downtrack, Uptrack

RATES = (150_000.0, 500_000.0, 1_500_000.0)


@pytest_asyncio.fixture
async def leg() -> AsyncIterator[tuple[SubscribeLeg, Uptrack, FakeTime]]:
    """A viewer showing a three-layer camera 1280 px wide, sent its top layer."""
    time = FakeTime()
    pcs: list[RTCPeerConnection] = []

    def new_pc() -> RTCPeerConnection:
        pcs.append(RTCPeerConnection(RTCConfiguration(iceServers=[])))
        return pcs[-1]

    uptrack = Uptrack(
        "p-pub", "video", VP8, lambda ssrc: None, clock=time.clock, rids=("q", "h", "f")
    )
    for layer, rate in zip(uptrack.layers, RATES, strict=True):
        layer.bitrate = rate
    subscriber = SubscribeLeg(
        "p-viewer",  # type: ignore[arg-type]
        Decoders(),
        new_pc=new_pc,
        bind=lambda pc: None,
        send=lambda message: None,
        on_refused=lambda uptrack: None,
        clock=time.clock,
    )
    subscriber.set_view({("p-pub", "camera"): (1280, 720)})
    subscriber.subscribe(uptrack)
    _downtrack(uptrack).layer = 2  # as if its frames flowed
    try:
        yield subscriber, uptrack, time
    finally:
        subscriber.stop()
        await subscriber.settled()
        for pc in pcs:
            await pc.close()


def _downtrack(uptrack: Uptrack) -> Downtrack:
    (downtrack,) = uptrack.downtracks
    return downtrack


def _sender(subscriber: SubscribeLeg) -> RTCRtpSender:
    assert subscriber.pc is not None
    return subscriber.pc.getTransceivers()[0].sender


async def _report(sender: RTCRtpSender, loss: float) -> None:
    info = RtcpReceiverInfo(
        ssrc=sender._ssrc,
        fraction_lost=int(loss * 256),
        packets_lost=0,
        highest_sequence=0,
        jitter=0,
        lsr=0,
        dlsr=0,
    )
    await sender._handle_rtcp_packet(RtcpRrPacket(ssrc=1, reports=[info]))


async def _remb(sender: RTCRtpSender, bitrate: int) -> None:
    fci = pack_remb_fci(bitrate, [sender._ssrc])
    await sender._handle_rtcp_packet(
        RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=fci)
    )


@pytest.mark.asyncio
async def test_heavy_loss_moves_the_viewer_down_and_a_quiet_link_brings_it_back(
    leg: tuple[SubscribeLeg, Uptrack, FakeTime],
) -> None:
    """Half the packets lost on the top layer (1.5 Mbit/s): the budget (the half that got
    through) fits the middle layer, taken at once; after a quiet PROBE_HOLD the budget is
    raised for the top layer again, and after another it is lifted."""
    subscriber, uptrack, time = leg
    sender = _sender(subscriber)
    assert _downtrack(uptrack).target == 2
    await _report(sender, 0.5)
    assert subscriber.budget.limit == pytest.approx(750_000, rel=0.01)
    assert _downtrack(uptrack).target == 1
    time.advance(PROBE_HOLD)
    await _report(sender, 0.0)
    assert _downtrack(uptrack).target == 2
    time.advance(PROBE_HOLD)
    await _report(sender, 0.0)
    assert subscriber.budget.limit is None


@pytest.mark.asyncio
async def test_a_remb_falling_below_what_is_sent_moves_the_viewer_to_the_low_layer(
    leg: tuple[SubscribeLeg, Uptrack, FakeTime],
) -> None:
    """The viewer's estimate falls from 3 Mbit/s to 200 kbit/s while 1.5 are sent: only the
    lowest layer fits (and it is never dropped below that)."""
    subscriber, uptrack, time = leg
    sender = _sender(subscriber)
    await _remb(sender, 3_000_000)
    assert subscriber.budget.limit is None
    time.advance(0.5)
    await _remb(sender, 200_000)
    assert subscriber.budget.limit == 200_000
    assert _downtrack(uptrack).target == 0


@pytest.mark.asyncio
async def test_the_servers_ceiling_caps_the_layer_whatever_the_size_and_bandwidth(
    leg: tuple[SubscribeLeg, Uptrack, FakeTime],
) -> None:
    """A ceiling of the lowest layer (a load governor's) takes the viewer there; lifted, the
    viewer goes back to the layer its size asks for."""
    subscriber, uptrack, _ = leg
    subscriber.ceiling = lambda uptrack: 0
    subscriber.update_layers()
    assert _downtrack(uptrack).target == 0
    subscriber.ceiling = lambda uptrack: len(uptrack.layers) - 1
    subscriber.update_layers()
    assert _downtrack(uptrack).target == 2
