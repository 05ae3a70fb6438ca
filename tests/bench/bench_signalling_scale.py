"""Benchmark: signalling at scale, on one node and on two nodes over Redis.

N signalling-only clients (the ``websockets`` library, no media) join rooms: one room of
``--fanout-room`` people, the rest in rooms of ``--room-size``; with two nodes the clients
alternate between them, so most rooms have members relayed from the other node. It prints:

* joins per second (``hello`` to ``welcome``, ``--concurrency`` joins in flight);
* server memory per connection: the growth of the nodes' RSS from before the first client to
  after the last has joined, divided by the connections;
* chat fan-out latency in the big room: one member sends a chat message, and every member's
  arrival time is taken (p50/p99 over all receivers of ``--rounds`` messages);

then whether the targets hold: 5,000 connections on one node under 40 KiB each, and a chat
fan-out p99 under 50 ms in a 200-person room. The clients run in this process, on the same
machine: their own delays are part of the latency.

    .venv/bin/python tests/bench/bench_signalling_scale.py [--connections 5000] [--nodes 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from websockets.asyncio.client import ClientConnection, connect

ROOT: Final = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.integration.redisproc import RedisProcess  # noqa: E402
from tests.integration.serverproc import free_port  # noqa: E402

SERVER_OPTIONS: Final = [
    # Every client comes from 127.0.0.1 and sends as fast as it can: lift the per-address
    # limits; keep the log quiet.
    *("--max-connections-per-address", "100000", "--ws-rate", "1000", "--ws-burst", "10000"),
    *("--log-level", "warning", "--max-participants", "1000", "--hello-timeout", "120"),
]
TARGET_CONNECTIONS: Final = 5000
TARGET_KIB: Final = 40.0
TARGET_P99_MS: Final = 50.0


@dataclass
class Member:
    ws: ClientConnection
    room: str
    arrivals: dict[str, float] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None


@dataclass
class Result:
    nodes: int
    connections: int = 0
    join_seconds: float = 0.0
    kib_per_connection: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def joins_per_second(self) -> float:
        return self.connections / self.join_seconds if self.join_seconds else 0.0

    def percentile(self, p: int) -> float:
        if len(self.latencies_ms) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[p - 1]


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (the workers), in KiB."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(entry.name) == pid or int(stat[1]) == pid:
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
    return total


def start_node(port: int, redis_url: str | None) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "veche", "serve", "--port", str(port), *SERVER_OPTIONS]
    if redis_url:
        args += ["--redis-url", redis_url]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1),
        ):
            return process
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("a node did not start")
        time.sleep(0.1)


async def read(member: Member) -> None:
    with contextlib.suppress(Exception):
        async for raw in member.ws:
            if '"chat_posted"' in raw:
                text = json.loads(raw)["entry"]["text"]
                member.arrivals[text] = time.monotonic()


async def join(url: str, room: str, index: int) -> Member:
    ws = await connect(url, compression=None, max_size=2**22, open_timeout=60, ping_interval=None)
    await ws.send(json.dumps({"type": "hello", "version": 1, "room": room, "name": f"c{index}"}))
    while True:
        message = json.loads(await ws.recv())
        if message["type"] == "welcome":
            break
        if message["type"] == "error":
            raise RuntimeError(f"join refused: {message}")
    member = Member(ws, room)
    member.reader = asyncio.create_task(read(member))
    return member


async def run(nodes: int, args: argparse.Namespace) -> Result:
    result = Result(nodes)
    with contextlib.ExitStack() as stack:
        redis_url = None
        if nodes > 1:
            if shutil.which("redis-server") is None:
                result.error = "redis-server is not installed"
                return result
            redis = RedisProcess(free_port())
            redis.start()
            stack.callback(redis.stop)
            redis_url = redis.url
        ports = [free_port() for _ in range(nodes)]
        processes = []
        for port in ports:
            process = start_node(port, redis_url)
            processes.append(process)
            stack.callback(_stop, process)
        await asyncio.sleep(1.0)
        before = sum(rss_kib(p.pid) for p in processes)
        urls = [f"ws://127.0.0.1:{port}/ws" for port in ports]
        rooms = ["fanout"] * args.fanout_room
        while len(rooms) < args.connections:
            rooms += [f"room-{len(rooms)}"] * min(args.room_size, args.connections - len(rooms))
        members: list[Member] = []
        gate = asyncio.Semaphore(args.concurrency)

        async def one(index: int, room: str) -> None:
            async with gate:
                members.append(await join(urls[index % nodes], room, index))

        started = time.monotonic()
        try:
            await asyncio.gather(*(one(i, room) for i, room in enumerate(rooms)))
        except (OSError, RuntimeError, TimeoutError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        result.join_seconds = time.monotonic() - started
        result.connections = len(members)
        await asyncio.sleep(3.0)  # the join storm's participant_joined messages settle
        after = sum(rss_kib(p.pid) for p in processes)
        result.kib_per_connection = (after - before) / max(1, result.connections)

        big = [m for m in members if m.room == "fanout"]
        # The rig's own garbage collection (5,000 connections' worth) would show as latency.
        gc.collect()
        gc.disable()
        for round_number in range(args.rounds if big else 0):
            sender = random.choice(big)
            text = f"r{round_number}"
            sent = time.monotonic()
            await sender.ws.send(json.dumps({"type": "chat", "text": text}))
            deadline = time.monotonic() + 10
            while sum(text in m.arrivals for m in big) < len(big):
                if time.monotonic() > deadline:
                    result.error = f"chat {text} did not reach everyone"
                    break
                await asyncio.sleep(0.005)
            round_ms = [(m.arrivals[text] - sent) * 1000 for m in big if text in m.arrivals]
            result.latencies_ms += round_ms
            if args.verbose and round_ms:
                print(f"  round {round_number}: min {min(round_ms):.1f} max {max(round_ms):.1f} ms")
            await asyncio.sleep(0.2)
        gc.enable()
        for member in members:
            if member.reader is not None:
                member.reader.cancel()
        await asyncio.gather(*(_close(m.ws) for m in members))
    return result


async def _close(ws: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(), 5)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=TARGET_CONNECTIONS)
    parser.add_argument("--room-size", type=int, default=50)
    parser.add_argument("--fanout-room", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--nodes", default="1,2", help="comma-separated node counts")
    parser.add_argument("--verbose", action="store_true", help="print each fan-out round")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.chdir(tempfile.gettempdir())
    print(
        f"Signalling scale: {args.connections} connections (a {args.fanout_room}-person room, "
        f"the rest in rooms of {args.room_size}); {os.cpu_count()} cores, Python "
        f"{sys.version.split()[0]}"
    )
    results = []
    for nodes in (int(n) for n in args.nodes.split(",")):
        result = asyncio.run(run(nodes, args))
        results.append(result)
        note = f" ({result.error})" if result.error else ""
        print(
            f"{nodes} node(s): {result.connections} connected | {result.joins_per_second:.0f} "
            f"joins/s | {result.kib_per_connection:.1f} KiB per connection | chat fan-out to "
            f"{args.fanout_room}: p50 {result.percentile(50):.1f} ms, p99 "
            f"{result.percentile(99):.1f} ms{note}"
        )
    print()
    print("| nodes | connections | joins/s | server KiB per connection | fan-out p50 / p99 (ms) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.nodes} | {r.connections} | {r.joins_per_second:.0f} | "
            f"{r.kib_per_connection:.1f} | {r.percentile(50):.1f} / {r.percentile(99):.1f} |"
        )
    one = next((r for r in results if r.nodes == 1), None)
    if one is not None and not one.error:
        print()
        print("| target | measured | met |")
        print("|---|---|---|")
        met = one.connections >= TARGET_CONNECTIONS and one.kib_per_connection < TARGET_KIB
        print(
            f"| {TARGET_CONNECTIONS} connections on one node, < {TARGET_KIB:.0f} KiB each | "
            f"{one.connections}, {one.kib_per_connection:.1f} KiB | {'yes' if met else 'NO'} |"
        )
        p99 = one.percentile(99)
        print(
            f"| chat fan-out p99 < {TARGET_P99_MS:.0f} ms in a 200-person room | {p99:.1f} ms | "
            f"{'yes' if p99 < TARGET_P99_MS else 'NO'} |"
        )
    return 0 if all(r.error is None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
