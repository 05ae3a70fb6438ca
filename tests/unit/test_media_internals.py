"""The private aiortc/aioice members that veche.media.internals relies on still exist."""

from __future__ import annotations

import importlib.metadata

from veche.media.internals import check_internals


def test_aiortc_internals_are_where_veche_expects_them() -> None:
    """Fails loudly (naming each member) when an aiortc or aioice upgrade moves one."""
    versions = {name: importlib.metadata.version(name) for name in ("aiortc", "aioice")}
    assert check_internals() == [], f"with {versions}"


async def test_bind_ports_keeps_candidates_in_range_and_announces_public_ip() -> None:
    """Host candidates use only ports of the range and carry the configured public address
    (gathering only: nothing is sent)."""
    from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection

    from veche.media.internals import bind_ports

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    try:
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        bind_ports(pc, 41100, 41109, "192.0.2.10")
        await pc.setLocalDescription(await pc.createOffer())
        candidates = [
            line.split()
            for line in pc.localDescription.sdp.splitlines()
            if line.startswith("a=candidate")
        ]
        assert candidates
        for fields in candidates:
            address, port = fields[4], int(fields[5])
            assert 41100 <= port <= 41109
            assert address == "192.0.2.10" or ":" in address  # IPv6 keeps its own address
    finally:
        await pc.close()
