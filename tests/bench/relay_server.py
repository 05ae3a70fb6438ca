"""The forwarding benchmark's baseline: aiortc's usual fan-out with ``MediaRelay``.

The publisher's tracks are decoded once and every subscriber gets its own re-encoded copy
(``pc.addTrack(relay.subscribe(track, buffered=False))``; unbuffered, so a subscriber whose
encoder falls behind skips frames instead of queueing them without bound). A reader that drops
every frame keeps the decoded tracks flowing while nobody is subscribed, so a new subscriber starts
with fresh frames.

It speaks the part of Veche's protocol that the benchmark's clients use, in one room with one
publisher: ``hello`` -> ``welcome``, the publish offer/answer and the subscribe offer/answer;
candidates travel inside the SDP (no trickle). Run as
``python -m tests.bench.relay_server serve --port N``; ``/healthz`` answers once it listens,
SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import WSMsgType, web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError

CLOSE_TIMEOUT: Final = 5.0
"""Seconds to wait for one peer connection to close."""


@dataclass(eq=False)
class Participant:
    """One WebSocket client and its peer connections."""

    id: str
    ws: web.WebSocketResponse
    publish_pc: RTCPeerConnection | None = None
    subscribe_pc: RTCPeerConnection | None = None

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def close(self) -> None:
        await self.ws.close()
        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pc.close(), CLOSE_TIMEOUT)


@dataclass
class Room:
    """The one room: the published tracks and who receives them."""

    relay: MediaRelay = field(default_factory=MediaRelay)
    tracks: list[MediaStreamTrack] = field(default_factory=list)
    participants: set[Participant] = field(default_factory=set)
    _drains: set[asyncio.Task[None]] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_participant(self, ws: web.WebSocketResponse) -> Participant:
        participant = Participant(f"p{next(self._ids)}", ws)
        self.participants.add(participant)
        return participant

    async def publish(self, participant: Participant, sdp: str) -> None:
        """Answer a publish offer; offer the new tracks to everyone else."""
        pc = participant.publish_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.on("track", self._published)
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await participant.send({"type": "answer", "pc": "publish", "sdp": pc.localDescription.sdp})
        for other in list(self.participants):
            if other is not participant:
                await self.offer(other)

    def _published(self, track: MediaStreamTrack) -> None:
        self.tracks.append(track)
        drain = asyncio.ensure_future(_drop_frames(self.relay.subscribe(track, buffered=False)))
        self._drains.add(drain)

    async def offer(self, participant: Participant) -> None:
        """Offer a participant that receives nothing yet every published track."""
        if participant.subscribe_pc is not None or not self.tracks:
            return
        pc = participant.subscribe_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        for track in self.tracks:
            pc.addTrack(self.relay.subscribe(track, buffered=False))
        await pc.setLocalDescription(await pc.createOffer())
        await participant.send({"type": "offer", "pc": "subscribe", "sdp": pc.localDescription.sdp})

    async def leave(self, participant: Participant) -> None:
        self.participants.discard(participant)
        await participant.close()

    async def close(self) -> None:
        for drain in self._drains:
            drain.cancel()
        await asyncio.gather(*(self.leave(p) for p in list(self.participants)))


async def _drop_frames(track: MediaStreamTrack) -> None:
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


ROOM: Final = web.AppKey("room", Room)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """One client: hello first, then publish offers and subscribe answers."""
    room = request.app[ROOM]
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    participant = room.new_participant(ws)
    try:
        async for raw in ws:
            if raw.type != WSMsgType.TEXT:
                continue
            message = json.loads(raw.data)
            kind, pc = message.get("type"), message.get("pc")
            if kind == "hello":
                await participant.send(
                    {
                        "type": "welcome",
                        "version": 1,
                        "participant_id": participant.id,
                        "room": message.get("room", ""),
                        "participants": [],
                        "ice_servers": [],
                        "resume_token": "",
                    }
                )
                await room.offer(participant)
            elif kind == "offer" and pc == "publish":
                await room.publish(participant, message["sdp"])
            elif kind == "answer" and pc == "subscribe" and participant.subscribe_pc is not None:
                answer = RTCSessionDescription(message["sdp"], "answer")
                await participant.subscribe_pc.setRemoteDescription(answer)
    finally:
        await room.leave(participant)
    return ws


async def _close_room(app: web.Application) -> None:
    await app[ROOM].close()


def create_app() -> web.Application:
    app = web.Application()
    app[ROOM] = Room()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/ws", websocket)
    app.on_shutdown.append(_close_room)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.relay_server")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    web.run_app(create_app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
