"""Benchmark: a lecture (one presenter, V viewers) on one capped server process, then on two
capped worker processes with pipes (``--workers 2 --pipes``).

The presenter publishes a simulcast camera, a microphone and a shared screen (one 1280x720
layer at 5 fps) (``lecture_rig.py``, replaying the pre-encoded clip); the viewers publish
nothing and show the presenter's camera and screen large; they count what they receive without
decoding. Each server process is capped at ``--share`` of one core (a
cgroup v1 CPU quota, one group per process, see ``tests/integration/cpucap.py``) so that the
rig keeps the rest of this 2-core machine. With two workers the kernel spreads the viewers'
connections over both, and the room's owner places each viewer's media on the less-loaded
worker (:mod:`veche.cluster.placement`: the room stays on the presenter's worker until that one
passes the placement threshold, then grows onto the other); each worker receives the
presenter's tracks once over the pipe and fans them out to its own viewers.

For each configuration V grows by ``--step`` from ``--start`` until the worst viewer's camera
frame rate falls below 25 fps or its screen's below 4 (or ``--max`` is reached), each V tried
``--repeat`` times (held only if every try held); V_max is the last V that held. Per trial it
prints the worst and median viewer frame rate (camera, and the worst screen rate), each server
process's CPU (cores) and the viewers' media it runs, the packets forwarded and piped per second
(``/metrics`` of each process), the CPU per forwarded packet, the rig's CPU and the machine's
load average (the machine is shared: figures are noisy);
at the end V_max for 1 and 2 workers, their ratio against the 1.7x target, and the pipe's cost
per packet (the two workers' CPU beyond what their forwarding costs at the one-process rate,
per packet sent or received over the pipe).

Run inside a private network namespace, as root (cgroups)::

    sh scripts/netns-run .venv/bin/python tests/bench/bench_lecture.py [--start 20]
        [--step 20] [--max 400] [--seconds 10] [--share 0.5] [--rigs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.bench.bench_sfu_forwarding import (  # noqa: E402
    _read_json,
    _spawn,
    _stop,
    _wait_healthy,
    free_port,
)
from tests.bench.clip import clip_path, load_clip  # noqa: E402
from tests.bench.procstat import cpu_seconds  # noqa: E402
from tests.integration.cpucap import CpuCap, cpu_cap, cpu_cap_available  # noqa: E402

FLOOR_FPS: Final = 25.0
SCREEN_FLOOR_FPS: Final = 4.0
TARGET_RATIO: Final = 1.7
WARMUP: Final = 3.0
RIG: Final = [sys.executable, "-m", "tests.bench.lecture_rig"]


@dataclass
class Trial:
    workers: int
    viewers: int
    fps: list[float] = field(default_factory=list)
    screen_fps: list[float] = field(default_factory=list)
    media: list[int] = field(default_factory=list)
    """Participants whose media each process runs (``veche_media_participants``)."""
    loadavg: float = 0.0
    """The machine's 1-minute load average at the end of the trial."""
    missing: int = 0
    cpu: dict[int, float] = field(default_factory=dict)
    """Cores used by each server process (by PID)."""
    forwarded: float = 0.0
    """Packets per second written to viewers, all processes."""
    piped: float = 0.0
    """Packets per second sent plus received over pipes, all processes."""
    rig_cores: float = 0.0

    @property
    def worst(self) -> float:
        return min(self.fps) if self.fps else 0.0

    @property
    def held(self) -> bool:
        screen = min(self.screen_fps, default=0.0)
        return (
            bool(self.fps) and self.worst >= FLOOR_FPS and screen >= SCREEN_FLOOR_FPS
        ) and not self.missing

    @property
    def cores(self) -> float:
        return sum(self.cpu.values())

    def describe(self) -> str:
        median = statistics.median(self.fps) if self.fps else 0.0
        per_packet = self.cores / self.forwarded * 1e6 if self.forwarded else float("nan")
        processes = " ".join(f"{c:.2f}" for c in self.cpu.values())
        media = "/".join(str(m) for m in self.media)
        screen = min(self.screen_fps, default=0.0)
        return (
            f"workers={self.workers} V={self.viewers:4d}  fps worst {self.worst:5.1f} median "
            f"{median:5.1f} screen worst {screen:4.1f}  missing {self.missing}  server cores "
            f"[{processes}] media [{media}]  forwarded {self.forwarded:7.0f}/s  piped "
            f"{self.piped:6.0f}/s  {per_packet:5.1f} us/packet  rig {self.rig_cores:.2f} cores  "
            f"load avg {self.loadavg:.2f}"
        )


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            found.extend(int(x) for x in text)
    return found


def _is_worker(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return b"-m\x00veche\x00serve" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def _metrics(port: int, nodes: int) -> dict[str, dict[str, float]]:
    """``/metrics`` of each of ``nodes`` processes behind one port, by node id (asked until
    every process answered: each request is a new connection)."""
    found: dict[str, dict[str, float]] = {}
    for _ in range(200):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        values: dict[str, float] = {}
        node = ""
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name, value = line.rsplit(" ", 1)
            if name.startswith("veche_info{"):
                node = name.split('node="')[1].split('"')[0]
            base = name.split("{")[0]
            values[base] = values.get(base, 0.0) + float(value)
        found[node] = values
        if len(found) >= nodes:
            break
    return found


def _total(snapshot: dict[str, dict[str, float]], name: str) -> float:
    return sum(values.get(name, 0.0) for values in snapshot.values())


@contextlib.contextmanager
def _caps(count: int, share: float) -> Iterator[list[CpuCap]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(cpu_cap(share)) for _ in range(count)]


async def run_trial(workers: int, viewers: int, args: argparse.Namespace) -> Trial:
    trial = Trial(workers, viewers)
    port = free_port()
    command = [sys.executable, "-m", "veche", "serve", "--port", str(port)]
    command += ["--max-participants", str(viewers + 10), "--log-level", "warning"]
    # Every rig connection comes from 127.0.0.1: lift the per-address limits.
    command += ["--max-connections-per-address", "1000"]
    command += ["--max-pending-media-per-address", "1000"]
    # Hundreds of viewers on one machine: every process of it binds media ports of one range.
    command += ["--media-port-min", "41000", "--media-port-max", "49999"]
    if workers > 1:
        command += ["--workers", str(workers), "--pipes"]
    with _caps(workers, args.share) as caps:
        server = await _spawn(command)
        rigs: list[asyncio.subprocess.Process] = []
        try:
            await _wait_healthy(server, port)
            if workers > 1:
                deadline = time.monotonic() + 20
                while True:
                    pids = [p for p in _children(server.pid) if _is_worker(p)]
                    if len(pids) >= workers or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.1)
                pids = pids[:workers]
            else:
                pids = [server.pid]
            for cap, pid in zip(caps, pids, strict=False):
                (cap.group / "cgroup.procs").write_text(str(pid))
            total = viewers + 1
            per_rig = -(-total // args.rigs)
            epoch = time.monotonic() + 2
            for first in range(0, total, per_rig):
                count = min(per_rig, total - first)
                rigs.append(
                    await _spawn(
                        [
                            *RIG,
                            *("--url", f"ws://127.0.0.1:{port}/ws", "--room", "lecture"),
                            *("--total", str(total), "--first", str(first)),
                            *("--count", str(count), "--epoch", str(epoch)),
                            *("--clip", str(clip_path())),
                        ],
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                    )
                )
                if first == 0:
                    await asyncio.sleep(2)  # the presenter first: the room's owner is its
            readies = [await _read_json(rig, 180) for rig in rigs]
            trial.missing = sum(len(r["missing"]) for r in readies)
            await asyncio.sleep(WARMUP)
            before = _metrics(port, workers)
            cpu_before = {pid: cpu_seconds(pid) for pid in pids}
            rig_before = sum(cpu_seconds(r.pid) for r in rigs)
            started = time.monotonic()
            for rig in rigs:
                assert rig.stdin is not None
                rig.stdin.write(b"start\n")
            await asyncio.sleep(args.seconds)
            for rig in rigs:
                assert rig.stdin is not None
                rig.stdin.write(b"stop\n")
            results = [await _read_json(rig, 60) for rig in rigs]
            elapsed = time.monotonic() - started
            after = _metrics(port, workers)
            trial.cpu = {pid: (cpu_seconds(pid) - cpu_before[pid]) / elapsed for pid in pids}
            trial.rig_cores = (sum(cpu_seconds(r.pid) for r in rigs) - rig_before) / elapsed
            for result in results:
                trial.fps.extend(result["fps"])
                trial.screen_fps.extend(result["screen_fps"])
            trial.media = [
                int(values.get("veche_media_participants", 0)) for values in after.values()
            ]
            trial.loadavg = os.getloadavg()[0]
            name = "veche_packets_forwarded_total"
            trial.forwarded = (_total(after, name) - _total(before, name)) / elapsed
            piped = 0.0
            for name in ("veche_pipe_packets_sent_total", "veche_pipe_packets_received_total"):
                piped += _total(after, name) - _total(before, name)
            trial.piped = piped / elapsed
        finally:
            for rig in rigs:
                if rig.stdin is not None:
                    rig.stdin.close()
            for rig in rigs:
                await _stop(rig, grace=10)
            await _stop(server, grace=0.0, timeout=30)
    return trial


async def ramp(workers: int, args: argparse.Namespace) -> list[Trial]:
    trials: list[Trial] = []
    viewers = args.start
    while viewers <= args.max:
        tries = []
        for _ in range(args.repeat):
            trial = await run_trial(workers, viewers, args)
            print(trial.describe(), flush=True)
            tries.append(trial)
        trials += tries
        if not all(t.held for t in tries):
            break
        viewers += args.step
    return trials


def v_max(trials: list[Trial]) -> int:
    """The largest V at which every try held (and every smaller V tried held too)."""
    failed = {t.viewers for t in trials if not t.held}
    held = [t.viewers for t in trials if t.held and t.viewers < min(failed, default=1 << 30)]
    return max(held) if held else 0


async def main_async(args: argparse.Namespace) -> int:
    if not cpu_cap_available():
        print("bench_lecture needs a writable cgroup v1 cpu hierarchy (root)", file=sys.stderr)
        return 2
    load_clip()  # encoded once, cached for the rigs
    results: dict[int, list[Trial]] = {}
    for workers in args.workers:
        results[workers] = await ramp(workers, args)
    print()
    for workers, trials in results.items():
        print(f"V_max with {workers} capped worker(s): {v_max(trials)}")
    one, two = results.get(1, []), results.get(2, [])
    if one and two and v_max(one):
        ratio = v_max(two) / v_max(one)
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        print(f"ratio {ratio:.2f} (target >= {TARGET_RATIO}: {verdict})")
    held_one = [t for t in one if t.held and t.forwarded]
    held_two = [t for t in two if t.held and t.piped]
    if held_one and held_two:
        forward_cost = statistics.median(t.cores / t.forwarded for t in held_one)
        # What two workers use beyond forwarding at one process's rate: the pipe and the
        # second process's fixed costs, charged here to the packets that cross the pipe.
        pipe_cost = statistics.median(
            (t.cores - forward_cost * t.forwarded) / t.piped for t in held_two
        )
        print(
            f"forwarding cost {forward_cost * 1e6:.1f} us/packet (1 process); pipe cost "
            f"{pipe_cost * 1e6:.1f} us per packet sent or received (the second process's "
            "fixed costs included)" + (" (below this run's noise)" if pipe_cost <= 0 else "")
        )
        print(f"capacity: {1 / forward_cost:.0f} forwarded packets/s per core")
    summary = {
        str(w): [
            {
                "viewers": t.viewers,
                "worst_fps": round(t.worst, 2),
                "median_fps": round(statistics.median(t.fps), 2) if t.fps else 0,
                "screen_worst_fps": round(min(t.screen_fps, default=0.0), 2),
                "missing": t.missing,
                "media": t.media,
                "loadavg": round(t.loadavg, 2),
                "cores": [round(c, 3) for c in t.cpu.values()],
                "forwarded": round(t.forwarded),
                "piped": round(t.piped),
                "rig_cores": round(t.rig_cores, 3),
            }
            for t in ts
        ]
        for w, ts in results.items()
    }
    print(json.dumps(summary))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--start", type=int, default=20)
    parser.add_argument("--step", type=int, default=20)
    parser.add_argument("--max", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--share", type=float, default=0.5, help="of a core, per process")
    parser.add_argument("--rigs", type=int, default=2, help="rig processes")
    parser.add_argument("--repeat", type=int, default=2, help="tries of each V")
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    raise SystemExit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
