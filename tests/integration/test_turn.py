"""A real coturn: the shipped hardened configuration, time-limited credentials, and a call
forced through the relay."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from veche.turn import turn_credentials

from .serverproc import free_port, stop
from .turnclient import TurnClient

CONFIG = Path(__file__).resolve().parents[2] / "docker" / "coturn" / "turnserver.conf"
SECRET = "test-secret-for-coturn-0123456789"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("turnserver") is None, reason="coturn is not installed"),
    pytest.mark.skipif(
        os.environ.get("VECHE_IN_NETNS") != "1",
        reason="TURN tests run inside a private network namespace (make test)",
    ),
]


@dataclass
class Turn:
    """A running turnserver: its port and everything it logged so far."""

    port: int
    log: IO[str]
    tls_port: int | None = None

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()


@contextlib.contextmanager
def coturn(*args: str, tls: tuple[Path, Path] | None = None) -> Iterator[Turn]:
    """Run turnserver on 127.0.0.1 with ``args`` (and TURN over TLS with ``tls``, a certificate
    and key file); stopped by PID."""
    port = free_port()
    tls_port = free_port() if tls else None
    tls_args = (
        [f"--cert={tls[0]}", f"--pkey={tls[1]}", f"--tls-listening-port={tls_port}"]
        if tls
        else ["--no-tls"]
    )
    with (
        tempfile.TemporaryDirectory() as directory,
        open(Path(directory) / "log", "w+", encoding="utf-8") as log,
    ):
        process = subprocess.Popen(
            [
                "turnserver",
                *args,
                f"--listening-port={port}",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                f"--static-auth-secret={SECRET}",
                *tls_args,
                "--no-dtls",
                f"--pidfile={directory}/turn.pid",
                f"--userdb={directory}/turn.db",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_udp(port, process, log)
            yield Turn(port, log, tls_port)
        finally:
            stop(process, grace=5)


def _wait_for_udp(port: int, process: subprocess.Popen[bytes], log: object) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)  # type: ignore[attr-defined]
            raise RuntimeError(f"turnserver exited:\n{log.read()}")  # type: ignore[attr-defined]
        client = TurnClient(("127.0.0.1", port), "probe", "probe")
        client.sock.settimeout(0.2)
        try:
            client.allocate()
            return
        except OSError:
            time.sleep(0.05)
        finally:
            client.close()
    raise RuntimeError("turnserver did not answer")


def _client(port: int, *, ttl: int = 600, forge: bool = False) -> TurnClient:
    username, password = turn_credentials(SECRET, "tester", ttl=ttl, now=time.time())
    if forge:
        password = password[::-1]
    return TurnClient(("127.0.0.1", port), username, password)


FORBIDDEN_PEERS = [
    "127.0.0.1",
    "0.0.0.0",
    "::1",
    "::",
    "::ffff:127.0.0.1",
    "::127.0.0.1",
    "64:ff9b::7f00:1",
    "64:ff9b:1::7f00:1",
    "2002:7f00:1::1",
    "fec0::1",
    "10.0.0.1",
    "169.254.169.254",
    "192.168.1.1",
    "172.17.0.1",
]


def test_shipped_config_refuses_internal_peers() -> None:
    """The hardened configuration refuses permissions to loopback (in every spelling),
    private, link-local and metadata addresses, and grants a public one."""
    with coturn("-c", str(CONFIG)) as turn:
        port = turn.port
        client = _client(port)
        try:
            error, relayed = client.allocate()
            assert error is None
            assert relayed is not None
            refused = {peer: client.permit(peer) for peer in FORBIDDEN_PEERS}
            # 403: forbidden peer. An IPv6 spelling on this IPv4 relay may instead get 443
            # (address family mismatch): refused as well, and never relayed.
            assert all(
                code == 403 or (code == 443 and ":" in peer) for peer, code in refused.items()
            ), refused
            assert client.permit("93.184.216.34") is None  # a permission only: nothing is sent
        finally:
            client.close()


@pytest.mark.parametrize(("ttl", "forge"), [(-60, False), (600, True)], ids=["expired", "forged"])
def test_bad_credentials_are_refused(ttl: int, forge: bool) -> None:
    """Expired and forged TURN REST credentials get 401 from coturn."""
    with coturn("-c", str(CONFIG)) as turn:
        port = turn.port
        client = _client(port, ttl=ttl, forge=forge)
        try:
            error, relayed = client.allocate()
            assert error == 401
            assert relayed is None
        finally:
            client.close()
