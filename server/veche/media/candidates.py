"""Which remote ICE candidates the server accepts.

A candidate makes the server send UDP to its address, so a client could aim the server at
internal services (SSRF by ICE). Loopback, link-local (the cloud metadata service lives there),
``0.0.0.0/8``, other known metadata addresses, unspecified and multicast addresses are refused,
in IPv4 and in the IPv6 forms that carry an IPv4 address, as are names: mDNS ``.local`` names
are not resolved (connectivity does not need them: the server learns the client's address from
its connectivity checks). Private LAN addresses are accepted: LAN meetings need them.
"""

from __future__ import annotations

import ipaddress
from typing import Final

__all__ = ["CandidateKey", "candidate_address_allowed", "filter_sdp_candidates"]

CandidateKey = tuple[str, int, str]
"""What makes two remote candidates the same one: address, port and transport (aiortc repeats
its candidates in every media section; they count once)."""

_METADATA: Final = frozenset(
    # AWS's IPv6 metadata service, and Alibaba Cloud's (outside link-local).
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)
_THIS_NETWORK: Final = ipaddress.ip_network("0.0.0.0/8")
_IPV4_COMPATIBLE: Final = ipaddress.ip_network("::/96")
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
# Local-use NAT64 (RFC 8215): where the IPv4 address sits depends on the operator's prefix
# length, so none of it can be checked and all of it is refused.
_LOCAL_NAT64: Final = ipaddress.ip_network("64:ff9b:1::/48")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, IPv4-compatible, NAT64, 6to4), which
    a dual-stack host or a translator may deliver to."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and not (ip.is_loopback or ip.is_unspecified)):
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


def candidate_address_allowed(address: str, *, allow_local: bool = False) -> bool:
    """Whether a remote candidate's connection address may be used. ``allow_local`` accepts
    loopback and link-local addresses (tests that run everything on one host). An IPv6 address
    carrying an IPv4 one is judged by the IPv4 address."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
    except ValueError:
        return False  # a name (mDNS or DNS): never resolved
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _LOCAL_NAT64:
            return False
        ip = _embedded_ipv4(ip) or ip
    if ip.is_unspecified or ip.is_multicast or ip in _METADATA or ip in _THIS_NETWORK:
        return False
    if ip.is_loopback or ip.is_link_local:
        return allow_local
    return True


def filter_sdp_candidates(
    sdp: str, *, allow_local: bool, limit: int, seen: set[CandidateKey]
) -> str:
    """``sdp`` without the candidate lines the server refuses or that would take the distinct
    candidates of its connection beyond ``limit``. ``seen`` holds the connection's candidates so
    far (every earlier offer, answer and trickled candidate) and gains the new ones."""
    lines = []
    for line in sdp.splitlines(keepends=True):
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) < 8 or not fields[5].isdigit():
                continue
            if not candidate_address_allowed(fields[4], allow_local=allow_local):
                continue
            key = (fields[4], int(fields[5]), fields[2].lower())
            if key not in seen:
                if len(seen) >= limit:
                    continue
                seen.add(key)
        lines.append(line)
    return "".join(lines)
