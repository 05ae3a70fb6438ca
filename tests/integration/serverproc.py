"""Run the real ``veche serve`` as a subprocess on a free port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

NO_GOVERNOR = ("--governor-lag", "0")
"""Server flags for a test that asserts which simulcast layer or frame rate a viewer gets: the
load governor off, so that a busy test machine cannot lower them (it has tests of its own)."""


def stop(process: subprocess.Popen[Any], grace: float = 10) -> int:
    """SIGTERM by PID, SIGKILL if it has not exited after ``grace`` seconds; the exit status."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
    try:
        return process.wait(grace)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        return process.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    port: int
    log: IO[str]

    def output(self) -> str:
        """Everything the server wrote so far (stdout and stderr)."""
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    tls: bool = False
    admin_token: str | None = None
    """The ``--admin-token`` it was started with, for the admin API helpers."""

    @property
    def http(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def health(self) -> dict[str, Any]:
        """``GET /healthz`` as JSON."""
        with urllib.request.urlopen(self.http + "/healthz", timeout=5, context=_UNVERIFIED) as r:
            data: dict[str, Any] = json.load(r)
        return data

    def participant(self, room: str, participant_id: str) -> dict[str, Any]:
        """One participant of ``room`` as the admin API describes it (``GET /api/rooms/{room}``:
        what it is ``receiving``, the simulcast ``layers`` it is sent); needs ``--admin-token``."""
        assert self.admin_token, "start the server with --admin-token"
        request = urllib.request.Request(
            f"{self.http}/api/rooms/{room}",
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        with urllib.request.urlopen(request, timeout=5, context=_UNVERIFIED) as response:
            data: dict[str, Any] = json.load(response)
        (me,) = [p for p in data["participants"] if p["id"] == participant_id]
        found: dict[str, Any] = me
        return found

    def receiving(self, room: str, participant_id: str) -> dict[str, int]:
        """How many audio and video tracks the server forwards to one participant of ``room``
        (``{"audio": n, "video": m}``, from the admin API)."""
        receiving: dict[str, int] = self.participant(room, participant_id)["receiving"]
        return receiving

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM by PID and wait for the exit status."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        return self.process.wait(timeout)


@contextlib.contextmanager
def run_server(
    *args: str,
    env: dict[str, str] | None = None,
    launcher: list[str] | None = None,
    port: int | None = None,
) -> Iterator[ServerProcess]:
    """Start ``python -m veche serve`` (or ``launcher serve``) on ``port`` (a free one by
    default) and wait for /healthz; always stopped afterwards."""
    port = port or free_port()
    command = launcher or [sys.executable, "-m", "veche"]
    environment = {**os.environ, **(env or {})}
    # A file, not a pipe: a chatty server must never block on a pipe nobody reads.
    with (
        tempfile.TemporaryFile("w+", encoding="utf-8") as log,
        tempfile.TemporaryDirectory(prefix="veche-data-") as data,
    ):
        # Room state of its own, unless the test chose a directory (a restart test shares
        # one between two servers): a server started for a whole module, before any test set
        # VECHE_DATA_DIR, must not keep rooms in the working directory.
        environment.setdefault("VECHE_DATA_DIR", data)
        process = subprocess.Popen(
            [*command, "serve", "--port", str(port), *args],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        tls = "--self-signed" in args or "--tls-cert" in args
        admin = args[args.index("--admin-token") + 1] if "--admin-token" in args else None
        server = ServerProcess(process, port, log, tls, admin)
        try:
            _wait_healthy(server)
            yield server
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10)


_UNVERIFIED = ssl.create_default_context()
_UNVERIFIED.check_hostname = False
_UNVERIFIED.verify_mode = ssl.CERT_NONE


def _wait_healthy(server: ServerProcess) -> None:
    deadline = time.monotonic() + 30
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"veche exited early:\n{server.output()}")
        try:
            with urllib.request.urlopen(
                server.http + "/healthz", timeout=1, context=_UNVERIFIED
            ) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
