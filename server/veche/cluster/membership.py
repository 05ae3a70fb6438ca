"""The cluster: which nodes are alive, how loaded, and which node owns each room.

Each node writes a heartbeat key (``veche:node:<id>``: its participants, whether it is
draining, and for media placement its CPU load, the media it runs and its host; see
:mod:`veche.cluster.load`) that expires unless renewed, and holds an expiring lease
(``veche:room:<name>`` = node id) on every room it hosts, renewed with each heartbeat. A room
is owned by exactly one node: the first ``hello`` for a room without a live owner picks the
least-loaded node that is not draining and claims the room for it (an atomic set-if-absent,
so two nodes racing agree). A node that dies stops renewing: its heartbeat disappears within
``node_ttl`` and its rooms are taken over by whichever node next receives a ``hello`` for
them.

With the in-process :class:`~veche.cluster.bus.LocalBus` there is one node and every room is its
own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from veche.cluster.bus import Bus, BusUnavailable
from veche.cluster.load import LoadMeter
from veche.tasks import cancel_and_wait

__all__ = ["Cluster", "NodeInfo", "new_node_id"]

log = logging.getLogger(__name__)

NODE_PREFIX: Final = "veche:node:"
ROOM_PREFIX: Final = "veche:room:"


def new_node_id() -> str:
    """A fresh id for this process."""
    return "n-" + secrets.token_hex(4)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node as its heartbeat describes it: ``load`` its participants (rooms go to the node
    with fewest), ``cpu`` the share of its CPU it used lately, ``media`` the participants whose
    media it runs, ``host`` the machine it is on, ``at`` the (wall) time it said so."""

    id: str
    load: int
    draining: bool
    cpu: float = 0.0
    media: int = 0
    host: str = ""
    at: float = 0.0


class Cluster:
    """This node's view of the cluster. ``load`` counts what this node carries (participants);
    ``rooms`` lists the rooms it hosts now (their leases are renewed, others released)."""

    def __init__(
        self,
        bus: Bus,
        *,
        node_id: str | None = None,
        load: Callable[[], int] = lambda: 0,
        rooms: Callable[[], Iterable[str]] = lambda: (),
        media: Callable[[], int] = lambda: 0,
        host: str | None = None,
        meter: LoadMeter | None = None,
        beat: float = 2.0,
        node_ttl: float = 6.0,
        room_ttl: float = 10.0,
    ) -> None:
        self.bus = bus
        self.node_id = node_id or new_node_id()
        self.draining = False
        self._load = load
        self._rooms = rooms
        self._media = media
        self.host = host or self.node_id
        """The machine this node runs on (its own id when nobody said: a host of its own)."""
        self.meter = meter or LoadMeter()
        self._beat = beat
        self._node_ttl = node_ttl
        self._room_ttl = room_ttl
        self._settle_until = 0.0
        """After the bus was unreachable, until this (loop) time the other nodes may not have
        announced themselves again: no node counts as dead and no room is placed."""
        self._leased: dict[str, float] = {}
        """Rooms this node holds a lease on, with the (loop) time it claimed or renewed it."""
        self._task: asyncio.Task[None] | None = None

    @property
    def healthy(self) -> bool:
        """Whether the shared store answers."""
        return self.bus.healthy

    @property
    def settled(self) -> bool:
        """Whether the store answers and has for long enough that every live node is in it."""
        return self.bus.healthy and asyncio.get_running_loop().time() >= self._settle_until

    async def start(self) -> None:
        """Announce this node and keep its heartbeat and leases fresh."""
        with contextlib.suppress(BusUnavailable):
            await self._heartbeat()
        self._task = asyncio.create_task(self._beat_forever(), name="cluster-heartbeat")

    async def stop(self) -> None:
        """Stop the heartbeat and give up this node's leases and its node key."""
        await cancel_and_wait(self._task)
        with contextlib.suppress(BusUnavailable):
            for room in list(self._leased):
                await self._release(room)
            await self.bus.put(NODE_PREFIX + self.node_id, self._describe(), 0.001)
        self._leased.clear()

    async def drain(self) -> None:
        """Take no new rooms from now on (the heartbeat says so at once)."""
        self.draining = True
        with contextlib.suppress(BusUnavailable):
            await self._heartbeat()

    async def nodes(self) -> dict[str, NodeInfo]:
        """Every live node by id. Raises :class:`~veche.cluster.bus.BusUnavailable`."""
        found = {}
        for key, value in (await self.bus.scan(NODE_PREFIX)).items():
            try:
                data = json.loads(value)
                node = key[len(NODE_PREFIX) :]
                info = NodeInfo(
                    node,
                    int(data["load"]),
                    bool(data["draining"]),
                    cpu=float(data.get("cpu", 0.0)),
                    media=int(data.get("media", 0)),
                    host=str(data.get("host", node)),
                    at=float(data.get("at", 0.0)),
                )
            except (ValueError, KeyError, TypeError):
                continue
            found[info.id] = info
        return found

    async def owner_of(self, room: str) -> str:
        """The node that hosts ``room``, choosing and claiming one (by load) if it has no live
        owner. Raises :class:`~veche.cluster.bus.BusUnavailable`."""
        key = ROOM_PREFIX + room
        current = await self.bus.get(key)
        if current == self.node_id:
            return current
        if not self.settled:
            # Redis just came back (empty): the room's node will claim it again within a
            # heartbeat; placing it now could start it twice.
            raise BusUnavailable("the cluster is settling after a Redis outage")
        nodes = await self.nodes()
        if current is not None:
            if current in nodes and not nodes[current].draining:
                return current
            # Its node is gone, or draining and letting its rooms move: take the room over.
            await self.bus.release(key, current)
            log.info("room taken over", extra={"room": room, "from_node": current})
        owner = await self.bus.claim(key, self._choose(nodes), self._room_ttl)
        if owner == self.node_id:
            self._leased[room] = asyncio.get_running_loop().time()
        return owner

    async def alive(self, node_id: str) -> bool:
        """Whether ``node_id`` still sends heartbeats. Raises
        :class:`~veche.cluster.bus.BusUnavailable`."""
        return node_id == self.node_id or await self.bus.get(NODE_PREFIX + node_id) is not None

    def _choose(self, nodes: dict[str, NodeInfo]) -> str:
        """The least-loaded node that takes rooms; this one on a tie (no relaying then)."""
        me = NodeInfo(self.node_id, self._load(), self.draining)
        candidates = [n for n in nodes.values() if not n.draining and n.id != self.node_id]
        if not me.draining:
            candidates.insert(0, me)
        if not candidates:
            return self.node_id  # everyone drains: better served here than refused
        return min(candidates, key=lambda n: n.load).id

    def describe(self) -> NodeInfo:
        """This node as its next heartbeat says (with the load last sampled)."""
        return NodeInfo(
            self.node_id,
            self._load(),
            self.draining,
            cpu=round(self.meter.load, 3),
            media=self._media(),
            host=self.host,
            at=time.time(),
        )

    def _describe(self) -> str:
        info = self.describe()
        return json.dumps(
            {
                "load": info.load,
                "draining": info.draining,
                "cpu": info.cpu,
                "media": info.media,
                "host": info.host,
                "at": info.at,
            }
        )

    async def _heartbeat(self) -> None:
        self.meter.sample()
        await self.bus.put(NODE_PREFIX + self.node_id, self._describe(), self._node_ttl)
        if self.draining:
            # Rooms move away: whoever receives their next hello takes them.
            for room in list(self._leased):
                await self._release(room)
            return
        now = asyncio.get_running_loop().time()
        hosted = set(self._rooms())
        for room in hosted:
            key = ROOM_PREFIX + room
            if await self.bus.renew(key, self.node_id, self._room_ttl):
                self._leased[room] = now
                continue
            # Lost (Redis restarted empty, or the lease expired): take it back if free.
            owner = await self.bus.claim(key, self.node_id, self._room_ttl)
            if owner == self.node_id:
                self._leased[room] = now
            else:
                log.error("room owned by two nodes", extra={"room": room, "other": owner})
        for room, since in list(self._leased.items()):
            # A room claimed a moment ago may not be hosted yet: its first hello is on its way.
            if room not in hosted and now - since > 2 * self._beat:
                await self._release(room)

    async def _release(self, room: str) -> None:
        """Give up this node's lease on ``room``."""
        await self.bus.release(ROOM_PREFIX + room, self.node_id)
        self._leased.pop(room, None)

    async def _beat_forever(self) -> None:
        outage = False
        while True:
            await asyncio.sleep(self._beat / 4 if outage else self._beat)
            try:
                await self._heartbeat()
            except BusUnavailable:
                outage = True  # the bus logs it; retried often until Redis answers again
                continue
            if outage:
                outage = False
                self._settle_until = asyncio.get_running_loop().time() + 1.5 * self._beat
