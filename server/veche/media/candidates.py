"""Which remote ICE candidates the server accepts.

A candidate makes the server send UDP to its address, so a client could aim the server at
internal services (SSRF by ICE). Loopback, link-local (the cloud metadata service lives there),
unspecified and multicast addresses are refused, as are names: mDNS ``.local`` names are not
resolved (connectivity does not need them: the server learns the client's address from its
connectivity checks). Private LAN addresses are accepted: LAN meetings need them.
"""

from __future__ import annotations

import ipaddress
from typing import Final

__all__ = ["CandidateKey", "candidate_address_allowed", "filter_sdp_candidates"]

CandidateKey = tuple[str, int, str]
"""What makes two remote candidates the same one: address, port and transport (aiortc repeats
its candidates in every media section; they count once)."""

_METADATA: Final = frozenset({ipaddress.ip_address("fd00:ec2::254")})


def candidate_address_allowed(address: str, *, allow_local: bool = False) -> bool:
    """Whether a remote candidate's connection address may be used. ``allow_local`` accepts
    loopback and link-local addresses (tests that run everything on one host)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # a name (mDNS or DNS): never resolved
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_multicast or ip in _METADATA:
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
