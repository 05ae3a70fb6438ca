"""A small signalling client on the ``websockets`` library, for tests and tools.

::

    async with await VecheClient.connect("ws://127.0.0.1:8080/ws") as client:
        welcome = await client.join("team", "Ada")
        joined = await client.expect("participant_joined")
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from types import TracebackType
from typing import Any, Self

from websockets.asyncio.client import ClientConnection, connect

from veche.protocol import PROTOCOL_VERSION, SERVER_ADAPTER, ServerMessage, Welcome

__all__ = ["VecheClient"]


class VecheClient:
    """One signalling connection. Messages are validated against :data:`ServerMessage`."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def connect(
        cls, url: str, *, origin: str | None = None, cookie: str | None = None
    ) -> Self:
        """Open the WebSocket at ``url`` (``ws://host:port/ws``), optionally with an ``Origin``
        and a ``Cookie`` header as a browser would send them."""
        headers = {"Origin": origin} if origin else {}
        if cookie:
            headers["Cookie"] = cookie
        return cls(await connect(url, additional_headers=headers or None, max_size=2**20))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.ws.close()

    async def send(self, message: dict[str, Any]) -> None:
        """Send a raw JSON message (not validated, so tests can send bad ones)."""
        await self.ws.send(json.dumps(message))

    async def receive(self, timeout: float = 5.0) -> ServerMessage:
        """The next server message."""
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        return SERVER_ADAPTER.validate_json(raw)

    async def expect(self, kind: str, timeout: float = 5.0) -> ServerMessage:
        """Skip messages until one of type ``kind`` arrives."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.receive(timeout)
                if message.type == kind:
                    return message

    async def join(self, room: str, name: str, *, resume: str | None = None) -> Welcome:
        """Say ``hello`` (with a resume token, to come back as oneself) and return the
        ``welcome``."""
        hello: dict[str, Any] = {
            "type": "hello",
            "version": PROTOCOL_VERSION,
            "room": room,
            "name": name,
        }
        if resume is not None:
            hello["resume"] = resume
        await self.send(hello)
        message = await self.expect("welcome")
        assert isinstance(message, Welcome)
        return message

    def drop(self) -> None:
        """Lose the connection as a network failure does: a TCP reset, no close frame."""
        transport = self.ws.transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
