"""The participants of the lecture benchmark, in a process of their own (several such processes
share one lecture).

``python -m tests.bench.lecture_rig --url WS --room ROOM --total N --first I --count C
--epoch T`` joins ``p<I>`` .. ``p<I+C-1>`` of a lecture of N: ``p0`` is the presenter, who
publishes a simulcast camera and a microphone by replaying :mod:`tests.bench.clip` (as
:mod:`tests.bench.meeting_rig` does); everyone else is a viewer that publishes nothing (muted,
no camera) and shows the presenter large (``view``), counting what it receives without
decoding. The protocol on standard input and output is the meeting rig's: ``{"ready": ...}``,
then ``start`` / ``stop`` lines, ``stop`` answered with :meth:`LectureRig.results`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed

from tests.bench.clip import load_clip
from tests.bench.meeting_rig import LARGE, READY_TIMEOUT, Participant, Rig, serve


class LectureParticipant(Participant):
    """The presenter (``p0``) or a viewer: a viewer shows the presenter alone, large."""

    async def show(self) -> None:
        presenter = self.rig.ids.get("p0")
        if self.index == 0 or presenter is None:
            return
        width, height = LARGE
        text = json.dumps(
            {
                "type": "view",
                "tiles": [{"participant_id": presenter, "width": width, "height": height}],
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
        deadline = time.monotonic() + timeout
        while "p0" not in self.ids and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for participant in self.participants:
            await participant.show()
        while self.missing() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return self.missing()

    def missing(self) -> list[tuple[int, int]]:
        for participant in self.participants:
            participant.resolve_owners()
        return [
            (p.index, 0)
            for p in self.participants
            if p.index and ((tile := p.video_from(0)) is None or tile.frames == 0)
        ]

    def results(self) -> dict[str, Any]:
        """``fps``: each viewer's frame rate of the presenter's camera; ``audio``: each one's
        audio packets per second; ``packets_per_second`` received by all viewers together."""
        self.measuring = False
        end, start = self._totals(), self._start
        window = end["at"] - start["at"]
        fps = []
        audio = []
        for participant in self.participants:
            if participant.index == 0:
                continue
            frames = end["tiles"].get((participant.index, 0), (0, {}))[0]
            before = start["tiles"].get((participant.index, 0), (0, {}))[0]
            fps.append((frames - before) / window)
            packets = end["audio"].get(participant.index, (0, {}))[0]
            earlier = start["audio"].get(participant.index, (0, {}))[0]
            audio.append((packets - earlier) / window)
        return {
            "window": window,
            "fps": fps,
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
