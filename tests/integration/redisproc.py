"""A real ``redis-server`` on a free port, stopped (and restarted) by PID."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .serverproc import free_port, stop

REDIS_SERVER = shutil.which("redis-server")


@dataclass
class RedisProcess:
    port: int
    process: subprocess.Popen[Any] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                *("--bind", "127.0.0.1", "--port", str(self.port)),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
                *("--loglevel", "warning"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, grace=5)
            self.process = None


@contextlib.contextmanager
def run_redis() -> Iterator[RedisProcess]:
    """A fresh redis-server (empty, no persistence), always stopped afterwards."""
    server = RedisProcess(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
