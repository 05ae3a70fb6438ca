"""Token authentication (auth=jwt): every refusal before the upgrade, names and roles from the
token, one connection per identity, and the `veche token` command."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from veche.app import create_app

from .wsutil import expect, recv

Client = TestClient[Any, Any]
SECRET = "a-jwt-secret-of-at-least-thirty-two-characters"


def _token(key: Any = SECRET, algorithm: str = "HS256", **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "sub": "user-1",
        "room": "board",
        "name": "Ada Admin",
        "moderator": False,
        "aud": "veche",
        "nbf": now - 10,
        "exp": now + 600,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=algorithm)


def _unsigned(**claims: Any) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    body = {"sub": "x", "room": "board", "name": "x", "aud": "veche", "nbf": now, "exp": now + 60}
    body.update(claims)
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(body)}."


@pytest.fixture
async def client(aiohttp_client: Any, make_settings: Any) -> Client:
    settings = make_settings(auth="jwt", jwt_secret=SECRET)
    result: Client = await aiohttp_client(create_app(settings))
    return result


REFUSED = {
    "missing": None,
    "garbage": "not-a-token",
    "expired": _token(exp=int(time.time()) - 60, nbf=int(time.time()) - 120),
    "not yet valid": _token(nbf=int(time.time()) + 600),
    "wrong audience": _token(aud="someone-else"),
    "no audience": _token(aud=None),
    "alg none": _unsigned(),
    "wrong secret": _token(key="another-secret-that-is-also-long-enough-000"),
    "wrong room": _token(room="another-room"),
    "no subject": _token(sub=None),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_refused_tokens_get_401_before_upgrade(client: Client, case: str) -> None:
    """Each bad token is refused with 401 and the same answer, before any WebSocket."""
    token = REFUSED[case]
    query = {"room": "board", **({"token": token} if token else {})}
    with pytest.raises(WSServerHandshakeError) as caught:
        await client.ws_connect("/ws", params=query)
    assert caught.value.status == 401
    response = await client.get("/ws", params=query)
    assert response.status == 401
    assert await response.text() == "a valid token is required\n"


async def test_algorithm_confusion_is_refused(
    aiohttp_client: Any, make_settings: Any, tmp_path: Path
) -> None:
    """With ES256 pinned, an HS256 token 'signed' with the public key is refused; a real ES256
    token is accepted."""
    key = ec.generate_private_key(ec.SECP256R1())
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "public.pem").write_bytes(public_pem)
    settings = make_settings(
        auth="jwt", jwt_algorithm="ES256", jwt_public_key_file=str(tmp_path / "public.pem")
    )
    client: Client = await aiohttp_client(create_app(settings))
    # PyJWT itself refuses to HMAC-sign with a PEM key, so build the confused token by hand.
    import hashlib
    import hmac

    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    now = int(time.time())
    body = base64.urlsafe_b64encode(
        json.dumps(
            {
                "sub": "x",
                "room": "board",
                "name": "x",
                "aud": "veche",
                "nbf": now - 5,
                "exp": now + 60,
            }
        ).encode()
    ).rstrip(b"=")
    signature = base64.urlsafe_b64encode(
        hmac.new(public_pem, header + b"." + body, hashlib.sha256).digest()
    ).rstrip(b"=")
    forged = (header + b"." + body + b"." + signature).decode()
    with pytest.raises(WSServerHandshakeError) as caught:
        await client.ws_connect("/ws", params={"room": "board", "token": forged})
    assert caught.value.status == 401
    good = _token(key=key, algorithm="ES256")
    ws = await client.ws_connect("/ws", params={"room": "board", "token": good})
    await ws.send_json({"type": "hello", "version": 1, "room": "board", "name": "ignored"})
    assert (await recv(ws))["type"] == "welcome"


async def test_token_sets_name_and_moderator_and_one_connection_per_identity(
    client: Client,
) -> None:
    """The token's name and moderator flag win over hello; a second connection of the same
    identity replaces the first, which is told so."""
    token = _token(moderator=True)
    first = await client.ws_connect("/ws", params={"room": "board", "token": token})
    await first.send_json({"type": "hello", "version": 1, "room": "board", "name": "Mallory"})
    welcome = await recv(first)
    me = welcome["participants"][0]
    assert (me["name"], me["role"]) == ("Ada Admin", "moderator")
    guest = await client.ws_connect(
        "/ws", params={"room": "board", "token": _token(sub="user-2", name="Bob")}
    )
    await guest.send_json({"type": "hello", "version": 1, "room": "board", "name": "x"})
    assert (await recv(guest))["participants"][1]["role"] == "participant"
    second = await client.ws_connect("/ws", params={"room": "board", "token": token})
    await second.send_json({"type": "hello", "version": 1, "room": "board", "name": "x"})
    assert await expect(first, "goodbye") == {"type": "goodbye", "reason": "replaced"}
    assert (await recv(second))["type"] == "welcome"
    left = await expect(guest, "participant_left")
    assert left["reason"] == "replaced"
    # A token for one room cannot be used to say hello in another.
    other = await client.ws_connect("/ws", params={"room": "board", "token": _token(sub="u3")})
    await other.send_json({"type": "hello", "version": 1, "room": "elsewhere", "name": "x"})
    assert (await recv(other))["code"] == "forbidden"


def test_veche_token_command_mints_a_valid_token() -> None:
    """`veche token` prints a token the server's settings accept."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "veche",
            "token",
            "--room",
            "board",
            "--name",
            "Ada",
            "--moderator",
            "--ttl",
            "120",
        ],
        env={"VECHE_AUTH": "jwt", "VECHE_JWT_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"], audience="veche")
    assert (claims["room"], claims["name"], claims["moderator"]) == ("board", "Ada", True)
    assert claims["exp"] - claims["nbf"] <= 130
