"""The multi-node path: how several Veche nodes serve one set of rooms.

One module per noun:

* :mod:`veche.cluster.bus` -- the seam between nodes: messages and expiring leases, in this
  process (:class:`~veche.cluster.bus.LocalBus`, the default) or shared through Redis
  (:mod:`veche.cluster.bus.redis`, the only module that imports redis);
* :mod:`veche.cluster.membership` -- :class:`~veche.cluster.membership.Cluster`: which nodes are
  alive, how loaded, and which node owns each room;
* :mod:`veche.cluster.relay` -- :class:`~veche.cluster.relay.Relay`: a client's signalling
  carried from the node it reached to the node that owns its room.

Nothing here imports aiohttp: the WebSocket edge (:mod:`veche.signalling`) hands the relay each
text frame, and :func:`veche.app.create_app` wires the three together.
"""
