"""A participant's own network: a throwaway namespace joined to the test's by a veth pair, with
a Chromium launcher that runs inside it, so that cutting or shaping its link leaves everyone
else's untouched."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.browser.conftest import chromium_path

HOST_ADDRESS = "10.98.0.1"
GUEST_ADDRESS = "10.98.0.2"


def _ip(*args: str, netns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=10)


@dataclass
class Guest:
    """A network namespace with its own address, reachable from the test's at
    ``host_address``."""

    name: str
    interface: str
    launcher: Path
    host_interface: str = ""
    host_address: str = HOST_ADDRESS

    is_cut: bool = False
    is_shaped: bool = False

    def cut(self) -> None:
        """Drop every packet in and out, as a dead Wi-Fi does: no reset, no error."""
        for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
            _ip("iptables", "-I", chain, flag, self.interface, "-j", "DROP", netns=self.name)
        self.is_cut = True

    def restore(self) -> None:
        """Let packets through again (nothing if they are)."""
        if not self.is_cut:
            return
        for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
            _ip("iptables", "-D", chain, flag, self.interface, "-j", "DROP", netns=self.name)
        self.is_cut = False

    def shape(self, rate: str) -> None:
        """Let at most ``rate`` (``tc`` units, e.g. ``300kbit``) reach the guest, queueing at
        most 200 ms and dropping the rest, as a weak link does: a token bucket on the test
        side of the veth pair (what the guest downloads)."""
        verb = "change" if self.is_shaped else "add"
        _ip("tc", "qdisc", verb, "dev", self.host_interface, "root", "tbf", "rate", rate,
            "burst", "16kbit", "latency", "200ms")  # fmt: skip
        self.is_shaped = True

    def unshape(self) -> None:
        """The link carries whatever it is given again (nothing if it does)."""
        if not self.is_shaped:
            return
        _ip("tc", "qdisc", "del", "dev", self.host_interface, "root")
        self.is_shaped = False


@contextlib.contextmanager
def guest_namespace(subnet: str = "10.98.0") -> Iterator[Guest]:
    """A throwaway namespace ``<subnet>.2`` behind a veth pair (``<subnet>.1`` on the test's
    side), with a Chromium launcher that runs inside it; deleted afterwards (which deletes the
    veth pair too)."""
    tag = str(os.getpid() % 100000)
    name, host_if, guest_if = f"veche-guest-{tag}", f"vh{tag}", f"vg{tag}"
    host, guest = f"{subnet}.1", f"{subnet}.2"
    _ip("ip", "netns", "add", name)
    try:
        _ip("ip", "link", "add", host_if, "type", "veth", "peer", "name", guest_if)
        _ip("ip", "link", "set", guest_if, "netns", name)
        _ip("ip", "addr", "add", f"{host}/24", "dev", host_if)
        _ip("ip", "link", "set", host_if, "up")
        _ip("ip", "link", "set", "lo", "up", netns=name)
        _ip("ip", "addr", "add", f"{guest}/24", "dev", guest_if, netns=name)
        _ip("ip", "link", "set", guest_if, "up", netns=name)
        _ip("ip", "route", "add", "default", "via", host, netns=name)
        with tempfile.TemporaryDirectory() as tmp:
            launcher = Path(tmp) / "chromium-in-guest"
            launcher.write_text(f'#!/bin/sh\nexec ip netns exec {name} {chromium_path()} "$@"\n')
            launcher.chmod(0o755)
            yield Guest(name, guest_if, launcher, host_if, host)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], check=False, capture_output=True)
