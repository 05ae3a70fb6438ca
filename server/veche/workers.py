"""``veche serve --workers N``: N server processes on one port, one per core.

A Python process forwards media on one core. With ``workers`` above 1 this parent process
starts that many ``veche serve`` children listening on the same port (``SO_REUSEPORT``: the
kernel spreads new connections over them) and sharing one coordination bus, exactly as nodes
on several machines do (see :mod:`veche.cluster`): the configured Redis, or, without one, an
embedded ``redis-server`` on a private Unix socket. Each room lives in one process, so a
single room still uses one core; many rooms use them all. The parent restarts a child that
dies, and on SIGTERM/SIGINT stops them all (each drains as one node does); if the parent
itself is killed, the kernel kills the children (the embedded redis-server is sent SIGTERM).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final

__all__ = ["run_workers"]

log = logging.getLogger(__name__)

STOP_GRACE: Final = 20.0
"""Seconds children get to drain after SIGTERM before they are killed."""
RESTART_DELAY: Final = 1.0
PR_SET_PDEATHSIG: Final = 1
"""``prctl`` option: the signal a process gets when its parent dies (Linux)."""


@contextlib.contextmanager
def embedded_redis(data: Path | None = None) -> Iterator[str]:
    """A private ``redis-server`` (Unix socket only); yields its URL. With ``data``, what it
    holds (the rooms' lasting state) is appended to a file in that directory and read back
    when it starts again; without, nothing is persisted."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "--workers needs VECHE_REDIS_URL, or redis-server installed for an embedded one"
        )
    with tempfile.TemporaryDirectory(prefix="veche-") as directory:
        path = Path(directory) / "redis.sock"
        process = subprocess.Popen(  # noqa: S603 - the installed redis-server, fixed arguments
            [
                binary,
                *("--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700"),
                *("--save", "", "--daemonize", "no"),
                *_persistence(data),
                *("--loglevel", "warning"),
            ],
            stdout=subprocess.DEVNULL,
            # SIGTERM: it writes what it holds to its append-only file and exits.
            preexec_fn=_die_with_parent(signal.SIGTERM),  # the parent is single-threaded here
        )
        try:
            deadline = time.monotonic() + 10
            while not path.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the embedded redis-server did not start")
                time.sleep(0.02)
            yield f"unix://{path}"
        finally:
            _stop(process, 5)


def _persistence(data: Path | None) -> list[str]:
    if data is None:
        return ["--appendonly", "no"]
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    return ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(data.resolve())]


def _stop(process: subprocess.Popen[bytes], grace: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def _die_with_parent(signum: int) -> Callable[[], None]:
    """For a child, between fork and exec: be sent ``signum`` when the parent dies, however it
    dies (SIGKILL, a crash): orphaned workers would keep the port and the room state, and an
    orphaned embedded redis-server its socket. Linux only; elsewhere nothing changes."""

    def request() -> None:
        if not sys.platform.startswith("linux"):
            return
        parent = os.getppid()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signum)

    return request


def _spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # This very program, with the operator's own flags.
    return subprocess.Popen(  # noqa: S603
        command,
        env=env,
        # SIGKILL: a worker's drain needs the bus, which died with the parent (the embedded
        # redis-server) or whose coordination is gone; nobody would bound a drain that hangs.
        preexec_fn=_die_with_parent(signal.SIGKILL),  # the parent is single-threaded here
    )


def run_workers(
    count: int, argv: Sequence[str], redis_url: str | None, data: Path | None = None
) -> int:
    """Run ``count`` children of ``veche serve`` with ``argv`` (its flags, without
    ``--workers``) until a signal; the exit status. Without ``redis_url`` they share an
    embedded redis-server that persists into ``data`` (if given)."""
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with contextlib.ExitStack() as stack:
        try:
            url = redis_url or stack.enter_context(embedded_redis(data))
        except RuntimeError as exc:
            print(f"veche: {exc}", file=sys.stderr)
            return 2
        # One host name for all children: a room's media may be placed on any of them.
        host = os.environ.get("VECHE_HOST_ID") or f"{socket.gethostname()}-{os.getpid()}"
        env = {**os.environ, "VECHE_REDIS_URL": url, "VECHE_WORKERS": "1", "VECHE_HOST_ID": host}
        command = [sys.executable, "-m", "veche", "serve", *argv, "--reuse-port"]
        children = [_spawn(command, env) for _ in range(count)]
        log.info("workers started", extra={"count": count, "pids": [c.pid for c in children]})
        while not stopping:
            time.sleep(0.2)
            for index, child in enumerate(children):
                if child.poll() is not None and not stopping:
                    if child.returncode == 2:  # bad settings: restarting cannot help
                        stopping = True
                        break
                    log.warning("worker exited; restarting", extra={"pid": child.pid})
                    time.sleep(RESTART_DELAY)
                    children[index] = _spawn(command, env)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
        codes = [child.returncode for child in children]
    return 0 if all(code == 0 for code in codes) else 1
