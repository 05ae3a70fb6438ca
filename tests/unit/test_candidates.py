"""Remote ICE candidates the server refuses: loopback, link-local, metadata, names."""

from __future__ import annotations

import pytest

from veche.media.candidates import candidate_address_allowed, filter_sdp_candidates


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "0.0.0.0",
        "::",
        "169.254.169.254",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "::127.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::1",
        "2002:7f00:1::1",
        "2002:a9fe:a9fe::1",
        "0.1.2.3",
        "::0.1.2.3",
        "100.100.100.200",
        "224.0.0.1",
        "host.local",
        "0a1b2c3d-uuid.local",
        "example.org",
    ],
)
def test_refused(address: str) -> None:
    """Addresses that would aim the server at itself or a metadata service (also inside an IPv6
    address: IPv4-compatible, NAT64, 6to4), ``0.0.0.0/8``, and names."""
    assert not candidate_address_allowed(address)


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.5",
        "192.168.1.20",
        "203.0.113.9",
        "2001:db8::1",
        "64:ff9b::cb00:7109",
        "2002:cb00:7109::1",
    ],
)
def test_accepted(address: str) -> None:
    """Public and LAN addresses are accepted, also through NAT64 and 6to4."""
    assert candidate_address_allowed(address)


def test_local_addresses_can_be_allowed_for_tests() -> None:
    """allow_local accepts loopback and link-local, never the unspecified address."""
    assert candidate_address_allowed("127.0.0.1", allow_local=True)
    assert candidate_address_allowed("::1", allow_local=True)
    assert not candidate_address_allowed("0.0.0.0", allow_local=True)


def test_filter_sdp_candidates_drops_and_limits() -> None:
    """Refused candidate lines leave the SDP, and no more than the limit stay."""
    lines = [
        "v=0",
        "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
        "a=candidate:2 1 udp 2122260223 abc.local 50001 typ host",
        *(f"a=candidate:{n} 1 udp 2122260223 10.0.0.{n} 5000{n} typ host" for n in range(3, 9)),
        "a=end-of-candidates",
    ]
    seen: set[tuple[str, int, str]] = set()
    sdp = filter_sdp_candidates("\r\n".join(lines) + "\r\n", allow_local=False, limit=4, seen=seen)
    assert len(seen) == 4
    assert "127.0.0.1" not in sdp
    assert ".local" not in sdp
    assert sdp.count("a=candidate:") == 4
    assert "a=end-of-candidates" in sdp


def test_filter_sdp_candidates_counts_across_offers() -> None:
    """Candidates kept by an earlier description count against the limit of a later one."""
    seen: set[tuple[str, int, str]] = set()
    first = "".join(f"a=candidate:{n} 1 udp 1 10.0.0.{n} 5000 typ host\r\n" for n in range(3))
    filter_sdp_candidates(first, allow_local=False, limit=4, seen=seen)
    second = "".join(f"a=candidate:{n} 1 udp 1 10.0.1.{n} 5000 typ host\r\n" for n in range(3))
    sdp = filter_sdp_candidates(second, allow_local=False, limit=4, seen=seen)
    assert sdp.count("a=candidate:") == 1
    assert len(seen) == 4


def test_filter_sdp_candidates_counts_repeated_candidates_once() -> None:
    """The same address, port and transport repeated in every section counts once and stays in
    each section."""
    seen: set[tuple[str, int, str]] = set()
    section = "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=candidate:1 1 udp 1 10.0.0.1 5000 typ host\r\n"
    sdp = filter_sdp_candidates(section * 30, allow_local=False, limit=2, seen=seen)
    assert sdp.count("a=candidate:") == 30
    assert seen == {("10.0.0.1", 5000, "udp")}
