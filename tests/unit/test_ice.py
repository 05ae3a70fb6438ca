"""Which STUN and TURN servers the server's own connections use (veche.ice)."""

from __future__ import annotations

from veche.ice import SERVER_USER, server_ice_servers
from veche.settings import Settings
from veche.turn import turn_credentials

SECRET = "s" * 32


def test_no_ice_servers_means_none_for_the_server() -> None:
    """An empty ``ice_servers`` gives the server nothing to contact."""
    assert server_ice_servers(Settings(), now=0) == []


def test_the_server_uses_stun_but_not_turn_unless_relayed() -> None:
    """With policy ``all`` the server uses the STUN URLs only."""
    settings = Settings(ice_servers="stun:stun.internal:3478,turn:turn.internal:3478")
    (server,) = server_ice_servers(settings, now=0)
    assert server.urls == ["stun:stun.internal:3478"]
    assert server.username is None


def test_a_relayed_server_uses_the_first_turn_url_with_its_own_credentials() -> None:
    """With policy ``relay`` the server uses the first TURN URL, with credentials for its own
    user name that coturn can check, and no STUN."""
    settings = Settings(
        ice_servers="stun:stun.internal:3478,turn:a.internal:3478,turn:b.internal:3478",
        ice_transport_policy="relay",
        turn_secret=SECRET,
    )
    (server,) = server_ice_servers(settings, now=1000)
    assert server.urls == ["turn:a.internal:3478"]
    assert server.username is not None
    expiry, user = server.username.split(":")
    assert expiry == str(1000 + settings.turn_ttl)
    assert user.startswith(f"{SERVER_USER}-")
    expected = turn_credentials(SECRET, user, ttl=settings.turn_ttl, now=1000)
    assert (server.username, server.credential) == expected


def test_each_relayed_server_connection_is_a_turn_user_of_its_own() -> None:
    """Every server connection gets its own TURN user, so coturn's per-user quota (sized for
    one participant) never caps how many connections the server relays."""
    settings = Settings(
        ice_servers="turn:a.internal:3478", ice_transport_policy="relay", turn_secret=SECRET
    )
    users = {server_ice_servers(settings, now=1000)[0].username for _ in range(20)}
    assert len(users) == 20
