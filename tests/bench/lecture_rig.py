"""The participants of the lecture benchmark, in a process of their own (several such processes
share one lecture).

``python -m tests.bench.lecture_rig --url WS --room ROOM --total N --first I --count C
--epoch T`` joins ``p<I>`` .. ``p<I+C-1>`` of a lecture of N: ``p0`` is the presenter, who
publishes a simulcast camera and a microphone by replaying :mod:`tests.bench.clip` (as
:mod:`tests.bench.meeting_rig` does) and shares a screen (a second video track: the clip's
1280x720 layer alone, at :data:`SCREEN_FPS` frames a second, as a browser sends a screen);
everyone else is a viewer that publishes nothing (muted, no camera) and shows the presenter's
camera and screen large (``view``), counting what it receives without decoding. The protocol
on standard input and output is the meeting rig's: ``{"ready": ...}``, then ``start`` /
``stop`` lines, ``stop`` answered with :meth:`LectureRig.results`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, Final

from aiortc import RTCSessionDescription
from websockets.exceptions import ConnectionClosed

from tests.bench.clip import load_clip
from tests.bench.meeting_rig import LARGE, READY_TIMEOUT, Participant, Rig, serve
from tests.bench.replay import (
    IdleTrack,
    ReplaySender,
    ScreenSender,
    attribute,
    enlarge_buffers,
    sections,
    simulcast_offer,
)

SCREEN_FPS: Final = 5
"""Frames a second of the presenter's shared screen (slides: few changes, many pixels)."""
SCREEN: Final = -1
"""The owner index under which a viewer counts the presenter's screen (its camera: 0)."""


class LectureParticipant(Participant):
    """The presenter (``p0``) or a viewer: a viewer shows the presenter's camera and screen,
    both large."""

    screen: ScreenSender | None = None

    async def publish(self) -> None:
        """The presenter's microphone, simulcast camera and one-layer screen, its sources
        named in the offer and the screen share announced first."""
        pc = self.publish_pc
        audio = pc.addTransceiver(IdleTrack("audio"), direction="sendonly")
        video = pc.addTransceiver(IdleTrack("video"), direction="sendonly")
        screen = pc.addTransceiver(IdleTrack("video"), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        enlarge_buffers(pc)
        offer = simulcast_offer(pc.localDescription.sdp, videos=1)
        mids = [attribute(section, "a=mid:") for section in sections(offer)]
        sources = dict(zip(mids, ("microphone", "camera", "screen"), strict=True))
        await self.ws.send(json.dumps({"type": "screen_share", "active": True}))
        await self.ws.send(
            json.dumps({"type": "offer", "pc": "publish", "sdp": offer, "sources": sources})
        )
        answer = await asyncio.wait_for(self._answers.get(), 30)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        self.sender = ReplaySender(
            self.rig.clip, video.sender, audio.sender, offer, answer, simulcast=True, level=30
        )
        self.screen = ScreenSender(self.rig.clip, screen.sender, offer, answer, 2, SCREEN_FPS)

    def _tiles_from_offer(self, sdp: str) -> None:
        """As a meeting participant, but the presenter's screen counts apart (owner
        :data:`SCREEN`) from its camera."""
        super()._tiles_from_offer(sdp)
        for section in sections(sdp):
            mid, msid = attribute(section, "a=mid:"), attribute(section, "a=msid:")
            tile = self._by_mid.get(mid or "")
            if tile is not None and msid is not None and msid.split()[0].endswith("~screen"):
                tile.owner = SCREEN

    async def show(self) -> None:
        presenter = self.rig.ids.get("p0")
        if self.index == 0 or presenter is None:
            return
        width, height = LARGE
        text = json.dumps(
            {
                "type": "view",
                "tiles": [
                    {"participant_id": presenter, "width": width, "height": height},
                    {
                        "participant_id": presenter,
                        "source": "screen",
                        "width": width,
                        "height": height,
                    },
                ],
            }
        )
        if text != self._shown:
            self._shown = text
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send(text)


class LectureRig(Rig):
    """This process's part of the lecture."""

    async def join(self, timeout: float = READY_TIMEOUT) -> list[tuple[int, int]]:
        """Join this process's participants (the presenter publishing, if it is here), then
        wait up to ``timeout`` seconds for every viewer's first frame of the presenter; the
        viewers still without one, as (viewer, 0)."""
        for index in range(self.first, self.first + self.count):
            participant = await LectureParticipant.join(self, index)
            self.participants.append(participant)
            if index == 0:
                await participant.publish()
                self._replays.append(asyncio.ensure_future(self.replay(participant)))
                self._replays.append(asyncio.ensure_future(self.replay_screen(participant)))
        deadline = time.monotonic() + timeout
        while "p0" not in self.ids and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for participant in self.participants:
            await participant.show()
        while self.missing() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return self.missing()

    async def replay_screen(self, participant: LectureParticipant) -> None:
        """Send the presenter's screen, :data:`SCREEN_FPS` frames a second on the shared
        clock, from now on."""
        number = math.ceil((time.monotonic() - self.epoch) * SCREEN_FPS)
        while True:
            await asyncio.sleep(max(0.0, self.epoch + number / SCREEN_FPS - time.monotonic()))
            if participant.screen is not None:
                participant.screen.send(number)
            number = max(number + 1, math.floor((time.monotonic() - self.epoch) * SCREEN_FPS))

    def missing(self) -> list[tuple[int, int]]:
        """(viewer, 0) for each viewer without a frame of the presenter's camera yet, (viewer,
        :data:`SCREEN`) without one of its screen."""
        for participant in self.participants:
            participant.resolve_owners()
        return [
            (p.index, owner)
            for p in self.participants
            for owner in (0, SCREEN)
            if p.index and ((tile := p.video_from(owner)) is None or tile.frames == 0)
        ]

    def results(self) -> dict[str, Any]:
        """``fps``: each viewer's frame rate of the presenter's camera; ``screen_fps`` of its
        screen; ``audio``: each one's audio packets per second; ``packets_per_second`` received
        by all viewers together."""
        self.measuring = False
        end, start = self._totals(), self._start
        window = end["at"] - start["at"]
        fps = []
        screen_fps = []
        audio = []
        for participant in self.participants:
            if participant.index == 0:
                continue
            frames = end["tiles"].get((participant.index, 0), (0, {}))[0]
            before = start["tiles"].get((participant.index, 0), (0, {}))[0]
            fps.append((frames - before) / window)
            shown = end["tiles"].get((participant.index, SCREEN), (0, {}))[0]
            shown_before = start["tiles"].get((participant.index, SCREEN), (0, {}))[0]
            screen_fps.append((shown - shown_before) / window)
            packets = end["audio"].get(participant.index, (0, {}))[0]
            earlier = start["audio"].get(participant.index, (0, {}))[0]
            audio.append((packets - earlier) / window)
        return {
            "window": window,
            "fps": fps,
            "screen_fps": screen_fps,
            "audio": audio,
            "packets_per_second": (end["packets"] - start["packets"]) / window,
            "send_lag_ms": max(
                (max(p.sender.lag, default=0) for p in self.participants if p.sender), default=0
            )
            * 1000,
        }


async def run(args: argparse.Namespace) -> None:
    clip = load_clip(Path(args.clip) if args.clip else None)
    rig = LectureRig(
        args.url,
        args.room,
        args.total,
        clip,
        epoch=args.epoch,
        first=args.first,
        count=args.count,
        measured_every=10**9,  # only the presenter's own index is "measured"; viewers count
    )
    await serve(rig)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.lecture_rig", description=__doc__)
    parser.add_argument("--url", required=True, help="the server's WebSocket URL")
    parser.add_argument("--room", required=True)
    parser.add_argument("--total", type=int, required=True, help="presenter and viewers")
    parser.add_argument("--first", type=int, default=0, help="index of this process's first")
    parser.add_argument("--count", type=int, required=True, help="participants in this process")
    parser.add_argument("--epoch", type=float, required=True, help="time.monotonic() of frame 0")
    parser.add_argument("--clip", help="the clip's cache file (see clip.py)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
