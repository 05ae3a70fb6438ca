"""A minimal TURN client (RFC 5766) for tests: allocate with long-term credentials, then ask
for permissions, reading coturn's verdicts. CreatePermission sends nothing to the peer."""

from __future__ import annotations

import hashlib
import socket

from aioice import stun

UDP = 17 << 24


class TurnClient:
    """A blocking TURN client over UDP (tests only)."""

    def __init__(self, server: tuple[str, int], username: str, password: str) -> None:
        self.server = server
        self.username = username
        self.password = password
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(3)
        self.realm = ""
        self.nonce = b""

    def close(self) -> None:
        self.sock.close()

    def _exchange(self, request: stun.Message) -> stun.Message:
        self.sock.sendto(bytes(request), self.server)
        while True:
            data, _ = self.sock.recvfrom(2048)
            response = stun.parse_message(data)
            if response.transaction_id == request.transaction_id:
                return response

    def _authenticated(self, method: stun.Method, attributes: dict[str, object]) -> stun.Message:
        request = stun.Message(method, stun.Class.REQUEST, attributes=dict(attributes))
        request.attributes.update(
            {"USERNAME": self.username, "REALM": self.realm, "NONCE": self.nonce}
        )
        key = hashlib.md5(f"{self.username}:{self.realm}:{self.password}".encode()).digest()
        request.add_message_integrity(key)
        request.add_fingerprint()
        return self._exchange(request)

    def allocate(self) -> tuple[int | None, tuple[str, int] | None]:
        """Allocate a relay: ``(error code or None, relayed address)``."""
        first = self._exchange(
            stun.Message(
                stun.Method.ALLOCATE, stun.Class.REQUEST, attributes={"REQUESTED-TRANSPORT": UDP}
            )
        )
        if first.message_class == stun.Class.RESPONSE:
            return None, first.attributes["XOR-RELAYED-ADDRESS"]
        self.realm = str(first.attributes.get("REALM", ""))
        self.nonce = first.attributes.get("NONCE", b"")
        response = self._authenticated(stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP})
        if response.message_class == stun.Class.ERROR:
            return response.attributes["ERROR-CODE"][0], None
        return None, response.attributes["XOR-RELAYED-ADDRESS"]

    def permit(self, peer: str) -> int | None:
        """Ask to reach ``peer``: None if allowed, else the error code (403: forbidden)."""
        response = self._authenticated(
            stun.Method.CREATE_PERMISSION, {"XOR-PEER-ADDRESS": (peer, 9)}
        )
        if response.message_class == stun.Class.ERROR:
            return int(response.attributes["ERROR-CODE"][0])
        return None
