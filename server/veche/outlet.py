"""The outlet: the one interface through which anything reaches a client connection.

The hub sends through it, and so does the relay on both of its sides. Two kinds implement it:
:class:`veche.signalling.ClientConnection` (a WebSocket on this node) and
:class:`veche.cluster.relay.RemoteOutlet` (a client connected to another node: its messages go
back over the bus). Every call returns at once, so nothing that sends waits for a slow client.
"""

from __future__ import annotations

from typing import Protocol

from veche.protocol import CloseCode, ServerMessage

__all__ = ["Outlet"]


class Outlet(Protocol):
    """What the hub and the relay need of a client connection."""

    def send(self, message: ServerMessage) -> None:
        """Queue ``message`` for the client."""

    def send_text(self, text: str) -> None:
        """Queue a message already encoded with :func:`~veche.protocol.encode` (a message for
        many recipients is encoded once)."""

    def close(self, code: CloseCode, reason: str) -> None:
        """Ask the connection to close once queued messages are sent."""
