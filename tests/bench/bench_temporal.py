"""Benchmark: what each of the load governor's levers saves, on a real Chromium simulcast
publisher that encodes each layer in three temporal layers (L1T3).

One publisher (a 1280x720 fake camera at 30 fps, so all three layers flow; no microphone, so
it is never the active speaker) and three viewers in one Chromium, showing its tile 1200, 500
and 200 CSS pixels wide (top, middle and low layer). The governor is pinned at each level in turn
(``PUT /api/governor``) for ``--seconds``; per level it prints, for each viewer, the layer it
is sent and its frames, packets and kilobits per second as received (``inbound-rtp``), and the
server's forwarded packets per second (``/metrics``) and CPU (cores, from ``/proc``). Level 0
of the three viewers gives each layer at its full frame rate, which is what the governor's
levels sent before temporal layers (level 1 the middle layer, levels 2-3 the low one).

Run inside a private network namespace::

    sh scripts/netns-run .venv/bin/python tests/bench/bench_temporal.py [--seconds 6] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.bench.procstat import cpu_seconds  # noqa: E402
from tests.browser.conftest import chromium  # noqa: E402
from tests.browser.test_simulcast import listener  # noqa: E402
from tests.browser.test_temporal import CAMERA_30FPS, TOKEN, _publisher, pin, rate  # noqa: E402
from tests.integration.serverproc import NO_GOVERNOR, run_server  # noqa: E402
from tests.integration.test_metrics import scrape, value  # noqa: E402

WIDTHS: Final = (1200, 500, 200)


async def bench(seconds: float, rounds: int) -> None:
    with run_server("--admin-token", TOKEN, *NO_GOVERNOR) as server:
        async with chromium(fake_ui=True, extra_args=CAMERA_30FPS) as browser:
            _, pub = await _publisher(browser, server.http, hd=True)
            async with chromium() as viewers:
                pages = [await listener(viewers, server.http, f"V{w}", pub, w) for w in WIDTHS]
                ids = [
                    await p.evaluate("() => window.veche.connection.participantId") for p in pages
                ]
                await asyncio.sleep(5)  # every layer up and each viewer at its own
                print("level | tile px | layer | fps | pkt/s | kbit/s || server pkt/s | cores")
                for _ in range(rounds):
                    for level in (0, 1, 2, 3):
                        pin(server, level)
                        await asyncio.sleep(3)  # a layer switch waits for its keyframe
                        started, cpu = time.monotonic(), cpu_seconds(server.process.pid)
                        packets = value(scrape(server), "veche_packets_forwarded_total")
                        rates = await asyncio.gather(*(rate(p, pub, seconds) for p in pages))
                        elapsed = time.monotonic() - started
                        cores = (cpu_seconds(server.process.pid) - cpu) / elapsed
                        forwarded = (
                            value(scrape(server), "veche_packets_forwarded_total") - packets
                        ) / elapsed
                        for width, me, got in zip(WIDTHS, ids, rates, strict=True):
                            (layer,) = [
                                x["layer"]
                                for x in server.participant("simul", me)["layers"]
                                if x["from"] == pub
                            ]
                            print(
                                f"{level} | {width} | {layer} ({got['width']} px) | "
                                f"{got['fps']:.1f} | {got['pps']:.0f} | {got['kbps']:.0f} || "
                                f"{forwarded:.0f} | {cores:.3f}"
                            )
                pin(server, 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(bench(args.seconds, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
