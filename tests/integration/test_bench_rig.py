"""The meeting benchmark's rig (``tests/bench/meeting_rig.py``) against the real server process:
its replayed simulcast publisher is accepted and a viewer gets the layer its tile's size asks
for, so the benchmark cannot silently measure something else."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from tests.bench.clip import load_clip
from tests.bench.meeting_rig import Rig, TileCounter

from .serverproc import NO_GOVERNOR, run_server
from .waiting import until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("VECHE_IN_NETNS") != "1",
        reason="media tests run inside a private network namespace (make test)",
    ),
]


async def _layer_flows(tile: TileCounter, layer: int, frames: int = 15) -> bool:
    """Whether ``frames`` more frames of ``layer`` arrive on ``tile`` within 3 s."""
    before = tile.layers[layer]
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if tile.layers[layer] - before >= frames:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_replayed_simulcast_publisher_sends_a_viewer_the_layer_its_tile_asks_for() -> None:
    """Two rig participants, each showing the other: the large tile gets the 1280x720 layer;
    said to be 320 px wide it gets the 320x180 one, 640 px the 640x360 one (each frame is
    recognised by its bytes, so the layer is the one the publisher sent). The other viewer,
    which counts from clear RTP headers only, counts the frames of its tile too."""
    clip = await asyncio.to_thread(load_clip)
    with run_server("--max-connections-per-address", "100", *NO_GOVERNOR) as server:
        rig = Rig(server.ws, "rig", 2, clip, epoch=time.monotonic(), measured_every=2)
        try:
            assert await rig.join(timeout=20) == []
            viewer, publisher = rig.participants
            assert viewer.measured
            assert not publisher.measured
            tile = viewer.video_from(1)
            assert tile is not None
            assert await _layer_flows(tile, 2)
            for width, layer in ((320, 0), (640, 1)):
                shown = {"participant_id": publisher.participant_id, "width": width}
                await viewer.ws.send(json.dumps({"type": "view", "tiles": [shown]}))
                await until(lambda layer=layer: tile.layers[layer] > 0, timeout=3)
                assert await _layer_flows(tile, layer)
            counted = publisher.video_from(0)
            assert counted is not None
            before = counted.frames
            await asyncio.sleep(1)
            assert counted.frames - before >= 15
            assert "layers=['q', 'h', 'f']" in server.output()
        finally:
            await rig.close()
