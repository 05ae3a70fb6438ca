"""Which missing packets a NACK names: only those still worth a retransmission."""

from __future__ import annotations

from aiortc.rtcrtpreceiver import NackGenerator
from aiortc.rtp import RtpPacket

from veche.media.assembler import MAX_WAIT
from veche.media.nacks import NackWindow


def test_nack_window_names_packets_missing_for_less_than_the_assemblers_wait() -> None:
    """A packet is asked for with every NACK until it has been missing for the window, then
    never again, and taken off the receiver's list."""
    window = NackWindow()
    assert window.window == MAX_WAIT
    missing = {10, 11}
    assert window.due(missing, 100.0) == [10, 11]
    missing.add(15)
    assert window.due(missing, 100.2) == [10, 11, 15]
    assert window.due(missing, 100.0 + MAX_WAIT) == [15]
    assert missing == {15}
    assert window.due(missing, 100.2 + MAX_WAIT) == []
    assert missing == set()


def test_nack_window_forgets_a_packet_that_came() -> None:
    """A packet that arrived and goes missing again later (its number reused after a wrap)
    gets a full window of its own."""
    window = NackWindow(window=0.1)
    missing = {7}
    assert window.due(missing, 0.0) == [7]
    missing.clear()  # it came
    assert window.due(missing, 0.05) == []
    missing.add(7)
    assert window.due(missing, 0.09) == [7]
    assert window.due(missing, 0.18) == [7]
    assert window.due(missing, 0.19) == []


def test_nack_window_prunes_aiortcs_generator() -> None:
    """With aiortc's generator, a later gap's NACK no longer names the earlier gap's packet
    once its window is over."""
    generator = NackGenerator()
    window = NackWindow(window=0.25)
    for number in (1, 2, 4):
        generator.add(RtpPacket(sequence_number=number))
    assert window.due(generator.missing, 0.0) == [3]
    assert generator.add(RtpPacket(sequence_number=6))
    assert window.due(generator.missing, 0.1) == [3, 5]
    assert generator.add(RtpPacket(sequence_number=8))
    assert window.due(generator.missing, 0.3) == [5, 7]
    assert 3 not in generator.missing
