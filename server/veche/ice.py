"""Which STUN and TURN servers each side uses: the one place that splits ``ice_servers``.

Clients get the STUN URLs as configured and the TURN URLs with credentials of their own (TURN
REST, only with a ``turn_secret``). The server itself uses the STUN servers, or, when every
connection must be relayed (``ice_transport_policy=relay``), the first TURN URL with
credentials made for each new connection, each under a TURN user of its own: coturn's
``user-quota`` counts allocations per user, and is sized for one participant. An empty
``ice_servers`` means no STUN server is ever contacted, by anyone.
"""

from __future__ import annotations

import secrets

from veche.protocol import IceServer
from veche.settings import Settings
from veche.turn import turn_credentials

__all__ = ["client_ice_servers", "server_ice_servers"]

SERVER_USER = "veche-server"
"""The prefix of the TURN user names of the server's own connections
(``veche-server-<random>``)."""


def _split(urls: list[str]) -> tuple[list[str], list[str]]:
    stun = [url for url in urls if url.startswith(("stun:", "stuns:"))]
    turn = [url for url in urls if url.startswith(("turn:", "turns:"))]
    return stun, turn


def client_ice_servers(settings: Settings, user: str, *, now: float) -> list[IceServer]:
    """The ICE servers for one participant: STUN URLs as configured, TURN URLs with
    credentials of its own that expire after ``turn_ttl`` (only with a ``turn_secret``)."""
    stun, turn = _split(settings.ice_servers)
    servers = [IceServer(urls=stun)] if stun else []
    if turn and settings.turn_secret is not None:
        username, password = turn_credentials(
            settings.turn_secret.get_secret_value(), user, ttl=settings.turn_ttl, now=now
        )
        servers.append(IceServer(urls=turn, username=username, credential=password))
    elif turn:
        servers.append(IceServer(urls=turn))
    return servers


def server_ice_servers(settings: Settings, *, now: float) -> list[IceServer]:
    """The ICE servers for one of the server's own peer connections (aiortc uses one TURN
    server: the first TURN URL), with a TURN user of this connection's own."""
    stun, turn = _split(settings.ice_servers)
    if settings.ice_transport_policy != "relay":
        return [IceServer(urls=stun)] if stun else []
    if not turn or settings.turn_secret is None:
        return []
    user = f"{SERVER_USER}-{secrets.token_hex(6)}"
    username, password = turn_credentials(
        settings.turn_secret.get_secret_value(), user, ttl=settings.turn_ttl, now=now
    )
    return [IceServer(urls=turn[:1], username=username, credential=password)]
