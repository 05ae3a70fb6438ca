"""The multi-node path: how several Veche nodes serve one set of rooms.

One module per noun:

* :mod:`veche.cluster.bus` -- the seam between nodes: messages and expiring leases, in this
  process (:class:`~veche.cluster.bus.LocalBus`, the default) or shared through Redis
  (:mod:`veche.cluster.bus.redis`, the only module that imports redis);
* :mod:`veche.cluster.membership` -- :class:`~veche.cluster.membership.Cluster`: which nodes are
  alive, how loaded, and which node owns each room;
* :mod:`veche.cluster.relay` -- :class:`~veche.cluster.relay.Relay`: a client's signalling
  carried from the node it reached to the node that owns its room;
* :mod:`veche.cluster.envelopes` -- what the relays of two nodes say to each other: one
  pydantic model per kind of envelope, and the only encoding and decoding of that wire.

The client connection both the hub and the relay send to is :class:`veche.outlet.Outlet`.

Imports point one way: ``bus`` <- ``membership`` <- ``relay`` -> ``envelopes``; only the relay
knows the hub. Nothing here imports aiohttp: the WebSocket edge (:mod:`veche.signalling`) hands
the relay each text frame, and :func:`veche.app.create_app` wires the parts together.
"""
