"""The machine's floor for forwarding: the least CPU any Python SFU spends per forwarded packet.

``python -m tests.bench.floor --k 20 --rate 80 [--seconds 10] [--size 600]`` does, ``rate``
times a second, what forwarding one incoming packet to ``k`` subscribers needs at the very
least, and nothing else: for each subscriber, SRTP-protect a packet with pylibsrtp (the library
aiortc uses, one session per subscriber as DTLS-SRTP gives) and ``sendto`` it to a socket of its
own that another process reads. No receiving, no parsing, no RTCP, no ICE, no event loop. It
prints one JSON object: ``{"k", "rate", "packets", "us_per_packet"}``, the sender's CPU
(user + system) per packet sent, sleeps excluded.

On a machine where waking up is expensive (a virtual machine whose caches and TLBs are cold
after every sleep) this floor is far above what the same loop costs when run back to back,
and it bounds from below what ``bench_sfu_forwarding`` can measure for Veche.

``python -m tests.bench.floor receive --ports P1,P2,...`` is the reading side (internal).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time

from pylibsrtp import Policy, Session


def receive(ports: list[int]) -> None:
    """Read and drop every datagram sent to ``ports`` until killed."""
    sockets = {}
    poller = select.epoll()
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", port))
        sock.setblocking(False)
        sockets[sock.fileno()] = sock
        poller.register(sock.fileno(), select.EPOLLIN)
    print("ready", flush=True)
    while True:
        for fd, _ in poller.poll():
            try:
                while True:
                    sockets[fd].recv(2048)
            except BlockingIOError:
                pass


def _free_ports(count: int) -> list[int]:
    held = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        held.append(sock)
    ports = [sock.getsockname()[1] for sock in held]
    for sock in held:
        sock.close()
    return ports


def measure(k: int, rate: float, seconds: float, size: int) -> dict[str, float]:
    """Send ``rate`` packets a second to each of ``k`` readers for ``seconds``; the CPU per
    packet sent."""
    ports = _free_ports(k)
    listed = ",".join(map(str, ports))
    reader = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.floor", "receive", "--ports", listed],
        stdout=subprocess.PIPE,
    )
    try:
        assert reader.stdout is not None
        if reader.stdout.readline().strip() != b"ready":
            raise RuntimeError("the reading process did not start")
        legs = []
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            policy = Policy(key=os.urandom(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND)
            legs.append((sock, ("127.0.0.1", port), Session(policy=policy)))
        payload = os.urandom(size)
        interval = 1.0 / rate
        sent = 0
        sequence = 0
        cpu_start = time.process_time()
        start = next_at = time.monotonic()
        while next_at - start < seconds:
            header = struct.pack("!BBHII", 0x80, 96, sequence & 0xFFFF, sequence * 3000, 0x5EC4E)
            packet = header + payload
            for sock, address, session in legs:
                try:  # noqa: SIM105 (a with-block per packet would add to what is measured)
                    sock.sendto(session.protect(packet), address)
                except BlockingIOError:
                    pass  # the reader fell behind: the work was done all the same
                sent += 1
            sequence += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        cpu = time.process_time() - cpu_start
        for sock, _, _ in legs:
            sock.close()
    finally:
        reader.kill()
        reader.wait()
    return {"k": k, "rate": rate, "packets": sent, "us_per_packet": cpu / sent * 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", choices=["send", "receive"], default="send")
    parser.add_argument("--k", type=int, default=20, help="subscribers (default 20)")
    parser.add_argument("--rate", type=float, default=80.0, help="incoming packets a second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=600, help="payload bytes per packet")
    parser.add_argument("--ports", help="(receive) the ports to read")
    args = parser.parse_args()
    if args.mode == "receive":
        receive([int(port) for port in args.ports.split(",")])
        return 0
    print(json.dumps(measure(args.k, args.rate, args.seconds, args.size)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
