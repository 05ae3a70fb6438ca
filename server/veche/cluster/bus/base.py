"""The bus interface (see :mod:`veche.cluster.bus`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["Bus", "BusUnavailable", "Handler", "Subscription"]

Handler = Callable[[bytes], None]
"""Called with each message of a subscribed channel, on the event loop."""


class BusUnavailable(Exception):
    """The shared store cannot be reached (Redis is down); the caller decides what degrades."""


class Subscription(Protocol):
    """A live subscription; :meth:`cancel` ends it."""

    def cancel(self) -> None: ...


class Bus(Protocol):
    """What Veche needs from a coordination service."""

    @property
    def healthy(self) -> bool:
        """Whether the shared store answers (always true for :class:`LocalBus`)."""

    async def start(self) -> None:
        """Connect; subscriptions made before are activated."""

    async def close(self) -> None:
        """Stop every subscription and disconnect."""

    async def publish(self, channel: str, data: bytes) -> None:
        """Send ``data`` to every current subscriber of ``channel``."""

    def subscribe(self, channel: str, handler: Handler) -> Subscription:
        """Call ``handler`` with every message on ``channel`` from now on."""

    async def claim(self, key: str, owner: str, ttl: float) -> str:
        """Make ``owner`` own ``key`` for ``ttl`` seconds unless someone does; the owner."""

    async def renew(self, key: str, owner: str, ttl: float) -> bool:
        """Extend ``owner``'s lease on ``key``; False if it is not (or no longer) the owner."""

    async def release(self, key: str, owner: str) -> None:
        """Give up ``key`` if ``owner`` owns it."""

    async def put(self, key: str, value: str, ttl: float) -> None:
        """Set ``key`` to ``value`` for ``ttl`` seconds, whoever had it."""

    async def get(self, key: str) -> str | None:
        """The value of ``key``, if set and not expired."""

    async def scan(self, prefix: str) -> dict[str, str]:
        """Every live key starting with ``prefix``, with its value."""

    async def delete(self, *keys: str) -> None:
        """Forget ``keys`` (values and lists alike), whoever set them."""

    async def append(self, key: str, value: str, *, keep: int, ttl: float) -> None:
        """Add ``value`` at the end of the list ``key``, keep its last ``keep`` items, and let
        the whole list expire ``ttl`` seconds from now."""

    async def items(self, key: str) -> list[str]:
        """The list ``key``, oldest first (empty if there is none)."""
