"""The bus: how the nodes of one Veche service talk and agree, with or without Redis.

Two halves, both small:

* **messages**: ``publish(channel, data)`` and ``subscribe(channel, handler)``, at most once,
  in order per publisher (Redis pub/sub semantics); a subscription survives a lost connection
  to Redis (it is restored when Redis is back; what was published meanwhile is lost);
* **leases**: short-lived keys with an owner, for the node registry and room ownership:
  ``claim`` (set if absent), ``renew`` and ``release`` (only by the owner), ``put``, ``get``,
  ``scan``.

:class:`LocalBus` (the default) keeps all of it in this process;
:class:`~veche.cluster.bus.redis.RedisBus` shares it through Redis. Both pass the same contract
tests (``tests/integration/test_bus.py``). :func:`create_bus` chooses from the settings.
"""

from __future__ import annotations

from veche.cluster.bus.base import Bus, BusUnavailable, Handler, Subscription
from veche.cluster.bus.local import LocalBus
from veche.settings import Settings

__all__ = ["Bus", "BusUnavailable", "Handler", "LocalBus", "Subscription", "create_bus"]


def create_bus(settings: Settings) -> Bus:
    """:class:`~veche.cluster.bus.redis.RedisBus` when ``redis_url`` is set, else
    :class:`LocalBus`."""
    if settings.redis_url:
        from veche.cluster.bus.redis import RedisBus

        return RedisBus(settings.redis_url)
    return LocalBus()
