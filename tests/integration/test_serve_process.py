"""The real ``veche serve`` process, driven by clients written with ``websockets``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from veche.client import VecheClient
from veche.protocol import CloseCode, IceServers, ParticipantJoined, ParticipantLeft

from .serverproc import run_server

pytestmark = pytest.mark.slow


async def test_serve_process_join_leave_and_sigterm() -> None:
    """Two clients see each other join and leave; SIGTERM closes sockets with 1001 and the
    process exits 0."""
    with run_server() as server:
        async with await VecheClient.connect(server.ws) as ada:
            welcome = await ada.join("Team", "Ada")
            assert welcome.room == "team"
            bob = await VecheClient.connect(server.ws)
            bob_welcome = await bob.join("team", "Bob")
            assert [p.name for p in bob_welcome.participants] == ["Ada", "Bob"]
            joined = await ada.expect("participant_joined")
            assert isinstance(joined, ParticipantJoined)
            assert joined.participant.id == bob_welcome.participant_id
            await bob.send({"type": "leave"})
            await bob.ws.wait_closed()
            assert bob.ws.close_code == CloseCode.NORMAL
            left = await ada.expect("participant_left")
            assert isinstance(left, ParticipantLeft)
            assert (left.participant_id, left.reason) == (bob_welcome.participant_id, "left")

            status = await asyncio.to_thread(server.terminate)
            with pytest.raises(ConnectionClosed) as closed:
                await ada.receive(timeout=10)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == CloseCode.GOING_AWAY
        assert status == 0
        assert "Traceback" not in server.output()


async def test_serve_with_self_signed_tls() -> None:
    """--self-signed serves HTTPS and WSS with a certificate for the listening address."""
    import ssl

    from websockets.asyncio.client import connect

    with run_server("--self-signed") as server:
        pem = ssl.get_server_certificate(("127.0.0.1", server.port))
        context = ssl.create_default_context(cadata=pem)
        async with connect(f"wss://127.0.0.1:{server.port}/ws", ssl=context) as ws:
            await ws.send('{"type": "hello", "version": 1, "room": "tls", "name": "Ada"}')
            assert '"welcome"' in await ws.recv()
        assert server.terminate() == 0
        assert "sha256" in server.output()


async def test_serve_with_given_certificate(tmp_path: Path) -> None:
    """--tls-cert/--tls-key serve HTTPS with that certificate."""
    import ssl
    import urllib.request

    from veche.tls import self_signed_certificate

    cert, key, _ = self_signed_certificate(["localhost", "127.0.0.1"])
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    with run_server(
        "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem")
    ) as server:
        context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        with urllib.request.urlopen(
            f"https://127.0.0.1:{server.port}/healthz", context=context
        ) as r:
            assert r.status == 200
        assert server.terminate() == 0


async def test_turn_credentials_are_renewed_while_present_and_never_in_the_lobby() -> None:
    """With ``turn_ttl`` 10 s a participant gets fresh credentials (a later expiry) in
    ``ice_servers`` at about half that; someone waiting in the lobby gets none."""
    args = (
        "--ice-servers",
        "turn:127.0.0.1:3478",
        "--turn-secret",
        "0123456789abcdef",
        "--turn-ttl",
        "10",
    )
    with run_server(*args) as server:
        async with (
            await VecheClient.connect(server.ws) as ada,
            await VecheClient.connect(server.ws) as bob,
        ):
            welcome = await ada.join("renew", "Ada")
            first = int(str(welcome.ice_servers[0].username).split(":")[0])
            await ada.send({"type": "configure", "lobby": True})
            await ada.expect("room_updated")
            await bob.send({"type": "hello", "version": 1, "room": "renew", "name": "Bob"})
            await bob.expect("waiting")
            renewed = await ada.expect("ice_servers", timeout=9)
            assert isinstance(renewed, IceServers)
            assert int(str(renewed.ice_servers[0].username).split(":")[0]) > first
            with pytest.raises(TimeoutError):
                await bob.expect("ice_servers", timeout=2)
