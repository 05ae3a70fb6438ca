"""A minimal TURN client (RFC 5766, RFC 6156) for tests: allocate with long-term credentials
(a UDP relay of either address family, or a TCP one), ask for permissions, reading coturn's
verdicts, and send data to a peer through the relay (Send indication or ChannelData).
CreatePermission alone sends nothing to the peer."""

from __future__ import annotations

import hashlib
import socket
import struct

from aioice import stun

UDP = 17 << 24
TCP = 6 << 24

# RFC 6156 REQUESTED-ADDRESS-FAMILY (0x0017): one byte 0x01 (IPv4) or 0x02 (IPv6), then three
# reserved bytes. aioice does not know it; teach its attribute table (tests only).
_FAMILY = "REQUESTED-ADDRESS-FAMILY"
if _FAMILY not in stun.ATTRIBUTES_BY_NAME:
    _entry = (0x0017, _FAMILY, stun.pack_unsigned, stun.unpack_unsigned)
    stun.ATTRIBUTES_BY_NAME[_FAMILY] = _entry
    stun.ATTRIBUTES_BY_TYPE[0x0017] = _entry
IPV6_FAMILY = 0x02 << 24


class TurnClient:
    """A blocking TURN client over UDP, or over TCP with ``tcp=True`` (tests only)."""

    def __init__(
        self, server: tuple[str, int], username: str, password: str, *, tcp: bool = False
    ) -> None:
        self.server = server
        self.username = username
        self.password = password
        self.tcp = tcp
        if tcp:
            self.sock = socket.create_connection(server, timeout=3)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(3)
        self.realm = ""
        self.nonce = b""

    def close(self) -> None:
        self.sock.close()

    def _send(self, data: bytes) -> None:
        if self.tcp:
            self.sock.sendall(data)
        else:
            self.sock.sendto(data, self.server)

    def _receive(self) -> bytes:
        if not self.tcp:
            data, _ = self.sock.recvfrom(2048)
            return data
        header = self._read_exactly(20)
        (length,) = struct.unpack("!H", header[2:4])
        return header + self._read_exactly(length)

    def _read_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the TURN server closed the connection")
            data += chunk
        return data

    def _exchange(self, request: stun.Message) -> stun.Message:
        self._send(bytes(request))
        while True:
            data = self._receive()
            if data[0] & 0xC0:  # ChannelData, not STUN
                continue
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

    def allocate(
        self, *, transport: int = UDP, ipv6: bool = False
    ) -> tuple[int | None, tuple[str, int] | None]:
        """Allocate a relay (UDP unless ``transport=TCP``; IPv6 with ``ipv6``): ``(error code or
        None, relayed address)``."""
        attributes: dict[str, object] = {"REQUESTED-TRANSPORT": transport}
        if ipv6:
            attributes[_FAMILY] = IPV6_FAMILY
        first = self._exchange(
            stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST, attributes=dict(attributes))
        )
        if first.message_class == stun.Class.RESPONSE:
            return None, first.attributes["XOR-RELAYED-ADDRESS"]
        self.realm = str(first.attributes.get("REALM", ""))
        self.nonce = first.attributes.get("NONCE", b"")
        response = self._authenticated(stun.Method.ALLOCATE, attributes)
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

    def send(self, peer: tuple[str, int], data: bytes) -> None:
        """A Send indication: the relay sends ``data`` to ``peer`` (needs a permission)."""
        indication = stun.Message(
            stun.Method.SEND,
            stun.Class.INDICATION,
            attributes={"XOR-PEER-ADDRESS": peer, "DATA": data},
        )
        indication.add_fingerprint()
        self._send(bytes(indication))

    def bind_channel(self, channel: int, peer: tuple[str, int]) -> int | None:
        """Bind ``channel`` (0x4000-0x7FFF) to ``peer``: None if bound, else the error code."""
        response = self._authenticated(
            stun.Method.CHANNEL_BIND, {"CHANNEL-NUMBER": channel, "XOR-PEER-ADDRESS": peer}
        )
        if response.message_class == stun.Class.ERROR:
            return int(response.attributes["ERROR-CODE"][0])
        return None

    def send_channel(self, channel: int, data: bytes) -> None:
        """ChannelData: the relay sends ``data`` to the peer bound to ``channel``."""
        padding = b"\0" * (-len(data) % 4) if self.tcp else b""
        self._send(struct.pack("!HH", channel, len(data)) + data + padding)
