"""Benchmark: the server CPU that forwarding costs, Veche against aiortc's ``MediaRelay``.

One publisher (synthetic 640x480 30 fps VP8 with its frame number drawn in, plus Opus audio)
and K subscribers, for K = 1, 5, 10, 20, each measured for 15 s after every subscriber receives
video and a warm-up of 3 s. The server runs in its own process, the publisher in another and the
subscribers in a third (see ``rig.py``). The first subscriber decodes, for the glass-to-glass
latency read from the drawn number; the others only count the encoded frames they receive, so
the rig does not starve the server of the machine's cores.

Per K it prints the server's CPU (cores), the RTP packets forwarded per second (counted as
received by all subscribers together, audio and video, retransmissions included), the server CPU
per forwarded packet, the encoded video frames each subscriber receives per second (min and
mean), the latency (p50/p95), the rig's own CPU, and the CPU that other work on the machine took
(a trial it skewed is run again). Then the same for the baseline, ``relay_server.py`` (aiortc
decoding once and re-encoding per subscriber), with increasing K until it falls behind (a
subscriber under 20 fps, or not all receiving video), and the CPU ratio baseline/Veche; last,
whether the targets are met, and a Markdown summary for docs/performance.md.

It also measures this machine's floor (``floor.py``): the CPU per packet of SRTP-protecting and
sending the same packets to the same number of subscribers, paced as the publisher sends, and
nothing else; whatever Veche spends above it is receiving, RTCP, ICE and Python.

Run inside a private network namespace (``make bench`` does)::

    sh scripts/netns-run .venv/bin/python tests/bench/bench_sfu_forwarding.py [--quick]
        [--ks 1,5] [--seconds N] [--no-baseline] [--logs DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.bench.procstat import machine_jiffies  # noqa: E402

KS: Final = (1, 5, 10, 20)
SECONDS: Final = 15.0
QUICK_KS: Final = (1, 5)
QUICK_SECONDS: Final = 6.0
WARMUP: Final = 3.0
SUSTAINED_FPS: Final = 20.0
"""Below this frame rate at any subscriber, the baseline counts as fallen behind."""
TRIAL_SLACK: Final = 90.0
"""Seconds a trial may take beyond its warm-up and window (joining, connecting, closing)."""
QUIET_CORES: Final = 0.3
"""Cores of other work on the machine above which a trial's figures count as skewed."""
QUIET_WAIT: Final = 30.0
"""Seconds a trial waits at most for other work to drop under ``QUIET_CORES`` before it starts;
a trial skewed all the same is run once more."""
PATIENCE: Final = 300.0
"""Seconds into a run after which trials neither wait nor run again, so that a run on a busy
machine stays under ~10 minutes."""
CORES: Final = os.cpu_count() or 1

TARGET_FPS: Final = 29.0
TARGET_P95_MS: Final = 150.0
TARGET_US_PER_PACKET: Final = 60.0
TARGET_RATIO: Final = 5.0

VECHE: Final = "Veche"
RECORDING: Final = "Veche recording"
RECORDING_DIR: Final = Path(tempfile.gettempdir()) / "veche-bench-recordings"
BASELINE: Final = "MediaRelay"
SERVERS: Final = {
    VECHE: [sys.executable, "-m", "veche"],
    RECORDING: [sys.executable, "-m", "veche"],
    BASELINE: [sys.executable, "-m", "tests.bench.relay_server"],
}
# Every rig connection comes from 127.0.0.1: lift Veche's per-address connection limit.
SERVER_OPTIONS: Final = {
    VECHE: ["--max-connections-per-address", "1000"],
    RECORDING: [
        "--max-connections-per-address",
        "1000",
        "--recording-dir",
        str(RECORDING_DIR),
        "--recording-anonymous",
    ],
    BASELINE: [],
}
RIG: Final = [sys.executable, "-m", "tests.bench.rig"]
ROOM: Final = "bench"


@dataclass
class Trial:
    """What one run of one server with K subscribers measured."""

    server: str
    k: int
    error: str | None = None
    cores: dict[str, float] = field(default_factory=dict)
    machine_busy: float = 0.0
    packets_per_second: float = 0.0
    fps: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    unreadable: int = 0
    log_notes: list[str] = field(default_factory=list)

    @property
    def other_cores(self) -> float:
        """CPU the machine spent on anything but the server and the rig, in cores."""
        return max(0.0, self.machine_busy * CORES - sum(self.cores.values()))

    @property
    def contended(self) -> bool:
        return self.error is None and self.other_cores > QUIET_CORES

    @property
    def server_cores(self) -> float:
        return self.cores.get("server", 0.0)

    @property
    def us_per_packet(self) -> float:
        if not self.packets_per_second:
            return float("nan")
        return self.server_cores / self.packets_per_second * 1e6

    @property
    def fps_min(self) -> float:
        return min(self.fps, default=0.0)

    @property
    def fps_mean(self) -> float:
        return statistics.fmean(self.fps) if self.fps else 0.0

    def latency(self, percent: int) -> float:
        """The ``percent``-th percentile latency in ms (nan without samples)."""
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[percent - 1]

    @property
    def sustained(self) -> bool:
        return self.error is None and self.fps_min >= SUSTAINED_FPS


# ------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _spawn(command: list[str], **kwargs: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(*command, cwd=ROOT, limit=2**24, **kwargs)


async def _stop(
    process: asyncio.subprocess.Process, *, grace: float = 0.0, timeout: float = 20.0
) -> None:
    """Give ``process`` ``grace`` seconds to exit by itself, then SIGTERM it, then SIGKILL it if
    it is still there after ``timeout`` seconds."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), grace)
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def _read_json(process: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout)
    if not line:
        raise RuntimeError(f"the process exited (status {await process.wait()}) without a result")
    result: dict[str, Any] = json.loads(line)
    return result


async def _wait_healthy(process: asyncio.subprocess.Process, port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.returncode is not None:
            raise RuntimeError(f"the server exited early with status {process.returncode}")
        try:
            await asyncio.to_thread(
                urllib.request.urlopen, f"http://127.0.0.1:{port}/healthz", timeout=1
            )
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _machine_cores(interval: float = 1.0) -> float:
    """How many cores the machine keeps busy over the next ``interval`` seconds."""
    busy, total = machine_jiffies()
    await asyncio.sleep(interval)
    busy_after, total_after = machine_jiffies()
    return (busy_after - busy) / max(1, total_after - total) * CORES


async def _wait_quiet() -> None:
    start = time.monotonic()
    while await _machine_cores() > QUIET_CORES:
        if time.monotonic() - start > QUIET_WAIT:
            print("(the machine stays busy with other work: measuring anyway)", flush=True)
            return


async def run_trial(server: str, k: int, seconds: float, logs: Path, *, patient: bool) -> Trial:
    """Measure ``server`` with K subscribers. If ``patient``, first wait a while for other work
    on the machine to calm down, and measure once more if it skewed the figures anyway."""
    if patient:
        await _wait_quiet()
    trial = await _run_trial(server, k, seconds, logs)
    if patient and trial.contended:
        print(
            f"({server} K={k}: other work took {trial.other_cores:.2f} cores: measuring again)",
            flush=True,
        )
        await _wait_quiet()
        trial = await _run_trial(server, k, seconds, logs)
    return trial


async def _run_trial(server: str, k: int, seconds: float, logs: Path) -> Trial:
    """Start ``server``, the publisher and K subscribers; measure; stop them all."""
    trial = Trial(server, k)
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    log_path = logs / f"{server}-{k}.log"
    with log_path.open("w") as log:
        process = await _spawn(
            [*SERVERS[server], "serve", "--port", str(port), *SERVER_OPTIONS[server]],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        await _wait_healthy(process, port)
        publisher = await _spawn(
            [*RIG, "publish", "--url", url, "--room", ROOM]
            + (["--record"] if server == RECORDING else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            await _read_json(publisher, timeout=60)
            subscribers = await _spawn(
                [
                    *RIG,
                    "subscribe",
                    *("--url", url, "--room", ROOM, "--count", str(k)),
                    *("--server-pid", str(process.pid), "--publisher-pid", str(publisher.pid)),
                    *("--warmup", str(WARMUP), "--seconds", str(seconds)),
                ],
                stdout=subprocess.PIPE,
            )
            try:
                result = await _read_json(subscribers, timeout=WARMUP + seconds + TRIAL_SLACK)
            finally:
                await _stop(subscribers, grace=10)
            assert publisher.stdin is not None
            publisher.stdin.close()
            sent_at = (await _read_json(publisher, timeout=30))["sent_at"]
        finally:
            await _stop(publisher, grace=10)
    except (RuntimeError, OSError, TimeoutError) as exc:
        trial.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        result, sent_at = {}, {}
    finally:
        await _stop(process)
    trial.log_notes = _log_notes(log_path.read_text(errors="replace"))
    if "error" in result:
        trial.error = result["error"]
    elif result:
        _fill(trial, result, sent_at)
    return trial


def _fill(trial: Trial, result: dict[str, Any], sent_at: dict[str, float]) -> None:
    trial.cores = result["cores"]
    trial.machine_busy = result["machine_busy"]
    trial.packets_per_second = result["packets_per_second"]
    trial.fps = result["fps"]
    for number, decoded_at in result["decoded"]:
        sent = sent_at.get(str(number))
        latency = None if sent is None else decoded_at - sent
        if latency is None or not 0 < latency < 10:
            trial.unreadable += 1  # a misread number
        else:
            trial.latencies_ms.append(latency * 1000)


_NOTABLE: Final = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|Exception|track ended")


def _log_notes(text: str) -> list[str]:
    """Lines of a server's log worth showing: warnings, errors, Veche's per-track totals."""
    return [line.strip() for line in text.splitlines() if _NOTABLE.search(line)]


# ------------------------------------------------------------------------------- reporting


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.0f}"


def describe(trial: Trial) -> str:
    """One line of figures for a trial (and its server's notable log lines)."""
    head = f"{trial.server:<10} K={trial.k:<3}"
    if trial.error:
        lines = [f"{head} FAILED: {trial.error}"]
    else:
        cores = trial.cores
        lines = [
            f"{head} server {trial.server_cores:.2f} cores | "
            f"{trial.packets_per_second:.0f} pkt/s forwarded | "
            f"{trial.us_per_packet:.1f} us/pkt | "
            f"fps min {trial.fps_min:.1f} mean {trial.fps_mean:.1f} | "
            f"latency p50 {_ms(trial.latency(50))} ms p95 {_ms(trial.latency(95))} ms "
            f"({len(trial.latencies_ms)} frames, {trial.unreadable} unread) | "
            f"rig: publisher {cores['publisher']:.2f} + subscribers "
            f"{cores['subscribers']:.2f} cores, other work {trial.other_cores:.2f} cores"
        ]
        if trial.contended:
            lines.append(f"{'':15}other work on the machine skewed these figures")
        if not trial.sustained:
            lines.append(f"{'':15}fell behind: a subscriber under {SUSTAINED_FPS:.0f} fps")
    shown = trial.log_notes[:6]
    lines += [f"{'':15}server log: {note[:200]}" for note in shown]
    if len(trial.log_notes) > len(shown):
        lines.append(f"{'':15}server log: ... {len(trial.log_notes) - len(shown)} more")
    return "\n".join(lines)


def _row(trial: Trial) -> str:
    if trial.error:
        return f"| {trial.server} | {trial.k} | failed: {trial.error} | | | | | | |"
    note = "" if trial.sustained else " (fell behind)"
    return (
        f"| {trial.server}{note} | {trial.k} | {trial.server_cores:.2f} | "
        f"{trial.packets_per_second:.0f} | {trial.us_per_packet:.1f} | "
        f"{trial.fps_min:.1f} / {trial.fps_mean:.1f} | "
        f"{_ms(trial.latency(50))} / {_ms(trial.latency(95))} | "
        f"{trial.cores['publisher']:.2f} / {trial.cores['subscribers']:.2f} | "
        f"{trial.other_cores:.2f} |"
    )


def targets(veche: list[Trial], baseline: list[Trial]) -> list[tuple[str, str, bool]]:
    """(target, what was measured, met) for each of the issue's targets."""
    done = [t for t in veche if not t.error]
    if not done:
        return [("Veche runs", "no run finished", False)]
    top = max(done, key=lambda t: t.k)
    at = f"K={top.k}" + ("" if top.k == max(KS) else f", not {max(KS)}")
    p95 = top.latency(95)
    rows = [
        (
            f"every subscriber >= {TARGET_FPS:.0f} fps ({at})",
            f"min {top.fps_min:.1f} fps",
            top.fps_min >= TARGET_FPS,
        ),
        (f"latency p95 <= {TARGET_P95_MS:.0f} ms ({at})", f"{_ms(p95)} ms", p95 <= TARGET_P95_MS),
        (
            f"<= {TARGET_US_PER_PACKET:.0f} us server CPU per packet ({at})",
            f"{top.us_per_packet:.1f} us",
            top.us_per_packet <= TARGET_US_PER_PACKET,
        ),
    ]
    by_k = {t.k: t for t in done}
    compared = [b for b in baseline if b.sustained and b.k in by_k]
    if compared:
        base = max(compared, key=lambda t: t.k)
        ratio = base.server_cores / by_k[base.k].server_cores
        rows.append(
            (
                f">= {TARGET_RATIO:.0f}x less CPU than {BASELINE} "
                f"(largest K it sustains: {base.k})",
                f"{ratio:.1f}x",
                ratio >= TARGET_RATIO,
            )
        )
    elif baseline:
        rows.append((f">= {TARGET_RATIO:.0f}x less CPU than {BASELINE}", "no K sustained", False))
    return rows


@dataclass
class Floor:
    """What ``floor.py`` measured: CPU per packet for SRTP + ``sendto`` alone, at K."""

    k: int
    rate: float
    paced_us: float
    """Sending ``rate`` times a second, as the publisher's packets arrive."""
    back_to_back_us: float
    """Sending without pause (warm caches)."""

    def describe(self) -> str:
        return (
            f"Machine floor at K={self.k} (SRTP-protect + sendto only, {self.rate:.0f} times a "
            f"second as the publisher's packets come): {self.paced_us:.1f} us/pkt; back to "
            f"back: {self.back_to_back_us:.1f} us/pkt"
        )


async def measure_floor(k: int, rate: float, seconds: float) -> Floor | None:
    """Run ``floor.py`` paced at ``rate`` and back to back; None if it failed."""

    async def run(rate: float, seconds: float) -> float:
        options = ["--k", str(k), "--rate", str(rate), "--seconds", str(seconds)]
        process = await _spawn(
            [sys.executable, "-m", "tests.bench.floor", *options],
            stdout=subprocess.PIPE,
        )
        try:
            result = await _read_json(process, timeout=seconds + 30)
        finally:
            await _stop(process, grace=5)
        return float(result["us_per_packet"])

    try:
        return Floor(k, rate, await run(rate, seconds), await run(5000.0, 3.0))
    except (RuntimeError, TimeoutError, KeyError, ValueError) as exc:
        print(f"(the floor could not be measured: {exc})", flush=True)
        return None


def summary(
    veche: list[Trial], baseline: list[Trial], seconds: float, floor: Floor | None = None
) -> str:
    """The Markdown tables for docs/performance.md."""
    lines = [
        f"One publisher (640x480 30 fps VP8 + Opus), K subscribers, {seconds:.0f} s per K "
        f"after a {WARMUP:.0f} s warm-up; {CORES} cores, Python "
        f"{platform.python_version()}. Forwarded packets: RTP packets (audio and video) "
        "received by all subscribers together; fps: encoded video frames each subscriber "
        "receives per second; latency: from making a frame to the first subscriber decoding it.",
        "",
        "| server | K | server CPU (cores) | forwarded pkt/s | server CPU us/pkt "
        "| fps min / mean | latency p50 / p95 (ms) | rig CPU publisher / subscribers "
        "| other work (cores) |",
        "|---|---|---|---|---|---|---|---|---|",
        *(_row(t) for t in [*veche, *baseline]),
    ]
    done = sorted((t for t in veche if not t.error), key=lambda t: t.k)
    if len(done) >= 2 and done[-1].packets_per_second > done[-2].packets_per_second:
        small, large = done[-2], done[-1]
        marginal = (large.server_cores - small.server_cores) / (
            large.packets_per_second - small.packets_per_second
        )
        lines += [
            "",
            f"{VECHE}'s server CPU per extra forwarded packet from K={small.k} to K={large.k}: "
            f"{marginal * 1e6:.1f} us (the rest is the fixed cost of the publisher's "
            "connection and of keeping connections alive).",
        ]
    by_k = {t.k: t for t in veche if not t.error}
    pairs = [(by_k[b.k], b) for b in baseline if not b.error and b.k in by_k]
    if pairs:
        lines += [
            "",
            f"| K | {VECHE} CPU (cores) | {BASELINE} CPU (cores) | {BASELINE} / {VECHE} |",
            "|---|---|---|---|",
        ]
        for ours, theirs in pairs:
            note = "" if theirs.sustained else " (fell behind)"
            ratio = theirs.server_cores / ours.server_cores if ours.server_cores else float("inf")
            lines.append(
                f"| {ours.k} | {ours.server_cores:.2f} | {theirs.server_cores:.2f}{note} "
                f"| {ratio:.1f}x |"
            )
    if floor is not None:
        lines += ["", floor.describe() + "."]
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for target, measured, met in targets(veche, baseline):
        lines.append(f"| {target} | {measured} | {'yes' if met else 'NO'} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- main


async def bench(ks: list[int], seconds: float, baseline: bool, logs: Path | None) -> int:
    print(
        f"SFU forwarding: K = {', '.join(map(str, ks))}; {seconds:.0f} s per K after "
        f"{WARMUP:.0f} s warm-up; {CORES} cores",
        flush=True,
    )
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="veche-bench-") as scratch:
        log_dir = logs or Path(scratch)
        log_dir.mkdir(parents=True, exist_ok=True)
        ours = []
        for k in ks:
            patient = time.monotonic() - start < PATIENCE
            ours.append(await run_trial(VECHE, k, seconds, log_dir, patient=patient))
            print(describe(ours[-1]), flush=True)
        # The same largest K while the room is recorded (the publisher, its moderator, asks).
        recorded = await run_trial(RECORDING, max(ks), seconds, log_dir, patient=True)
        print(describe(recorded), flush=True)
        written = [f for f in RECORDING_DIR.glob("*/*") if f.suffix == ".webm"]
        manifests = list(RECORDING_DIR.glob("*/manifest.json"))
        print(
            f"  recorded: {len(manifests)} manifest(s), {len(written)} file(s), "
            f"{sum(f.stat().st_size for f in written) / 1e6:.1f} MB",
            flush=True,
        )
        shutil.rmtree(RECORDING_DIR, ignore_errors=True)
        plain = next(t for t in ours if t.k == max(ks))
        if recorded.server_cores and plain.server_cores:
            print(
                f"Recording the room at K={max(ks)}: server {recorded.server_cores:.2f} cores "
                f"against {plain.server_cores:.2f} without (forwarding the same "
                f"{recorded.packets_per_second:.0f} pkt/s at {recorded.fps_min:.1f} fps "
                "min)",
                flush=True,
            )
        floor = None
        if plain.packets_per_second:
            await _wait_quiet()
            floor = await measure_floor(
                plain.k, plain.packets_per_second / plain.k, min(seconds, 10.0)
            )
            if floor is not None:
                print(floor.describe(), flush=True)
        theirs: list[Trial] = []
        for k in ks if baseline else []:
            patient = time.monotonic() - start < PATIENCE
            theirs.append(await run_trial(BASELINE, k, seconds, log_dir, patient=patient))
            print(describe(theirs[-1]), flush=True)
            if not theirs[-1].sustained:
                print(f"{BASELINE} cannot sustain K={k}: larger K not run", flush=True)
                break
    print()
    print(summary(ours, theirs, seconds, floor))
    return 1 if any(t.error for t in ours) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="K=1,5 and 6 s runs")
    parser.add_argument("--ks", help="comma-separated subscriber counts (default 1,5,10,20)")
    parser.add_argument("--seconds", type=float, help="measuring window per K (default 15)")
    parser.add_argument("--no-baseline", action="store_true", help=f"skip the {BASELINE} runs")
    parser.add_argument("--logs", type=Path, help="keep the servers' logs in this directory")
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")] if args.ks else list(QUICK_KS if args.quick else KS)
    seconds = args.seconds or (QUICK_SECONDS if args.quick else SECONDS)
    if os.environ.get("VECHE_IN_NETNS") != "1":
        print(
            "bench_sfu_forwarding: run it inside a private network namespace, e.g.\n"
            "  sh scripts/netns-run .venv/bin/python tests/bench/bench_sfu_forwarding.py",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(bench(ks, seconds, not args.no_baseline, args.logs))


if __name__ == "__main__":
    sys.exit(main())
