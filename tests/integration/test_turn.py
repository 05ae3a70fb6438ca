"""A real coturn: the shipped hardened configuration, time-limited credentials, and a call
forced through the relay."""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import socket
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
from .turnclient import TCP, TurnClient

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
def coturn(
    *args: str, tls: tuple[Path, Path] | None = None, relay_ips: tuple[str, ...] = ("127.0.0.1",)
) -> Iterator[Turn]:
    """Run turnserver on 127.0.0.1 with ``args`` (and TURN over TLS with ``tls``, a certificate
    and key file), relaying from ``relay_ips``; stopped by PID."""
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
                *(f"--relay-ip={ip}" for ip in relay_ips),
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


PUBLIC_IP = "10.99.0.1"
"""VECHE_PUBLIC_IP in these tests: the namespace's address (scripts/netns-run)."""
PUBLIC_IP6 = "fd99::1"
"""An IPv6 VECHE_PUBLIC_IP, added to the namespace by the ``ipv6`` fixture."""
ROOT = Path(__file__).resolve().parents[2]
PEER_PORTS = ROOT / "docker" / "coturn" / "peer-ports.sh"


def _compose_args(*public_ips: str) -> tuple[str, ...]:
    """The shipped configuration and the peer filter compose gives coturn on its command line."""
    assert "--allowed-peer-ip=${VECHE_PUBLIC_IP}" in (ROOT / "docker" / "compose.yaml").read_text()
    return ("-c", str(CONFIG), *(f"--allowed-peer-ip={ip}" for ip in public_ips))


def _need(command: str) -> None:
    """Skip without ``command``, except on CI, where a missing tool must not pass silently."""
    if shutil.which(command) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{command} is missing (CI=true: install it, see TEST_DEBIAN_PACKAGES)")
        pytest.skip(f"{command} is not installed")


@pytest.fixture
def ipv6() -> Iterator[str]:
    """PUBLIC_IP6 on the namespace's interface for the test; removed afterwards."""
    _need("ip")
    address = ["ip", "-6", "addr", "add", f"{PUBLIC_IP6}/64", "dev", "v0", "nodad"]
    added = subprocess.run(address, capture_output=True, text=True, check=False)
    if added.returncode != 0 and "File exists" not in added.stderr:
        message = f"cannot add {PUBLIC_IP6}: {added.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield PUBLIC_IP6
    finally:
        if added.returncode == 0:
            subprocess.run(
                ["ip", "-6", "addr", "del", f"{PUBLIC_IP6}/64", "dev", "v0"], check=False
            )


@contextlib.contextmanager
def peer_ports(*args: str) -> Iterator[None]:
    """The shipped packet filter (docker/coturn/peer-ports.sh ``args``), removed afterwards."""
    for command in ("iptables", "ip6tables"):
        _need(command)
    try:
        subprocess.run(["sh", str(PEER_PORTS), *args], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["sh", str(PEER_PORTS), "--remove"], check=True, capture_output=True)


def _udp_listener(address: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_DGRAM)
    listener.bind((address, 0))
    return listener


def _received(listener: socket.socket, timeout: float) -> list[bytes]:
    """Every datagram ``listener`` gets within ``timeout`` seconds."""
    got = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([listener], [], [], left)
        if not ready:
            break
        got.append(listener.recv(2048))
    return got


def _relay_both_ways(client: TurnClient, peer: tuple[str, int], channel: int) -> None:
    """Send one datagram to ``peer`` by Send indication and one by ChannelData."""
    assert client.permit(peer[0]) is None
    assert client.bind_channel(channel, peer) is None
    client.send(peer, b"send-indication")
    client.send_channel(channel, b"channel-data")


FORBIDDEN_PEERS = [
    "127.0.0.1",
    "0.0.0.0",
    "10.0.0.1",
    "10.99.0.2",
    "169.254.169.254",
    "192.168.1.1",
    "172.17.0.1",
    "100.64.0.1",
    "8.8.8.8",
    "93.184.216.34",
]
FORBIDDEN_PEERS_IPV6 = [
    "::1",
    "::",
    "::ffff:127.0.0.1",
    "::ffff:10.99.0.1",
    "::127.0.0.1",
    "::2",
    "::a63:1",
    "64:ff9b::7f00:1",
    "64:ff9b:1::7f00:1",
    "2002:7f00:1::1",
    "fec0::1",
    "fe80::1",
    "fd99::2",
    "2001:4860:4860::8888",
]


def test_shipped_config_refuses_every_peer_but_veche() -> None:
    """With compose's --allowed-peer-ip, the shipped configuration refuses permissions to
    loopback, private, link-local, metadata and public IPv4 addresses, and grants
    VECHE_PUBLIC_IP."""
    with coturn(*_compose_args(PUBLIC_IP), relay_ips=(PUBLIC_IP,)) as turn:
        client = _client(turn.port)
        try:
            assert client.allocate()[0] is None
            refused = {peer: client.permit(peer) for peer in FORBIDDEN_PEERS}
            assert refused == dict.fromkeys(FORBIDDEN_PEERS, 403)
            assert client.permit(PUBLIC_IP) is None  # a permission only: nothing is sent
        finally:
            client.close()


def test_shipped_config_refuses_every_ipv6_peer_but_veche(ipv6: str) -> None:
    """On an IPv6 relay every spelling of loopback and IPv4 (::/96, ::ffff:0:0/96, NAT64,
    6to4), site-local, unique-local and public IPv6 addresses are refused; an IPv6
    VECHE_PUBLIC_IP is granted."""
    with coturn(*_compose_args(PUBLIC_IP, ipv6), relay_ips=(PUBLIC_IP, ipv6)) as turn:
        client = _client(turn.port)
        try:
            error, relayed = client.allocate(ipv6=True)
            assert error is None
            assert relayed is not None
            assert relayed[0] == ipv6
            refused = {peer: client.permit(peer) for peer in FORBIDDEN_PEERS_IPV6}
            assert refused == dict.fromkeys(FORBIDDEN_PEERS_IPV6, 403)
            assert client.permit(ipv6) is None
        finally:
            client.close()


@contextlib.contextmanager
def _relay_client(port: int, public_ip: str) -> Iterator[TurnClient]:
    """A client holding a relay of public_ip's family."""
    client = _client(port)
    try:
        assert client.allocate(ipv6=":" in public_ip)[0] is None
        yield client
    finally:
        client.close()


def _check_ports_guarded(public_ip: str) -> None:
    """Data relayed to public_ip reaches any UDP port without the packet filter, only the
    media port with it, by Send indication and by ChannelData alike."""
    for command in ("iptables", "ip6tables"):
        _need(command)
    media = _udp_listener(public_ip)
    http = _udp_listener(public_ip)  # stands for Veche's HTTP port (or any other service)
    media_port, http_port = media.getsockname()[1], http.getsockname()[1]
    relays = (PUBLIC_IP, public_ip) if public_ip != PUBLIC_IP else (PUBLIC_IP,)
    try:
        with coturn(*_compose_args(*relays), relay_ips=relays) as turn:
            # coturn's peer filter is address-only: this is why the packet filter exists.
            with _relay_client(turn.port, public_ip) as client:
                _relay_both_ways(client, (public_ip, http_port), 0x4000)
                assert len(_received(http, 1.0)) == 2
            guard = ("--public-ip", public_ip, "--media-ports", f"{media_port}:{media_port}")
            with peer_ports(*guard, "--turn-config", str(CONFIG)):
                with _relay_client(turn.port, public_ip) as client:
                    _relay_both_ways(client, (public_ip, media_port), 0x4001)
                    assert sorted(_received(media, 1.0)) == [b"channel-data", b"send-indication"]
                # A new allocation: coturn gives up a relay whose send failed (EPERM).
                with _relay_client(turn.port, public_ip) as client:
                    _relay_both_ways(client, (public_ip, http_port), 0x4000)
                    assert _received(http, 1.0) == []
    finally:
        media.close()
        http.close()


def test_relay_reaches_only_veche_media_ports() -> None:
    """With peer-ports.sh installed, a relay reaches a UDP listener on one of Veche's media
    ports and never one on another port of VECHE_PUBLIC_IP."""
    _check_ports_guarded(PUBLIC_IP)


def test_relay_reaches_only_veche_media_ports_ipv6(ipv6: str) -> None:
    """The same for an IPv6 VECHE_PUBLIC_IP, through ip6tables."""
    _check_ports_guarded(ipv6)


def test_tcp_relay_to_veche_http_port_is_refused() -> None:
    """A TCP allocation (RFC 6062, the only way to Connect to a TCP port such as Veche's HTTP
    port) is refused, over TCP and over UDP, and the TCP listener never sees a connection."""
    with socket.create_server((PUBLIC_IP, 0)) as http:
        http.settimeout(0.5)
        with coturn(*_compose_args(PUBLIC_IP), relay_ips=(PUBLIC_IP,)) as turn:
            for tcp in (True, False):
                username, password = turn_credentials(SECRET, "tester", ttl=600, now=time.time())
                client = TurnClient(("127.0.0.1", turn.port), username, password, tcp=tcp)
                try:
                    error, relayed = client.allocate(transport=TCP)
                    assert (error, relayed) == (442, None)  # Unsupported Transport Protocol
                finally:
                    client.close()
        with pytest.raises(TimeoutError):
            http.accept()


def test_peer_ports_script_is_idempotent_and_removable() -> None:
    """Running peer-ports.sh twice leaves one jump and one set of rules; --remove leaves none."""
    _need("iptables")
    args = (
        "--public-ip",
        PUBLIC_IP,
        "--media-ports",
        "40000:40099",
        "--relay-ports",
        "49160:49999",
    )
    with peer_ports(*args), peer_ports(*args):
        rules = subprocess.run(
            ["iptables", "-w", "-t", "raw", "-S"], check=True, capture_output=True, text=True
        ).stdout
        assert rules.count("-A OUTPUT -j VECHE-TURN") == 1
        assert rules.count("-j DROP") == 1
        assert "--dport 40000:40099 -j RETURN" in rules
    after = subprocess.run(
        ["iptables", "-w", "-t", "raw", "-S"], check=True, capture_output=True, text=True
    ).stdout
    assert "VECHE-TURN" not in after


def _user_quota() -> int:
    found = re.search(r"^user-quota=(\d+)$", CONFIG.read_text(), re.MULTILINE)
    assert found is not None
    return int(found[1])


def test_user_quota_counts_a_participant_across_credentials() -> None:
    """One participant (one TURN user, whatever the expiry in its credentials) holds at most
    user-quota allocations; the next gets 486, while another participant still allocates."""
    quota = _user_quota()
    with coturn(*_compose_args(PUBLIC_IP), relay_ips=(PUBLIC_IP,)) as turn:
        clients = []
        try:
            for ttl in range(600, 600 + quota + 1):  # a new expiry, as after a reconnect
                username, password = turn_credentials(SECRET, "ada", ttl=ttl, now=time.time())
                clients.append(TurnClient(("127.0.0.1", turn.port), username, password))
            errors = [client.allocate()[0] for client in clients]
            assert errors == [None] * quota + [486]  # Allocation Quota Reached
            clients.append(_client(turn.port))  # another participant
            assert clients[-1].allocate()[0] is None
        finally:
            for client in clients:
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
